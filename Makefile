# Two entry points on a fresh machine: `make demo` (tiny end-to-end run) and `make test`.
# Both create .venv and install the project into it first. `make test-min` runs the same suite
# and the demo in .venv-min, where every dependency is pinned to the minimum pyproject.toml declares.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
VENV_MIN ?= .venv-min
PY_MIN := $(VENV_MIN)/bin/python
# name==<declared minimum> for every dependency, generated from pyproject.toml (never by hand);
# tests/test_dependencies.py finds it in the environment's prefix and checks the installed versions
MIN_CONSTRAINTS := $(VENV_MIN)/constraints-min.txt
# pytest-xdist workers; each worker uses one torch thread (see tests/conftest.py)
JOBS ?= 2

.PHONY: install install-min demo test test-min lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# Rebuilt from nothing whenever pyproject.toml changes, so no package outlives its pin.
# pip's download cache (~/.cache/pip) is shared with .venv.
install-min: $(VENV_MIN)/.installed

$(VENV_MIN)/.installed: pyproject.toml .ci/min_constraints.py
	rm -rf $(VENV_MIN)
	$(PYTHON) -m venv $(VENV_MIN)
	$(PY_MIN) -m pip install -q --upgrade pip
	$(PY_MIN) .ci/min_constraints.py -o $(MIN_CONSTRAINTS)
	$(PY_MIN) -m pip install -q -c $(MIN_CONSTRAINTS) -e ".[dev]"
	touch $@

demo: install
	$(PY) scripts/demo.py --out runs/demo

# --dist loadgroup: tests sharing an expensive module fixture (the miniature Table 1) stay on one worker
test: install
	$(PY) -m pytest -n $(JOBS) --dist loadgroup tests

# the miniature world's evaluations and reduced build run once, in `make test` (CI's 20-minute budget);
# the demo below still runs the shipped miniature at the minimums
test-min: install-min
	$(PY_MIN) -m pytest -n $(JOBS) -m "not mini_world" tests
	$(PY_MIN) scripts/demo.py --out runs/demo-min

# ruff's rules and line length live in pyproject.toml ([tool.ruff])
lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) $(VENV_MIN) runs .pytest_cache
