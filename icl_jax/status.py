"""What a run's and a sweep's directories say about their state; no JAX, no orbax.

A run's workdir holds `checkpoints/<step>/` (orbax), `metrics.jsonl` and, once it stops,
`status.json` ({'status': 'done' | 'failed', 'step', 'summary', 'error', ...}). A sweep root
holds `sweep.json` (the latest launch's manifest), `launches/<id>.json` and one workdir
per point with its `point.json`. The trainer writes status, the launcher and the report
read it: the words and the rules that turn files into a state live here only.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from icl_jax import files
from icl_jax.errors import UserError

STATUS_FILE = 'status.json'
POINT_FILE = 'point.json'
SWEEP_FILE = 'sweep.json'  # The latest launch's manifest (points and groups).
LAUNCH_DIR = 'launches'  # One manifest per launch, which its workers read.
CONFIG_FILE = 'config.json'  # The run's config, written when it starts (and resumes).
CHECKPOINT_DIR = 'checkpoints'  # Orbax names complete steps `<step>`, partial ones otherwise.

DONE, FAILED, RUNNING, PENDING = 'done', 'failed', 'running', 'pending'
STATES = (DONE, FAILED, RUNNING, PENDING)
# The word a run stopped by a signal writes (it saved the step it reached): resumable, so
# its state is RUNNING.
PREEMPTED = 'preempted'
# The exit code of a training command stopped by a stop signal after saving (sysexits'
# EX_TEMPFAIL: try again later); a requeue or a rerun of the same command resumes it.
EXIT_PREEMPTED = 75


@dataclasses.dataclass
class RunResult:
  workdir: str
  step: int
  summary: dict[str, float]
  error: str | None = None  # Why the run stopped early (divergence, a bad workdir), else None.
  preempted: bool = False  # Stopped by a signal after saving `step`.
  stop_signal: str | None = None  # Which one (SIGTERM, SIGUSR2, ...), when preempted.
  saved: bool = True  # Whether `step` was saved when preempted (not before the first step).


def write(result: RunResult, **extra: Any) -> None:
  """`<workdir>/status.json`: done, failed or preempted, with the final summary.
  Multi-process callers write from process 0 only."""
  word = FAILED if result.error else PREEMPTED if result.preempted else DONE
  files.write_json(os.path.join(result.workdir, STATUS_FILE), {
      'status': word, 'step': result.step,
      'summary': result.summary, 'error': result.error,
      **({'signal': result.stop_signal} if result.preempted else {}), **extra})


def read(workdir: str) -> dict[str, Any] | None:
  """The parsed status.json; None if it is missing, cut short or not a JSON object."""
  status = files.read_json(os.path.join(workdir, STATUS_FILE))
  return status if isinstance(status, dict) else None


def remove(workdir: str) -> None:
  """Forgets a run's status (it is being trained again)."""
  try:
    os.remove(os.path.join(workdir, STATUS_FILE))
  except FileNotFoundError:
    pass


def latest_checkpoint_step(workdir: str) -> int:
  """The newest complete checkpoint step on disk (0 if none), without opening orbax."""
  try:
    names = os.listdir(os.path.join(workdir, CHECKPOINT_DIR))
  except OSError:
    return 0
  return max((int(n) for n in names if n.isdigit()), default=0)


def state_of(status: Mapping[str, Any] | None, target_steps: int | None, started: bool) -> str:
  """The one rule: DONE only when trained to the steps it is now set to train (a run done
  at fewer steps is resumable, so it counts as RUNNING); FAILED as its status says; else
  RUNNING once `started` (checkpoints, metrics or a log exist), PENDING before."""
  word = status.get('status') if status else None
  if word == DONE:
    step = status.get('step')
    if not target_steps or (isinstance(step, (int, float)) and step >= target_steps):
      return DONE
    return RUNNING
  if word == FAILED:
    return FAILED
  return RUNNING if started else PENDING


def run_state(workdir: str, target_steps: int | None) -> str:
  """The state of the run in `workdir` that is set to train `target_steps` steps."""
  started = os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR))
  return state_of(read(workdir), target_steps, started)


_RUN_FILES = (STATUS_FILE, CONFIG_FILE, 'metrics.jsonl')


def is_workdir(path: str) -> bool:
  """Whether `path` is a run's workdir: it has checkpoints/ or a metrics log, or both a status
  and a config (either alone is too common a file name to go by)."""
  has = lambda name: os.path.exists(os.path.join(path, name))
  return (os.path.isdir(os.path.join(path, CHECKPOINT_DIR)) or has('metrics.jsonl')
          or (has(STATUS_FILE) and has(CONFIG_FILE)))


def check_output_dir(out: str, what: str) -> None:
  """UserError if `out` is a place outputs do not belong: a run's workdir itself (its
  tb/, metrics and status are the run's) or anywhere inside a run's checkpoints/."""
  path = os.path.abspath(out)
  if is_workdir(path):
    raise UserError(f'{what} {out} is a training run\'s workdir; its files (tb/, metrics, '
                    'status) belong to that run. Choose another directory, e.g. '
                    f'{os.path.join(out, "eval")}.')
  while True:
    parent = os.path.dirname(path)
    in_checkpoints = os.path.basename(path) == CHECKPOINT_DIR and any(
        os.path.exists(os.path.join(parent, name)) for name in _RUN_FILES)
    if in_checkpoints or os.path.exists(os.path.join(path, '_CHECKPOINT_METADATA')):
      parent = parent if in_checkpoints else os.path.dirname(parent)
      raise UserError(f'{what} {out} is inside the checkpoints of the run in {parent}, which '
                      'orbax manages (it deletes and renames steps there). Choose a '
                      f'directory outside it, e.g. {os.path.join(parent, "eval")}.')
    if parent == path:
      return
    path = parent


# What a run writes in its workdir, by kind: a file (never a link: it would write elsewhere)
# and directories.
WORKDIR_FILES = (STATUS_FILE, CONFIG_FILE, 'metrics.jsonl', 'lease.json', POINT_FILE)
WORKDIR_DIRS = (CHECKPOINT_DIR, 'tb', 'corrupt_checkpoints')


def check_workdir_layout(workdir: str) -> None:
  """UserError unless `workdir` can be a run's: not inside another run's workdir (a run's
  checkpoint rotation deletes whatever lies in its steps), and holding none of a run's
  file names as a link or as the wrong kind of entry (a link would make the run write
  outside its workdir; a directory where a file goes cannot be written)."""
  path = os.path.abspath(workdir)
  check_output_dir_parents(path, 'Workdir', workdir)
  for name in WORKDIR_FILES + WORKDIR_DIRS:
    entry = os.path.join(path, name)
    if os.path.islink(entry):
      raise UserError(f'{entry} is a symbolic link (to {os.readlink(entry)!r}): icl_jax writes '
                      f'a run\'s files inside its workdir only. Replace the link by the '
                      f'{"file" if name in WORKDIR_FILES else "directory"} itself, or pass '
                      f'another --workdir.')
    wrong = (os.path.exists(entry) and
             not (os.path.isfile(entry) if name in WORKDIR_FILES else os.path.isdir(entry)))
    if wrong:
      raise UserError(f'{entry} should be a {"file" if name in WORKDIR_FILES else "directory"} '
                      f'of the run but is not one. It is not icl_jax\'s: move it away, or pass '
                      f'another --workdir.')


def check_output_dir_parents(path: str, what: str, given: str) -> None:
  """UserError if an ancestor of `path` is a run's workdir: nothing else belongs there."""
  parent = os.path.dirname(path)
  while parent != path:
    if is_workdir(parent):
      raise UserError(f'{what} {given} is inside the workdir of the run in {parent}, whose '
                      f'files and checkpoint rotation would touch it. Pass a directory '
                      f'outside it.')
    path, parent = parent, os.path.dirname(parent)
