# Two commands do all the set-up: `make run` (the pipeline) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run test test-full lint ui team-server team-server-stop clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -e ".[dev]"
	touch $@

run: $(VENV)/.installed  ## compose conf/ into params.yaml, then run the DVC pipeline (a no-op when nothing changed)
	$(BIN)/seqpipe compose
	$(BIN)/dvc repro

lint: $(VENV)/.installed  ## ruff, and lint-imports: the layers and no import cycles (pyproject.toml)
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports --no-logo

test: lint  ## lint, then the fast tier (tiny models, a few batches; about 75 s on 2 cores, two workers)
	$(BIN)/pytest -q -m "not slow" -n 2 --dist loadfile --no-loadscope-reorder --durations=20

# Two workers, one torch thread each (tests/conftest.py); a test file stays on one worker so its module fixtures train
# once. Most of the slow tier waits on process start-ups and servers, so two workers fill the two cores.
test-full: lint  ## lint, then every test, the slow end-to-end ones included (what CI runs; two workers)
	$(BIN)/pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=20

ui: $(VENV)/.installed  ## the MLflow UI on http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db

team-server: $(VENV)/.installed  ## a team MLflow server here: PostgreSQL + mlflow server in .team/ (docs/team.md)
	$(BIN)/seqpipe team-server start

team-server-stop: $(VENV)/.installed  ## stop it (the server's process group, then PostgreSQL)
	$(BIN)/seqpipe team-server stop

clean:  ## remove pipeline outputs (not the MLflow store)
	rm -rf data/raw data/prepared models reports/*.csv reports/*.png reports/*.txt outputs multirun tune
