# `make run`: set up .venv and run the main job on the embedded default (digits).
# `make test`: set up .venv and run the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/gpicl_digits
STAMP := $(VENV)/.installed

.PHONY: run smoke test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m icl_jax.main --config experiments/gpicl_digits.py --workdir $(WORKDIR)

smoke: $(STAMP)
	$(PY) -m icl_jax.main --config experiments/gpicl_digits.py:smoke --workdir workdirs/smoke

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) workdirs
