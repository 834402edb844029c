# Everyday tasks. `make demo` and `make test` are the README's two commands: each sets up
# the virtualenv first (idempotent), so they work on a fresh clone.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit test-integration lint format typecheck lock bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default: SQLite + local Redis + scripted provider.
demo: $(STAMP)
	$(BIN)/agentq demo

## The whole suite: lint, types, then every test (integration tests need Redis and PostgreSQL).
test: $(STAMP) lint typecheck
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit tests/taskstore -m 'not integration and not acceptance'

test-integration: $(STAMP)
	$(BIN)/pytest -m 'integration or acceptance'

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

## requirements.lock: the exact versions (with hashes) the Docker image installs; refresh after
## changing pyproject.toml's dependencies.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
		--quiet --output-file requirements.lock

# The BullMQ replica needs the `bullmq` package, which pins exact versions of its own
# dependencies: it gets a virtualenv of its own.
.venv-bench/.installed:
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet bullmq 'psycopg[binary]' psycopg-pool
	touch .venv-bench/.installed

## The performance suite: one table in benchmarks/results/latest.md (about 15 minutes on 2 cores).
bench: $(STAMP) .venv-bench/.installed
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
