# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_HOME ?= $(CURDIR)/demo_out
PYTEST_WORKERS ?= 2

.PHONY: setup test demo lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --durations=15

demo: setup
	LETI_HOME=$(DEMO_HOME) $(BIN)/python -m leti.demo

lint: setup
	$(BIN)/ruff check leti tests benchmarks
	$(BIN)/ruff format --check leti tests benchmarks

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache
