"""What a launcher backend is: one small interface, and the launch it is handed.

`python -m launch.sweep` expands the sweep, leaves out the points that are done or held
(a live lease, or a job some backend still has queued: `Backend.queued`), groups the rest
and writes the launch's manifest; then the backend named by --backend runs the groups:

    class Backend:
      name      the --backend value; grouped: whether points share vmapped groups
      check     refuse bad flags of this backend, before anything is written
      delegate  run the whole launch elsewhere instead (tpu_vm), or None to go on here
      queued    points that this backend's earlier jobs will still train (SLURM's queue)
      plan      what --dry_run prints besides the groups (SLURM: the sbatch script)
      submit    run or submit the groups; returns the launcher's exit code

A backend runs group I with `launch.worker_command(I)` (or `launch/worker.py`'s `start`
in a process of its own), calls `launch.begin()` once the launch can no longer be refused,
and raises `Refused` (one line) if it is refused before any worker starts: the manifest
is then put back as it was. Progress comes from files the trainers write: each running
point's lease notes its last logged step (`Launch.progress`), and every point ends with a
status.json (`report_group`). Backends define their own flags (absl) in their module.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
from typing import Any

from icl_jax import files
from icl_jax import lease as lease_lib
from icl_jax import plan
from icl_jax import status as status_lib
from icl_jax.errors import UserError

# `launch` in a checkout (python -m launch.sweep), `icl_jax.launch` when installed.
PACKAGE = __package__.rsplit('.', 1)[0] if __package__ else 'launch'
# The directory holding the top-level package: a checkout's root, or site-packages.
IMPORT_ROOT = str(pathlib.Path(__file__).resolve().parents[len(PACKAGE.split('.')) + 1])


class Refused(UserError):
  """The backend refused the launch before any worker could start (e.g. sbatch said no):
  the launcher puts the manifest back as it was and prints the message as one line."""


@dataclasses.dataclass
class Launch:
  """One launch: the sweep's points, the groups to train now, and how workers start."""
  root: str
  argv: list[str]  # The launcher's command line (tpu_vm reruns it on the workers).
  config_arg: str
  dry_run: bool
  device_memory_gb: float = 0.0  # --device_memory_gb, passed on to every worker.
  compilation_cache: str = ''  # --compilation_cache, passed on to every worker.
  requested_id: str | None = None  # --launch: the id to use (tpu_vm workers share one).
  points: list[plan.Point] = dataclasses.field(default_factory=list)
  groups: list[list[plan.Point]] = dataclasses.field(default_factory=list)
  id: str | None = None  # Once the manifest is written.
  created_root: bool = False
  _before: dict[str, bytes | None] = dataclasses.field(default_factory=dict)
  _new_dirs: list[str] = dataclasses.field(default_factory=list)

  # -------------------------------------------------------------------------------------
  # The manifest, and putting it back
  # -------------------------------------------------------------------------------------
  def write(self, backend: str) -> str:
    """Writes each point's point.json and the launch manifest; returns the launch id. What
    was there before is remembered, so that `undo` can put it back."""
    paths = [os.path.join(self.root, plan.SWEEP_FILE)]
    paths += [os.path.join(p.workdir, plan.POINT_FILE) for p in self.points]
    self._before = {path: _read_bytes(path) for path in paths}
    dirs = [os.path.join(self.root, plan.LAUNCH_DIR)] + [p.workdir for p in self.points]
    self._new_dirs = [d for d in dirs if not os.path.isdir(d)]
    self.id = plan.write_manifest(self.root, self.config_arg, self.points, self.groups,
                                  backend, self.requested_id)
    self._before.setdefault(plan.manifest_path(self.root, self.id), None)
    return self.id

  def undo(self) -> None:
    """Puts back every file `write` wrote as it was (removing the ones it created)."""
    for path, content in self._before.items():
      if content is None:
        _remove(path)
      else:
        with files.atomic_write(path, 'wb') as f:
          f.write(content)
    for d in self._new_dirs[::-1] + ([self.root] if self.created_root else []):
      try:
        os.rmdir(d)  # Only if empty: nothing but what this launch wrote was there.
      except OSError:
        pass

  def begin(self) -> None:
    """Forgets the old status of every point about to train: a status left from before would
    hide a crash of this launch. Call it once the launch can no longer be refused."""
    for group in self.groups:
      for p in group:
        status_lib.remove(p.workdir)

  # -------------------------------------------------------------------------------------
  # Workers
  # -------------------------------------------------------------------------------------
  def worker_command(self, index: int) -> list[str]:
    """The command that trains group `index` (run it with IMPORT_ROOT as working directory
    or on PYTHONPATH)."""
    return [sys.executable, '-m', f'{PACKAGE}.sweep', f'--root={self.root}',
            f'--launch={self.id}', f'--only_group={index}',
            f'--device_memory_gb={self.device_memory_gb}',
            f'--compilation_cache={self.compilation_cache}']

  @property
  def device_memory_bytes(self) -> int | None:
    """--device_memory_gb in bytes; None: what the device reports."""
    return int(self.device_memory_gb * 2**30) or None

  def log_path(self, index: int) -> str:
    return os.path.join(self.root, 'logs', str(self.id), f'group-{index}.log')

  def progress(self, index: int) -> str | None:
    """'step 120/300' of running group `index` (see `group_progress`)."""
    return group_progress(self.groups[index])

  def done_count(self) -> int:
    return sum(plan.point_status(p) == status_lib.DONE for p in self.points)

  def summary(self, failed: int) -> int:
    """The closing line of a launch whose workers ran here; returns the exit code."""
    print(f'{self.done_count()}/{len(self.points)} points done, {failed} failed. Figures: '
          f'python -m icl_jax.report --root {self.root}', file=sys.stderr)
    return 1 if failed else 0


class Backend:
  """The interface; the defaults suit a backend that runs every group on this host."""
  name: str = ''
  help: str = ''  # One line: what runs where.
  grouped: bool = True  # False: every point trains alone (no vmapped groups).

  def check(self, launch: Launch) -> None:
    """UserError for a bad flag of this backend, before anything is written."""
    del launch

  def delegate(self, launch: Launch) -> int | None:
    """An exit code if this backend runs the whole launch elsewhere; None to plan here."""
    del launch
    return None

  def queued(self, root: str) -> dict[str, str]:
    """{workdir: what holds it} for points that this backend's earlier launches under `root`
    will still train (queued, held or running), so that a relaunch leaves them alone."""
    del root
    return {}

  def plan(self, launch: Launch) -> str:
    """What --dry_run prints after the groups."""
    del launch
    return ''

  def submit(self, launch: Launch) -> int:
    """Runs or submits `launch.groups` (the manifest is written); returns an exit code."""
    raise NotImplementedError


# ---------------------------------------------------------------------------------------
# Progress and outcome, from the files the trainers write
# ---------------------------------------------------------------------------------------
def group_progress(points: list[plan.Point]) -> str | None:
  """'step 120/300' of a running group: the step its trainer last logged, which the lease of
  each point it trains holds (icl_jax/lease.py); None before the first log step."""
  for p in points:
    step = lease_lib.progress_step(p.workdir)
    if step is not None:
      return f'step {step}/{p.config.train.steps}'
  return None


def report_group(points: list[plan.Point], returncode: int | str, log: str) -> int:
  """Prints one line per failed point with its log; returns how many failed.

  `Launch.begin` removed these points' old status.json before their worker started, so a
  missing one after a failed worker means it crashed (its status is written here); after a
  successful one it means another host's process 0 owns it.
  """
  failed = 0
  for p in points:
    status = status_lib.read(p.workdir)
    if status is None:
      if returncode in (0, status_lib.EXIT_PREEMPTED):
        continue
      status = {'status': status_lib.FAILED, 'step': plan.latest_step(p.workdir),
                'summary': {}, 'error': f'the worker crashed (exit {returncode}) before finishing'}
    if status['status'] != status_lib.FAILED:
      continue
    if status.get('log') != log:
      status['log'] = log
      files.write_json(os.path.join(p.workdir, status_lib.STATUS_FILE), status)
    print(f'FAILED {p.name}: {status["error"]} (log: {log})', file=sys.stderr)
    failed += 1
  return failed


def _read_bytes(path: str) -> bytes | None:
  try:
    with open(path, 'rb') as f:
      return f.read()
  except FileNotFoundError:
    return None


def _remove(path: str) -> None:
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def describe_holders(held: dict[str, Any]) -> str:
  """'2 by SLURM job 12_0 (RUNNING), 1 by host h, pid 7' from {workdir: description}."""
  counts: dict[str, int] = {}
  for what in held.values():
    counts[str(what)] = counts.get(str(what), 0) + 1
  return ', '.join(f'{n} by {what}' for what, n in counts.items())
