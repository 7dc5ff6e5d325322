# The two commands a new user runs: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint loadtest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/billing serve --dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

loadtest: $(STAMP)
	$(BIN)/python -m loadtest.run_locust

bench: $(STAMP)
	$(BIN)/python -m loadtest.bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
