# Labvault — `make demo` (the main job) and `make test` (every test) set themselves up.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_HOME ?= .labvault-demo

.PHONY: help demo serve-demo test bench system-deps clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

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

test: $(STAMP) system-deps ## Every test (SQLite, a throwaway PostgreSQL 15, SoftHSM2)
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

clean: ## Remove the virtual environment and the demo home
	rm -rf $(VENV) $(DEMO_HOME)
