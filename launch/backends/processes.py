"""The backends that run workers as processes on this host: vmap (default) and local.

  vmap   points that differ only in values (seed, task.num_tasks, lr, ...; see
         icl_jax/fields.py VALUE_FIELDS) train as one program per group, each device holding
         whole runs; groups run one after another over all devices, or --parallel N at once,
         one per GPU. It is also what every TPU VM worker runs (tpu_vm.py): there, workers
         1..n-1 (ICL_JAX_WORKER) train the groups worker 0 wrote under the shared --launch.
  local  each point alone; --parallel N runs N at once.

SIGTERM, SIGHUP (an ssh hang-up) and SIGINT to the launcher reach the running workers as
SIGTERM: each saves the step it reached and stops, and the launcher exits 75 once they are
gone, starting no new group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from absl import flags

from icl_jax import plan
from icl_jax import progress
from icl_jax import status as status_lib
from icl_jax.errors import UserError
from . import base
from . import registry

# How long TPU VM workers 1..n-1 wait for worker 0's launch manifest.
MANIFEST_WAIT_S = 600.0

_PARALLEL = flags.DEFINE_integer(
    'parallel', 1, 'local: points run at once; vmap: groups run at once. Each worker then '
    'sees one GPU (CUDA_VISIBLE_DEVICES=slot): one group per local GPU.', lower_bound=1,
    upper_bound=1024)
_CPU_DEVICES = flags.DEFINE_integer(
    'cpu_devices', 0, 'On a CPU host, split it into this many XLA devices for each worker '
    '(the run axis spreads a group over them); 0: leave XLA_FLAGS alone.', lower_bound=0,
    upper_bound=4096)


class Vmap(base.Backend):
  name = 'vmap'
  help = 'one vmapped program per group, groups one after another (or --parallel) here'
  grouped = True

  def delegate(self, launch: base.Launch) -> int | None:
    if not (launch.requested_id and worker_index() > 0):
      return None
    # A TPU VM worker other than 0: worker 0 chose the groups and wrote them.
    launch.id = launch.requested_id
    launch.groups = follow_launch(launch.root, launch.id)
    print(f'worker {worker_index()}: launch {launch.id}, {len(launch.groups)} group(s) '
          f'written by worker 0', file=sys.stderr)
    failed, stopped = run_subprocesses(launch, _PARALLEL.value)
    return status_lib.EXIT_PREEMPTED if stopped else 1 if failed else 0

  def submit(self, launch: base.Launch) -> int:
    launch.begin()
    failed, stopped = run_subprocesses(launch, _PARALLEL.value)
    if stopped:
      print(f'Stopped by a signal: {launch.done_count()}/{len(launch.points)} points done, the '
            f'running ones saved. Relaunch the same command to finish the sweep.',
            file=sys.stderr)
      return status_lib.EXIT_PREEMPTED
    return launch.summary(failed)


class Local(Vmap):
  name = 'local'
  help = 'each point alone, one after another (or --parallel N at once) here'
  grouped = False


registry.register(Vmap())
registry.register(Local())


def worker_env(slot: int | None = None) -> dict[str, str]:
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [base.IMPORT_ROOT, env.get('PYTHONPATH')]))
  if _CPU_DEVICES.value:
    flag = f'--xla_force_host_platform_device_count={_CPU_DEVICES.value}'
    env['XLA_FLAGS'] = f'{env.get("XLA_FLAGS", "")} {flag}'.strip()
  if slot is not None:
    env['CUDA_VISIBLE_DEVICES'] = str(slot)
  return env


def run_subprocesses(launch: base.Launch, parallel: int) -> tuple[int, bool]:
  """Runs each group as a worker process, `parallel` at once; returns (the failed count,
  whether a stop signal ended the launch early).

  SIGTERM, SIGHUP (an ssh hang-up) and SIGINT to the launcher are passed on to the running
  workers as SIGTERM, which makes them save the step they reached and stop; the launcher
  starts no new group and waits for them, so no worker outlives it.
  """
  groups = launch.groups
  os.makedirs(os.path.dirname(launch.log_path(0)), exist_ok=True)
  queue = list(range(len(groups)))
  running: dict[int, tuple[subprocess.Popen, int]] = {}  # slot -> (process, group index)
  failed = 0
  stopping: list[str] = []

  def stop(signum, frame):
    del frame
    if not stopping:
      print(f'{signal.Signals(signum).name}: asking {len(running)} worker(s) to save and '
            f'stop...', file=sys.stderr)
    stopping.append(signal.Signals(signum).name)
    for process, _ in running.values():
      if process.poll() is None:
        process.send_signal(signal.SIGTERM)

  previous = {sig: signal.signal(sig, stop)
              for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
  bar = progress.Progress(sum(map(len, groups)), 'points', unit='point')
  try:
    while (queue and not stopping) or running:
      for slot in range(parallel):
        if slot not in running and queue and not stopping:
          index = queue.pop(0)
          running[slot] = (_start(launch, index, slot if parallel > 1 else None), index)
      bar.set_postfix(**{f'group {index}': step for _, index in running.values()
                         if (step := launch.progress(index))})
      for slot, (process, index) in list(running.items()):
        if process.poll() is None:
          continue
        del running[slot]
        failed += base.report_group(groups[index], process.returncode, launch.log_path(index))
        bar.update(len(groups[index]))
      time.sleep(0.5)
  finally:
    for process, _ in running.values():  # Only after an error of the launcher itself.
      process.kill()
    bar.close()
    for sig, handler in previous.items():
      signal.signal(sig, handler)
  return failed, bool(stopping)


def _start(launch: base.Launch, index: int, slot: int | None) -> subprocess.Popen:
  """Starts group `index`'s worker, its output appended to the group's log."""
  with open(launch.log_path(index), 'ab') as log:
    # The launcher's process group: a signal to the whole group (a terminal's Ctrl-C,
    # SLURM, kill -9 of the group) reaches the workers too.
    process = subprocess.Popen(launch.worker_command(index), stdout=log,
                               stderr=subprocess.STDOUT, cwd=base.IMPORT_ROOT,
                               env=worker_env(slot))
  progress.say(f'group {index} ({len(launch.groups[index])} points) started; its log: '
               f'{launch.log_path(index)}')
  return process


def follow_launch(root: str, launch_id: str) -> list[list[plan.Point]]:
  """The groups of a launch another worker writes (tpu_vm workers 1..n-1), once it is there."""
  path = plan.manifest_path(root, launch_id)
  deadline = time.monotonic() + MANIFEST_WAIT_S
  while not os.path.exists(path):
    if time.monotonic() > deadline:
      raise UserError(f'Worker 0 wrote no launch manifest {path} in {MANIFEST_WAIT_S:.0f} s. '
                      f'Is --root on a filesystem every worker sees? Check worker 0\'s output.')
    time.sleep(1.0)
  return plan.read_launch(root, launch_id)


def worker_index() -> int:
  """This host's index among the TPU VM workers (launch/tpu_vm.sh sets ICL_JAX_WORKER from
  the metadata server); 0 elsewhere."""
  try:
    return int(os.environ.get('ICL_JAX_WORKER', '0'))
  except ValueError:
    return 0

