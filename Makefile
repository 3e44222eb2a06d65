# The README's two set-up commands: `make run` (install + start the bridge on embedded defaults) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# `make run` installs what running needs and nothing else; `make test` and `make bench` add their extras.
STAMP := $(VENV)/.ccbridge-installed
TEST_STAMP := $(VENV)/.ccbridge-test-installed
BENCH_STAMP := $(VENV)/.ccbridge-bench-installed
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-warn-script-location
# Options for `ccbridge run`, e.g. make run ARGS="--config ccbridge.yaml"
ARGS ?=

.PHONY: install install-test install-bench run test lint system-deps check-deploy bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e . 2>$(VENV)/pip-install.log || { cat $(VENV)/pip-install.log >&2; exit 1; }
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP) -e '.[test]'
	touch $(TEST_STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PIP) -e '.[bench]'
	touch $(BENCH_STAMP)

install: $(STAMP)

install-test: $(TEST_STAMP)

install-bench: $(BENCH_STAMP)

run: install
	$(BIN)/ccbridge run $(ARGS)

system-deps:
	scripts/install-system-deps

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Dockerfile, image install, alert rules, Grafana dashboard and Helm chart (scripts/check-deploy; under a minute).
check-deploy: install-test system-deps
	$(BIN)/python scripts/check-deploy

test: install-test system-deps lint check-deploy
	$(BIN)/python -m pytest -q

bench: install-test install-bench
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) ccbridge-data .pytest_cache
