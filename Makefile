# The README's two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint install migrate seed worker bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

## make run: install, migrate, seed the demo, start web + worker on SQLite + embedded Redis
run: $(STAMP)
	$(BIN)/carepilot-run

## make test: the whole suite (PostgreSQL/Redis when DATABASE_URL/REDIS_URL are set), on
## TEST_PROCESSES pytest-xdist workers, each with its own database (tests/databases.py), a
## test module at a time (its module fixtures are built once); TEST_PROCESSES=0 runs it in
## this one process
TEST_PROCESSES ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

## make lint: ruff (lint and format), the import contracts and mypy
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

migrate: $(STAMP)
	$(BIN)/alembic upgrade head

seed: $(STAMP)
	$(BIN)/flask --app wsgi seed-demo

worker: $(STAMP)
	$(BIN)/carepilot-worker

bench: $(STAMP)
	$(BIN)/python bench/conditions.py
	$(BIN)/python bench/ingest_outcomes.py
	$(BIN)/python bench/aggregate.py
	$(BIN)/python bench/readout.py
	$(BIN)/python bench/decision_core.py
	$(BIN)/python bench/decision_latency.py

clean:
	rm -rf $(VENV) instance build *.egg-info
