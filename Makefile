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

# the web apps' extras (apps/demo, apps/study) and the study's jsPsych from the npm registry (no CDN at run time)
APPS_EXTRAS := demo,study
STUDY_JS := apps/study/node_modules/.package-lock.json

.PHONY: install install-min demo test test-min lint clean study

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,$(APPS_EXTRAS)]"
	touch $@

# without npm the study's browser test is skipped (and says why); .ci/run insists on npm
$(STUDY_JS): apps/study/package.json apps/study/package-lock.json
	@if command -v npm >/dev/null; then npm ci --prefix apps/study --no-audit --no-fund --loglevel=error; \
	else echo "make: npm not found: the study's pages need jsPsych (npm ci --prefix apps/study)" >&2; fi

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
# the browser tests drive Debian's chromium (/usr/bin/chromium; .ci/run installs it)
test: install $(STUDY_JS)
	$(PY) -m pytest -n $(JOBS) --dist loadgroup tests

# the miniature world's evaluations and reduced build run once, in `make test` (CI's 20-minute budget);
# the demo below still runs the shipped miniature at the minimums
# the web apps are tested in `make test` only: their extras are not part of the library's minimums;
# so are the minutes-long runs (`once`) whose parts other tests cover at the minimums too
test-min: install-min
	$(PY_MIN) -m pytest -n $(JOBS) -m "not mini_world and not once and not apps" tests
	$(PY_MIN) scripts/demo.py --out runs/demo-min

# ruff's rules and line length live in pyproject.toml ([tool.ruff])
lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) $(VENV_MIN) runs .pytest_cache

# the human 2AFC study on the miniature's Table 1 (tiny baselines): build stimuli, serve on 127.0.0.1:8000
study: demo $(STUDY_JS)
	$(PY) scripts/make_toy_emoset.py --root runs/demo/emoset --per_class 0 0 2
	$(PY) scripts/make_test_split.py --emoset_root runs/demo/emoset --emopair_json none --per_class 2 \
		--out runs/demo/test_split.json
	$(PY) scripts/evaluate.py --config configs/eval_tiny.yaml --per_class 1 --out runs/demo/eval_study \
		--methods ours ct nst clipstyler ip2p lms
	$(PY) -m apps.study make-dummies --out runs/demo/study_dummies
	$(PY) -m apps.study build-stimuli --eval_out runs/demo/eval_study --dummies runs/demo/study_dummies \
		--out runs/demo/study_stimuli
	$(PY) -m apps.study serve --stimuli runs/demo/study_stimuli --db runs/demo/study.sqlite --trials 20
