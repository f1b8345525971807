# Every target does its own set-up, and running it again does nothing that is already done.
# `make test` and `make demo` are all a fresh Debian 12 machine needs (as root).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml node_images/p2pvalue/pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: setup lint test demo clean

setup: $(STAMP)
	$(BIN)/cnlab doctor --fix

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }

$(STAMP): $(BIN)/python
	$(BIN)/pip install -q -e '.[test]' $(if $(wildcard node_images/p2pvalue/pyproject.toml),-e 'node_images/p2pvalue[test]')
	rm -f $(VENV)/.installed-* && touch $@

lint: $(STAMP)
	$(BIN)/ruff check toolkit tests benchmarks node_images
	$(BIN)/ruff format --check toolkit tests benchmarks node_images
	$(BIN)/mypy

# Tests run in 3 workers, a whole file per worker (a file's fixtures set up once): most tests wait
# on timers, processes and the network rather than on the CPU. Then the scaled federation (246
# nodes), alone.
test: setup lint
	$(BIN)/python -m pytest -n 3 --dist loadfile -m "not scale" --durations=15
	$(BIN)/python -m pytest -m scale

demo: setup
	bash experiments/demo.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
