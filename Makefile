# Two commands do all the set-up: `make run` (the pipeline) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run test lint ui clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -e ".[dev]"
	touch $@

run: $(VENV)/.installed  ## compose conf/ into params.yaml, then run the DVC pipeline (a no-op when nothing changed)
	$(BIN)/seqpipe compose
	$(BIN)/dvc repro

test: $(VENV)/.installed  ## lint, then the whole test suite (slow end-to-end tests included)
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest -q

ui: $(VENV)/.installed  ## the MLflow UI on http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db

clean:  ## remove pipeline outputs (not the MLflow store)
	rm -rf data/raw data/prepared models reports/*.csv reports/*.png reports/*.txt outputs multirun tune
