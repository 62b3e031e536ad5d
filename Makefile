# Labvault — `make demo` (the main job) and `make test` (every test) set themselves up.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_HOME ?= .labvault-demo
# Every package the venv holds, pinned with PyPI's hashes (make lock writes it from pyproject.toml).
LOCK := requirements.lock
# uv writes the lock; it lives in a venv of its own, never in the project's.
LOCK_VENV := .venv-lock
UV_VERSION := 0.13.9
LOCK_FLAGS ?= --upgrade

.PHONY: help demo serve-demo test lint lock bench system-deps clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check  # a dependency pyproject.toml names but the lock lacks fails here: make lock
	@touch $(STAMP)

lock: ## Refresh requirements.lock: the newest releases pyproject.toml allows, with their hashes (LOCK_FLAGS= keeps the current pins)
	@test -x $(LOCK_VENV)/bin/uv || { $(PY) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/python -m pip install --quiet 'uv==$(UV_VERSION)'; }
	$(PY) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' | \
		$(LOCK_VENV)/bin/uv pip compile --quiet $(LOCK_FLAGS) pyproject.toml - --extra test --extra lint --generate-hashes \
		--python-version 3.11 --python-platform x86_64-unknown-linux-gnu --custom-compile-command 'make lock' -o $(LOCK)

system-deps: ## Install the real services the tests use (PostgreSQL 15, SoftHSM2, sqlite3, age), where possible
	@bash scripts/system-deps.sh

demo: $(STAMP) ## Fresh demo home, 3 labs x 2,000 generated patients, proof that the store is encrypted
	LABVAULT_HOME=$(DEMO_HOME) LABVAULT_PASSPHRASE=$${LABVAULT_PASSPHRASE:-demo-passphrase-not-for-production} \
		$(BIN)/labvault demo --labs 3 --patients 2000
	LABVAULT_HOME=$(DEMO_HOME) LABVAULT_PASSPHRASE=$${LABVAULT_PASSPHRASE:-demo-passphrase-not-for-production} \
		$(BIN)/labvault audit verify

serve-demo: $(STAMP) ## Serve the demo home's API on http://127.0.0.1:8000 (after make demo)
	LABVAULT_HOME=$(DEMO_HOME) LABVAULT_PASSPHRASE=$${LABVAULT_PASSPHRASE:-demo-passphrase-not-for-production} \
		$(BIN)/labvault serve --port 8000

lint: $(STAMP) ## ruff (lint and format check) and mypy
	BIN=$(BIN) bash scripts/lint.sh

test: lint system-deps ## The checks (make lint), then every test (SQLite, a throwaway PostgreSQL 15, SoftHSM2)
	$(BIN)/python -m pytest -n 2 -q

bench: $(STAMP) system-deps ## The figures recorded in BENCHMARKS.md
	$(BIN)/labvault bench ingest --results 100000
	$(BIN)/labvault bench ingest --results 1000000
	$(BIN)/python -m labvault.testing.pg -- $(BIN)/labvault bench ingest --results 100000 --database-url {url}
	$(BIN)/python -m labvault.testing.pg -- $(BIN)/labvault bench ingest --results 1000000 --database-url {url}
	$(BIN)/labvault bench api --seconds 15
	$(BIN)/labvault bench audit --events 1000000
	$(BIN)/labvault bench hl7 --messages 20000
	$(BIN)/labvault bench mllp --messages 20000
	$(BIN)/python -m labvault.testing.pg -- $(BIN)/labvault bench mllp --messages 20000 --database-url {url}
	$(BIN)/labvault bench export --results 100000
	$(BIN)/labvault bench export --results 1000000
	$(BIN)/labvault bench migrate --results 100000
	$(BIN)/labvault bench migrate --results 1000000
	$(BIN)/python -m labvault.testing.pg -- $(BIN)/labvault bench migrate --results 100000 --database-url {url}

clean: ## Remove the virtual environments and the demo home
	rm -rf $(VENV) $(LOCK_VENV) $(DEMO_HOME)
