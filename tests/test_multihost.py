"""Multi-host on loopback: 2 processes of 4 CPU devices train what 1 process of 8 does.

The workload is a vmapped sweep group of two runs (`python -m launch.sweep --only_group`,
the worker every sweep backend starts), so the run axis spans the hosts: run 0 lives on
process 0's devices, run 1 on process 1's. The 1-process reference trains the same group
concurrently. The 2-process run gets an empty TFDS data dir of its own, so its processes
also meet the preparation of the embedded dataset (process 0 prepares it, the other waits
for it: see icl_jax/data/loading.py).

Midway, process 1 alone gets SLURM's SIGUSR1 (a time-limit notice): both processes must
save the same step (JAX's preemption service picks it), write status `preempted` naming
that signal, and exit 75; relaunched, the pair finishes what the uninterrupted single process trains.
"""

import glob
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from icl_jax import metrics as metrics_lib
from icl_jax import status as status_lib
from icl_jax import experiment
from icl_jax import plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'scripts'))
import fault_check  # pylint: disable=g-import-not-at-top,wrong-import-position

STEPS = 20
CHECKPOINT_EVERY = 10
LOG_EVERY = 5
TIMEOUT_S = 300  # All three processes together: ~70 s on 2 busy CPU cores.
# Once a process fails, its peer would wait for it in a collective for minutes.
GRACE_S = 15
TAIL_CHARS = 3000

EXPERIMENT = os.path.join(REPO, 'tests', 'experiments', 'tiny_sweep.py')


def write_sweep(root: str, data_dir: str) -> tuple[list, str]:
  """(points, launch id) of a one-group, two-run sweep under `root`."""
  config = experiment.load_module(EXPERIMENT).get_config(f'steps={STEPS}')
  config.data.data_dir = data_dir
  config.train.checkpoint_every_steps = CHECKPOINT_EVERY
  config.train.log_every_steps = LOG_EVERY
  config.mesh.data = 4  # With 8 devices: run axis 2 x data axis 4, one run per process.
  # The gradient of the attention's key bias is zero in exact arithmetic (softmax
  # ignores a shift shared by all keys), so it is pure rounding noise, which Adam with
  # a tiny eps scales up to lr-sized steps: those parameters would then differ by ~lr
  # between any two summation orders. A larger eps leaves them still.
  config.train.eps = 1e-3
  points = plan.expand(EXPERIMENT + ':widths=8', root, config)
  groups = plan.make_groups(points, max_group_size=64)
  assert len(groups) == 1 and len(groups[0]) == 2
  return points, plan.write_manifest(root, EXPERIMENT, points, groups, 'vmap')


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def subprocess_env(num_devices: int, **extra: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items()
         if k not in ('ICL_JAX_DISTRIBUTED', 'JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES',
                      'JAX_PROCESS_ID')}
  env.update({
      'JAX_PLATFORMS': 'cpu',
      # LLVM's optimisation passes take most of the compile time of these tiny programs;
      # both runs skip them alike.
      'XLA_FLAGS': (f'--xla_force_host_platform_device_count={num_devices} '
                    '--xla_backend_optimization_level=0'),
      'TF_CPP_MIN_LOG_LEVEL': '3',
      **extra,
  })
  return env


class Run:
  """One sweep worker subprocess, its output in files (a pipe could fill and block it)."""

  def __init__(self, name: str, root: str, launch_id: str, env: dict[str, str], logs: str):
    self.name = name
    self.stderr_path = os.path.join(logs, f'{name}.stderr')
    command = [sys.executable, '-m', 'launch.sweep', f'--root={root}', f'--launch={launch_id}',
               '--only_group=0']
    with open(os.path.join(logs, f'{name}.stdout'), 'w') as out, \
         open(self.stderr_path, 'w') as err:  # The child keeps its own descriptors.
      self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err)
    self.killed = False

  def report(self) -> str:
    status = ('killed (timeout, or a peer failed)' if self.killed
              else f'exit {self.proc.returncode}')
    with open(self.stderr_path, errors='replace') as f:
      tail = f.read()[-TAIL_CHARS:]
    return f'--- {self.name}: {status}; stderr tail:\n{tail}'


def wait_all(runs: list[Run], timeout_s: float, when=None) -> None:
  """Waits for every run; kills the rest at the deadline, or GRACE_S after a failure.
  `when`: (condition, action): the action runs once, when the condition first holds."""
  deadline = time.monotonic() + timeout_s
  while any(r.proc.poll() is None for r in runs):
    if when is not None and when[0]():
      when[1]()
      when = None
    failed = any(r.proc.returncode not in (None, 0, status_lib.EXIT_PREEMPTED) for r in runs)
    if failed:
      deadline = min(deadline, time.monotonic() + GRACE_S)
    if time.monotonic() > deadline:
      for r in runs:
        if r.proc.poll() is None:
          r.proc.kill()
          r.proc.wait()
          r.killed = True
      return
    time.sleep(0.2)


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains(data_dir, tmp_path):
  logs = str(tmp_path / 'logs')
  os.makedirs(logs)
  empty_data_dir = str(tmp_path / 'tfds_empty')
  os.makedirs(empty_data_dir)
  multi_points, multi_launch = write_sweep(str(tmp_path / 'multi'), empty_data_dir)
  single_points, single_launch = write_sweep(str(tmp_path / 'single'), data_dir)

  def pair(attempt: str) -> list[Run]:
    address = f'127.0.0.1:{free_port()}'
    return [Run(f'{attempt}process_{i}', str(tmp_path / 'multi'), multi_launch,
                subprocess_env(4, ICL_JAX_DISTRIBUTED='1', JAX_COORDINATOR_ADDRESS=address,
                               JAX_NUM_PROCESSES='2', JAX_PROCESS_ID=str(i)), logs)
            for i in range(2)]

  def logged_a_step() -> bool:  # Both processes are in the training loop.
    return any('train/loss' in r for r in metrics_lib.read(multi_points[0].workdir))

  runs = pair('')
  # Concurrently: on 2 cores the pair spends much of its time waiting on each other.
  reference = Run('single_process', str(tmp_path / 'single'), single_launch, subprocess_env(8),
                 logs)
  wait_all(runs + [reference], TIMEOUT_S,
           when=(logged_a_step, lambda: runs[1].proc.send_signal(signal.SIGUSR1)))
  report = '\n'.join(r.report() for r in runs + [reference])
  assert reference.proc.returncode == 0, report
  assert [r.proc.returncode for r in runs] == [status_lib.EXIT_PREEMPTED] * 2, report
  stopped = [status_lib.read(p.workdir) for p in multi_points]
  stop_step = stopped[0]['step']
  assert all(s['status'] == 'preempted' and s['signal'] == 'SIGUSR1' for s in stopped), report
  assert [s['step'] for s in stopped] == [stop_step] * 2 and LOG_EVERY < stop_step < STEPS
  for p in multi_points:  # Both processes saved that step together.
    assert stop_step in fault_check.complete_steps(p.workdir), report

  runs = pair('resumed_')
  wait_all(runs, TIMEOUT_S)
  report += '\n'.join(r.report() for r in runs)
  assert all(r.proc.returncode == 0 for r in runs), report

  for multi_point, single_point in zip(multi_points, single_points):
    multi_workdir, single_workdir = multi_point.workdir, single_point.workdir
    assert plan.point_status(multi_point) == 'done', report
    # Process 0 alone writes the log: one file, every record once.
    logs_written = glob.glob(os.path.join(multi_workdir, '**', 'metrics*.jsonl*'),
                             recursive=True)
    assert logs_written == [os.path.join(multi_workdir, metrics_lib.METRICS_FILE)], report
    multi, single = metrics_lib.read(multi_workdir), metrics_lib.read(single_workdir)
    train_steps = list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert [r['step'] for r in multi if 'train/loss' in r] == train_steps, report
    assert [r['step'] for r in multi] == [r['step'] for r in single], report
    # Not bit-exact: the gradient's all-reduce across processes (gloo) adds the devices'
    # partial sums in another order than XLA's in-process all-reduce; float32 rounding
    # then differs in the last bits (~1e-8 relative here).
    # A mean over a window the stop cut in two covers only its second part.
    whole = [r['step'] for r in single if 'train/loss' in r
             and not r['step'] - LOG_EVERY < stop_step < r['step']]
    np.testing.assert_allclose([r['train/loss'] for r in multi
                                if 'train/loss' in r and r['step'] in whole],
                               [r['train/loss'] for r in single
                                if 'train/loss' in r and r['step'] in whole],
                               rtol=1e-5, err_msg=report)

    # The checkpoints the two processes wrote together restore in one process.
    for workdir in (multi_workdir, single_workdir):
      assert {CHECKPOINT_EVERY, STEPS} <= set(fault_check.complete_steps(workdir)), report
    multi_step, multi_params = fault_check.final_params(multi_workdir)
    single_step, single_params = fault_check.final_params(single_workdir)
    assert multi_step == single_step == STEPS
    assert jax.tree.structure(multi_params) == jax.tree.structure(single_params)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(multi_params),
                            jax.tree.leaves(single_params)):
      # atol: entries near 0 differ by a few float32 ulps of the larger ones.
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                                 err_msg=jax.tree_util.keystr(path))
  # The two runs really are different runs (task pools 2 and infinite).
  assert (metrics_lib.read(multi_points[0].workdir)[-1] !=
          metrics_lib.read(multi_points[1].workdir)[-1])
