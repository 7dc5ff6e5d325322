# The two commands a new user runs: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the tests use: Go and its x/mod (the receipt log checked by
# Go's sumdb/tlog and sumdb/note), and Chromium for the browser tests.
SYSTEM_PACKAGES := golang-go golang-golang-x-mod-dev chromium

.PHONY: serve test lint system-deps browser-check loadtest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/billing serve --dev

# Installs the missing Debian packages when it can (root with apt-get);
# otherwise says in one line what to install, and the tests that need them fail.
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq $$missing >/dev/null; \
	  else echo "make: missing Debian packages:$$missing (apt-get install$$missing)"; fi; \
	fi

# The browser tests drive Chromium (tests/web/conftest.py reads the same path):
# after system-deps, a missing browser stops `make test` with one line.
CHROMIUM_PATH = $(or $(VEXA_TEST_CHROMIUM),/usr/bin/chromium)
browser-check:
	@[ -x "$(CHROMIUM_PATH)" ] || { echo "make: Chromium is missing at $(CHROMIUM_PATH): run 'apt-get install -y chromium' (or 'make system-deps' as root) and retry"; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	@if command -v terraform >/dev/null; then \
	  terraform fmt -check -recursive deploy/terraform 2>/dev/null \
	  || { echo "deploy/terraform is not formatted: run terraform fmt -recursive deploy/terraform"; exit 1; }; \
	else echo "make: terraform not found; skipping terraform fmt -check"; fi

test: system-deps browser-check lint
	$(BIN)/pytest -q

loadtest: $(STAMP)
	$(BIN)/python -m loadtest.run_locust

bench: $(STAMP)
	$(BIN)/python -m loadtest.bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
