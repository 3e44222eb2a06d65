# The README's two set-up commands: `make run` (install + start the bridge on embedded defaults) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ccbridge-installed

.PHONY: install run test lint system-deps check-deploy bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/ccbridge run

system-deps:
	scripts/install-system-deps

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Dockerfile, image install, alert rules, Grafana dashboard and Helm chart (scripts/check-deploy; under a minute).
check-deploy: install system-deps
	$(BIN)/python scripts/check-deploy

test: install system-deps lint check-deploy
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) ccbridge-data .pytest_cache
