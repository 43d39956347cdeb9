# Two commands do everything on a fresh machine:
#   make run   - install, migrate, seed a demo, start web + worker + beat (embedded)
#   make test  - install, then the whole test suite
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
# Tests use the real PostgreSQL when it answers; DB-behaviour tests need it.
TEST_DATABASE_URL ?= $(shell pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && echo postgres://postgres@127.0.0.1:5432/palate)

.PHONY: install run test test-fast lint browser clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade --quiet pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

install: $(STAMP)

# Chromium + ChromeDriver from Debian for the browser tests (never a downloaded build).
browser:
	@command -v chromium >/dev/null || { \
	  echo "Installing Debian chromium for the browser tests..."; \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null; }

run: install
	$(PY) manage.py migrate --no-input
	$(PY) manage.py collectstatic --no-input -v0
	$(PY) manage.py seed_demo --host http://$(HOST):$(PORT)
	HOST=$(HOST) PORT=$(PORT) bash scripts/run_embedded.sh

test: install browser
	@if [ -z "$(TEST_DATABASE_URL)" ]; then \
	  echo "WARNING: PostgreSQL is not reachable on 127.0.0.1:5432;" \
	       "tests marked 'postgres' will be skipped."; fi
	DATABASE_URL="$(TEST_DATABASE_URL)" $(PY) -m pytest -m "not sqlite_only" $(PYTEST_ARGS)
	# Then on SQLite, the database `make run` uses: the SQLite-only tests and the
	# engine, annotator views and QC suites (tests/conftest.py, EMBEDDED_SUITES).
	DATABASE_URL= $(PY) -m pytest -m "sqlite_only or (embedded and not postgres)" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf var
