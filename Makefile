# Two commands for a new user:  `make run`  (the whole system)  and  `make test`.
# Both create ./.venv and install what they need on first use.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench chaos lint schema clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Start NATS + the MongoDB-compatible server (unless WA_NATS_URL / WA_MONGO_URL are set) and every service.
run: $(STAMP)
	$(PY) -m services.devstack run

## The whole test suite (unit, integration against real servers, end to end).
test: $(STAMP)
	$(PY) -m pytest -q

## Benchmarks; results are printed and written to bench-results/.
bench: $(STAMP)
	$(PY) -m bench all

## Long chaos run (nodes killed at random while sending).
chaos: $(STAMP)
	$(PY) -m bench chaos

lint: $(STAMP)
	$(PY) -m ruff check .

## Regenerate the JSON Schema and AsyncAPI documents of the contract.
schema: $(STAMP)
	$(PY) -m services.devstack.contract_docs docs

clean:
	rm -rf $(VENV) .data bench-results
