"""benchmarks/device_check.py in its --cpu smoke mode, and the tests' GPU opt-out.

The GPU run itself needs a lent GPU machine (README, Benchmarks); here every part of the
same script runs with tiny budgets and shapes, so the command prepared for the GPU is
not dead code.
"""

import json
import os
import subprocess
import sys

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


@pytest.mark.slow
def test_cpu_mode_runs_every_part(tmp_path):
  out_dir = str(tmp_path / 'out')
  proc = subprocess.run([sys.executable, 'benchmarks/device_check.py', '--cpu', '--out', out_dir],
                        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=600)
  lines = proc.stdout.splitlines()
  records = [json.loads(line) for line in lines]  # Nothing but JSON lines on stdout.
  assert proc.returncode == 0, (proc.stdout[-5000:], proc.stderr[-3000:])
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
  assert rows['matmul_peak/float32']['flops_per_sec'] > 0
  for name in ('gpicl_paper_784', 'garg_tiny'):
    fp32 = rows[f'{name}/float32']
    assert fp32['steps_per_sec'] > 0 and fp32['examples_per_sec'] > 0 and 0 < fp32['mfu'] < 1
    bf16 = rows[f'{name}/bfloat16']  # Measured once config.model.dtype exists.
    assert bf16.get('skipped') == 'config.model.dtype missing' or bf16['steps_per_sec'] > 0
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
