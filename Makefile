# Entry points for users: `make run`, `make test` (the full suite), `make test-fast` (without the multi-second
# scenarios marked slow) and `make lint`. Each creates .venv with Python 3.12 on first use.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# nautilus_trader 1.231 needs Python 3.12: take the first interpreter that really is 3.12
# (a pyenv shim named python3.12 may exist without the version being active).
PYTHON312 ?= $(shell for c in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do \
	"$$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1 && { echo "$$c"; break; }; done)

.PHONY: run test test-fast lint setup bench drill clean

$(PY):
	@test -n "$(PYTHON312)" || { echo "error: Python 3.12 not found (install python3.12 or set PYTHON312=/path/to/python3.12)"; exit 1; }
	$(PYTHON312) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m launcher $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The quick loop while editing: everything but the scenarios marked `slow` (restarts, failovers, drills, bench).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m launcher.bench $(ARGS)

drill: $(STAMP)
	$(PY) -m launcher.drill $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
