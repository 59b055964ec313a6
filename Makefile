# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_HOME ?= $(CURDIR)/demo_out
PYTEST_WORKERS ?= 2
# Environment pins (pyproject.toml gives ranges): the builds this project is tested with.
PINS ?= torch==2.13.0 tensorflow-cpu==2.21.0

.PHONY: setup postgres browser test demo lint bench clean

# Everything: core, the measure/gcn/farm extras and the test tools, with the pinned builds.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[all,dev]' $(PINS)
	touch $(STAMP)

setup: $(STAMP)

# The PostgreSQL tests start a throwaway server of their own (initdb + pg_ctl): they need the server binaries.
# As root, install them with apt; otherwise say how. Under CI the tests fail without them, elsewhere they skip.
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing the PostgreSQL server (apt-get install postgresql) for the tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else \
		echo "PostgreSQL server binaries not found: sudo apt-get install postgresql (tests/test_postgres*.py need them)"; \
		if [ -n "$$CI" ]; then exit 1; fi; \
	fi

# Headless Chromium renders the HTML report in a test; installed from Debian when missing and we are root.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	    else echo "chromium not found (and not root): apt-get install chromium; the HTML report render test needs it"; \
	      if [ -n "$$CI" ]; then exit 1; fi; fi; }

test: setup postgres browser
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
