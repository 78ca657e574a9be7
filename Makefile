# Two commands for a new user:  `make run`  (the whole system)  and  `make test`.
# Both create ./.venv and install what they need on first use.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench chaos lint schema clean system-tools

# Debian packages the tests need besides PyPI's: a real headless browser for the dashboard
# test, and Prometheus (the server and promtool) for the metrics and alert-rule tests.
SYSTEM_TOOLS    := chromium chromedriver promtool prometheus
SYSTEM_PACKAGES := chromium chromium-driver prometheus
SUDO            := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Start NATS + the MongoDB-compatible server (unless WA_NATS_URL / WA_MONGO_URL are set) and every service.
run: $(STAMP)
	$(PY) -m services.devstack run

## The whole test suite (unit, integration against real servers, end to end).
test: $(STAMP) system-tools
	$(PY) -m pytest -q

## Install the Debian packages of SYSTEM_TOOLS when one is missing (quick when all are there).
system-tools:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing $(SYSTEM_PACKAGES) (missing:$$missing)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(SYSTEM_PACKAGES); \
	fi

## Benchmarks; results are printed and written to bench-results/.
bench: $(STAMP)
	$(PY) -m bench all

## Long chaos run (nodes killed at random while sending).
chaos: $(STAMP)
	$(PY) -m bench chaos

lint: $(STAMP)
	$(PY) -m ruff check .

## Regenerate the JSON Schema and AsyncAPI documents of the contract, and the OpenAPI document of the HTTP API.
schema: $(STAMP)
	$(PY) -m services.devstack.contract_docs docs

clean:
	rm -rf $(VENV) .data bench-results
