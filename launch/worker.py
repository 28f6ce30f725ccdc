"""A sweep worker: one group of a launch, trained in this process.

Every backend ends here: `python -m launch.sweep --root DIR --launch ID --only_group I` (the
vmap, local and tpu_vm backends) and the SLURM array task (launch/backends/slurm.py) both
call `start`, which turns on the compilation cache and jax.distributed, then `run_group`.
"""

from __future__ import annotations

import os
import socket
import sys

import jax

from icl_jax import lease as lease_lib
from icl_jax import plugins
from icl_jax import runs as runs_lib
from icl_jax import runtime
from icl_jax import status as status_lib
from icl_jax import plan
from icl_jax import train
from icl_jax.errors import UserError


def start(root: str, launch_id: str, index: int, device_memory_bytes: int | None = None,
          compilation_cache: str = '') -> int:
  """The worker's process set-up, then group `index`; returns an exit code. A SLURM task
  starts here without the launcher's command line, so the plugins (a dataset source, say)
  are imported here too."""
  plugins.load()
  runtime.start(compilation_cache)
  runtime.initialize_distributed()
  runtime.check_backend()
  if jax.process_count() > 1:
    print(process_line(), file=sys.stderr)
  return run_group(root, launch_id, index, device_memory_bytes)


def process_line() -> str:
  """What this process of a multi-process group is and sees (launch/README.md's table says
  what it should be on SLURM): its rank, its node and its devices."""
  seen = ' '.join(f'{name}={os.environ[name]}' for name in (
      'SLURMD_NODENAME', 'SLURM_PROCID', 'SLURM_LOCALID', 'SLURM_STEP_NODELIST',
      'CUDA_VISIBLE_DEVICES') if name in os.environ)
  devices = ', '.join(f'{d.platform}:{d.id}' for d in jax.local_devices())
  return (f'process {jax.process_index()} of {jax.process_count()} on {socket.gethostname()}'
          f'{" (" + seen + ")" if seen else ""}: local devices {devices}; '
          f'{jax.device_count()} in all')


def run_group(root: str, launch_id: str, index: int,
              device_memory_bytes: int | None = None) -> int:
  """Trains group `index` of a launch; returns an exit code.

  Every point ends with a status.json (done, failed or preempted): a point whose workdir
  is unusable fails alone, before the others train; a run that diverges fails without
  stopping them. Exit code 0 means every status is written, whatever it says;
  status.EXIT_PREEMPTED that a stop signal made the group save and stop.
  """
  points = plan.read_group(root, launch_id, index)
  usable = []
  for p in points:
    holder = lease_lib.live_holder(p.workdir)
    if holder is not None:
      print(f'skipping {p.name}: being trained by {lease_lib.describe(holder)}', file=sys.stderr)
      continue
    try:
      runs_lib.RunDir.open(p.config, p.workdir).store.close()
      usable.append(p)
    except UserError as e:
      runs_lib.write_status(status_lib.RunResult(p.workdir, plan.latest_step(p.workdir), {},
                                              str(e)))
      print(f'error: {p.name}: {e}', file=sys.stderr)
  if not usable:
    return 0
  try:
    results = train.train_group([p.config for p in usable], [p.workdir for p in usable],
                                device_memory_bytes=device_memory_bytes)
  except lease_lib.LeaseHeld as e:  # Another trainer has a point: its status is its own.
    print(f'error: {e}', file=sys.stderr)
    return 0
  except UserError as e:  # Shared by the whole group (e.g. the dataset is not prepared).
    for p in usable:
      runs_lib.write_status(status_lib.RunResult(p.workdir, plan.latest_step(p.workdir), {},
                                              str(e)))
    print(f'error: {e}', file=sys.stderr)
    return 0
  for r in results:
    if r.error:
      print(f'error: {r.workdir}: {r.error}', file=sys.stderr)
  preempted = [r for r in results if r.preempted]
  if preempted:
    print(f'preempted: group {index} saved step {preempted[0].step} of its runs '
          f'({preempted[0].stop_signal}); relaunch to resume.', file=sys.stderr)
    return status_lib.EXIT_PREEMPTED
  return 0


def stop_signals(root: str, launch_id: str, index: int) -> set[str]:
  """The signals that stopped the points of a group (from their status.json)."""
  statuses = [status_lib.read(p.workdir) for p in plan.read_group(root, launch_id, index)]
  return {s['signal'] for s in statuses
          if s and s.get('status') == status_lib.PREEMPTED and s.get('signal')}
