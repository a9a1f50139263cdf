# Two entry points on a fresh machine: `make demo` (tiny end-to-end run) and `make test`.
# Both create .venv and install the project into it first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pytest-xdist workers; each worker uses one torch thread (see tests/conftest.py)
JOBS ?= 2

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(PY) scripts/demo.py --out runs/demo

test: install
	$(PY) -m pytest -n $(JOBS) tests

clean:
	rm -rf $(VENV) runs .pytest_cache
