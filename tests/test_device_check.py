"""benchmarks/device_check.py in its --cpu smoke mode, and the tests' GPU opt-out.

The GPU run itself needs a lent GPU machine (docs/benchmarks.md); here every part of the
same script runs with tiny budgets and shapes, so the command prepared for the GPU is
not dead code. The orchestrator runs as on the GPU image, where none of the project's
dependencies are installed: with `python -I -S`, only the standard library importable.
"""

import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ('setup', 'tests', 'throughput', 'sweep', 'train')
EVAL_KEYS = ('seen/acc_first', 'seen/acc_last', 'unseen/acc_first', 'unseen/acc_last')


def clean_env():
  """The environment of a fresh shell: none of this session's CPU test setup."""
  env = dict(os.environ)
  for name in ('XLA_FLAGS', 'ICL_JAX_TEST_PLATFORM', 'JAX_PLATFORMS',
               'JAX_COMPILATION_CACHE_DIR'):
    env.pop(name, None)
  env['PYTHONPATH'] = REPO
  return env


# Runs the orchestrator as `python -I -S` (no site-packages, no PYTHONPATH, no user site: the
# standard library alone) and writes, at its end, the top-level modules it had imported that
# are not the standard library's. Its children are started with the same interpreter but
# without these flags, so they find jax and the project as the GPU image's children do.
STDLIB_ONLY = """
import json, runpy, sys
sys.argv = sys.argv[1:]
code = 0
try:
  runpy.run_path(sys.argv[0], run_name='__main__')
except SystemExit as e:
  code = e.code
outside = {m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) - {'__main__'}
with open(IMPORTS, 'w') as f:
  json.dump(sorted(outside), f)
sys.exit(code)
"""


def run_stdlib_only(args, imports_path, timeout):
  code = STDLIB_ONLY.replace('IMPORTS', repr(str(imports_path)))
  return subprocess.run(
      [sys.executable, '-I', '-S', '-c', code, 'benchmarks/device_check.py', *args],
      cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_cpu_mode_runs_every_part_with_the_standard_library_alone(tmp_path):
  out_dir = str(tmp_path / 'out')
  imports = tmp_path / 'imports.json'
  started = time.monotonic()
  proc = run_stdlib_only(['--cpu', '--out', out_dir], imports, timeout=600)
  seconds = time.monotonic() - started
  lines = proc.stdout.splitlines()
  records = [json.loads(line) for line in lines]  # Nothing but JSON lines on stdout.
  assert proc.returncode == 0, (proc.stdout[-5000:], proc.stderr[-3000:])
  assert json.loads(imports.read_text()) == []  # The orchestrator: standard library only.
  # Within what the docstring promises (its budgets), with room for the process startups.
  assert seconds < 270 + 30, seconds
  with open(os.path.join(out_dir, 'device_check.jsonl')) as f:
    assert f.read().splitlines() == lines
  results = {r['part']: r for r in records if 'status' in r}
  assert list(results) == list(PARTS) + ['summary']
  for part in PARTS:
    assert results[part]['status'] == 'ok', results[part]
    assert results[part]['seconds'] <= results[part]['budget_s'] + 5
    assert os.path.exists(os.path.join(out_dir, f'{part}.log'))
  assert results['summary']['parts'] == {p: 'ok' for p in PARTS}

  setup = results['setup']
  assert setup['platform'] == 'cpu' and not setup['errors']
  assert {'jax', 'flax', 'tensorflow-datasets', 'ml-collections'} <= set(setup['versions'])

  tests = results['tests']
  assert tests['platform'] == 'cpu' and tests['passed'] >= 1 and tests['failed'] == 0

  rows = {r['row']: r for r in results['throughput']['rows']}
  assert rows['matmul_peak']['peaks']['float32'] > 0
  for name in ('gpicl_paper_784/float32', 'garg_tiny/bfloat16'):
    row = rows[name]
    assert row['steps_per_sec'] > 0 and row['examples_per_sec'] > 0 and 0 < row['mfu'] < 1
    band = row['roofline']  # The GPU's prediction, computed here for the H100.
    assert band['device'] == 'h100' and band['kernels'] > 0 and band['flops'] > 0
    assert 0 < band['steps_per_sec_low'] <= band['steps_per_sec_high']
  # Row lines were printed as they were measured, before the part's result.
  assert {r['row'] for r in records if r['part'] == 'throughput' and 'row' in r} == set(rows)

  sweep = results['sweep']
  assert sweep['runs'] == 2 and sweep['group_run_steps_per_sec'] > 0
  assert sweep['sequential_run_steps_per_sec'] > 0 and sweep['speedup'] > 0

  train = results['train']
  assert train['steps_done'] == train['steps_target'] > 0
  assert train['evals'] and all(k in train['final'] for k in EVAL_KEYS)
  assert train['phase'] in ('general_learning', 'task_identification', 'memorisation',
                            'no_learning')
  assert 'plateau_length' in train and train['loss_curve'][-1][0] == train['steps_done']


@pytest.mark.slow
def test_a_row_past_its_deadline_is_stopped_and_reported_and_the_next_rows_run(tmp_path):
  """The paper's fp32 row gets 1 s, less than its compile takes: it is stopped (its child
  killed), reported as such, and a fresh child measures the row after it."""
  imports = tmp_path / 'imports.json'
  proc = run_stdlib_only(['--cpu', '--parts', 'throughput',
                          '--deadlines', 'gpicl_paper_784/float32=1'], imports, timeout=300)
  records = [json.loads(line) for line in proc.stdout.splitlines()]
  assert proc.returncode == 1, (proc.stdout[-5000:], proc.stderr[-3000:])
  part = next(r for r in records if r['part'] == 'throughput' and 'status' in r)
  assert part['status'] == 'failed' and 'gpicl_paper_784/float32' in part['error']
  rows = {r['row']: r for r in part['rows']}
  assert list(rows) == ['matmul_peak', 'gpicl_paper_784/float32', 'garg_tiny/bfloat16']
  assert rows['gpicl_paper_784/float32']['error'] == (
      'stopped: row gpicl_paper_784/float32 ran past its deadline of 1.0 s')
  assert rows['garg_tiny/bfloat16']['steps_per_sec'] > 0
  assert json.loads(imports.read_text()) == []


def test_gpu_opt_out_refuses_to_run_on_the_cpu():
  # ICL_JAX_TEST_PLATFORM=gpu must never quietly test the CPU: here JAX finds no GPU, so
  # the session stops at once. The inherited JAX_PLATFORMS=cpu is dropped and conftest's
  # 8 simulated devices are not set up, so JAX's own default (one CPU device) shows.
  env = dict(clean_env(), ICL_JAX_TEST_PLATFORM='gpu', JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider',
       'tests/test_model.py::test_sequence_longer_than_positions_is_refused'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 4, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert 'ICL_JAX_TEST_PLATFORM=gpu, but JAX runs on cpu: [CpuDevice(id=0)]' in (
      proc.stdout + proc.stderr)
