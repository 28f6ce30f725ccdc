# `make run`: set up .venv and run the main job on the embedded default (digits).
# `make test`: set up .venv and run the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/gpicl_digits
STAMP := $(VENV)/.installed

.PHONY: run smoke test docs bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m icl_jax.main --config experiments/gpicl_digits.py --workdir $(WORKDIR)

smoke: $(STAMP)
	$(PY) -m icl_jax.main --config experiments/gpicl_digits.py:smoke --workdir workdirs/smoke

# Two pytest-xdist workers, a file each at a time (module fixtures are built once): most
# tests compile or wait on a subprocess with one core busy. TEST_WORKERS=0 runs serially.
# The docs build first, strictly: a broken link or a missing page fails the tests.
TEST_WORKERS ?= 2
test: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir $(VENV)/site-check
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

# The documentation site (MkDocs, Material theme) into site/.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# Short-budget benchmarks (a few minutes on 2 CPU cores): appends one JSON line per figure
# to benchmarks/results/<host>.jsonl, then prints the latest results as markdown tables.
BENCH_OUT ?= benchmarks/results/$(shell $(PYTHON) -c 'import platform; print(platform.node())').jsonl
bench: $(STAMP)
	mkdir -p benchmarks/results
	$(PY) benchmarks/train_throughput.py --steps 10 --windows 3 --budget 20 \
	    --dtypes float32,bfloat16 >> $(BENCH_OUT)
	$(PY) benchmarks/sampler_throughput.py --calls 10 --windows 3 --budget 3 >> $(BENCH_OUT)
	$(PY) benchmarks/host_time.py --configs garg_tiny --steps 60 >> $(BENCH_OUT)
	$(PY) benchmarks/eval_throughput.py --calls 3 --windows 3 --budget 3 >> $(BENCH_OUT)
	$(PY) benchmarks/sweep_scaling.py --workloads digits_w64,garg_tiny --runs 1,4,16 --steps 3 \
	    --cpu_devices 1 --strategies map,vmap >> $(BENCH_OUT)
	$(PY) benchmarks/table.py $(BENCH_OUT)

clean:
	rm -rf $(VENV) workdirs site
