# skene-pg: `make demo` runs it, `make test` tests it. `make help` lists the rest.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup demo test lint fmt typecheck bench schema dev-db clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml scripts/ensure-system-deps.sh
	scripts/ensure-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(STAMP) ## Install what the project needs (PostgreSQL + pg_cron as root, a venv)

demo: $(STAMP) ## Throwaway local Postgres, sample config, a free customer hitting the limit
	$(BIN)/skene-pg demo

test: $(STAMP) ## The whole test suite against a real PostgreSQL
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) ## Benchmarks: the gate vs a bare UPDATE (pgbench), the worker, track(), the queue vs 10M finished jobs, middleware
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.worker_bench
	$(BIN)/python -m bench.track_bench
	$(BIN)/python -m bench.queue_bench
	$(BIN)/python -m bench.middleware_bench

schema: $(STAMP) ## Regenerate sql/schema.sql: a fresh database migrated to head, dumped
	$(BIN)/python -m skene_pg.schema_files schema --output sql/schema.sql

dev-db: $(STAMP) ## Start the local development database and print its URL
	$(BIN)/skene-pg dev-db start

clean: ## Remove the venv, caches and the local dev database
	-$(BIN)/skene-pg dev-db destroy
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache dist build
