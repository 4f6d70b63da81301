# The two commands a newcomer needs: `make demo` and `make test`.
# Everything is installed from scratch into .venv through this file.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint demo bench tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check failoverd tests benchmarks
	$(BIN)/ruff format --check failoverd tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

tools:
	scripts/install-tools.sh

test: $(STAMP) lint tools
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -n 2 --dist loadgroup

demo: $(STAMP)
	$(BIN)/failoverd demo

bench: $(STAMP) tools
	$(BIN)/python benchmarks/checks.py
	bash benchmarks/checks_vs_haproxy.sh
	$(BIN)/python benchmarks/failover_latency.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
