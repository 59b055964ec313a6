# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_HOME ?= $(CURDIR)/demo_out
PYTEST_WORKERS ?= 2
# Environment pins (pyproject.toml gives ranges): the builds this project is tested with.
PINS ?= torch==2.13.0 tensorflow-cpu==2.21.0

.PHONY: setup browser test demo lint bench clean

# Everything: core, the measure/gcn/farm extras and the test tools, with the pinned builds.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[all,dev]' $(PINS)
	touch $(STAMP)

setup: $(STAMP)

# Headless Chromium renders the HTML report in a test; installed from Debian when missing and we are root.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	    else echo "chromium not found (and not root): the HTML report render test will skip"; fi; }

test: setup browser
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
