"""Reading a sweep root: one PointRecord per point, from whatever its workdir holds so far.

Any file may be missing, cut short or hand-edited: a point that cannot be read shows up as
pending, running or failed, and never stops the report.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, Sequence

from icl_jax import diagnose
from icl_jax import fields as fields_lib
from icl_jax import files
from icl_jax import metrics as metrics_lib
from icl_jax import status as status_lib
from icl_jax.errors import UserError
from icl_jax.status import DONE, FAILED, PENDING, POINT_FILE, STATUS_FILE, SWEEP_FILE

LOG_FILE = 'log.txt'  # A point's own log, if it has one (the launcher's is in status.json).
ACC_KEYS = ('seen/acc_first', 'seen/acc_last', 'unseen/acc_first', 'unseen/acc_last')
NUM_TASKS, BATCH_SIZE, SEED = 'task.num_tasks', 'train.batch_size', 'seed'


@dataclasses.dataclass
class PointRecord:
  """One point of the sweep and whatever its workdir holds so far."""
  name: str
  workdir: str  # As sweep.json lists it: relative to the root.
  path: str  # The directory itself.
  overrides: dict[str, Any]
  config: dict[str, Any]
  state: str = PENDING
  step: int | None = None
  summary: dict[str, float] = dataclasses.field(default_factory=dict)
  summary_from: str | None = None  # 'eval' (results.json) or 'status'.
  num_params: int | None = None
  state_size: int | None = None  # Floats of state per sequence (GPICL's state-size study).
  num_classes: int | None = None
  seconds: float | None = None
  error: str | None = None
  log: str | None = None
  final_loss: float | None = None
  phase: str | None = None
  plateau_steps: int | None = None
  left_plateau: bool | None = None  # None: unknown (no loss records, or not done).
  # The training curve: (step, training loss) of every logged step, and (step, unseen
  # accuracy at the first positions, at the last) of every evaluation during training.
  losses: list[tuple[int, float]] = dataclasses.field(default_factory=list)
  evals: list[tuple[int, float, float]] = dataclasses.field(default_factory=list)

  def get(self, field: str) -> Any:
    """A dotted config field: the override if the sweep set it, else the stored config."""
    if field in ('num_params', 'state_size'):
      return getattr(self, field)
    if field in self.overrides:
      return self.overrides[field]
    node = self.config
    for part in field.split('.'):
      if not isinstance(node, Mapping) or part not in node:
        return None
      node = node[part]
    return node

  def acc(self, key: str) -> float | None:
    """An accuracy that figures and tables may use: of a done point, and a real number."""
    value = self.summary.get(key) if self.state == DONE else None
    return float(value) if fields_lib.is_number(value) and math.isfinite(value) else None


def sweep_entries(root: str) -> list[dict[str, Any]]:
  """(name, workdir, overrides) of every point: sweep.json's list, else each point.json dir."""
  sweep_path = os.path.join(root, SWEEP_FILE)
  if os.path.exists(sweep_path):
    sweep = files.read_json(sweep_path)
    if not isinstance(sweep, Mapping) or not isinstance(sweep.get('points'), list):
      raise UserError(f'{sweep_path} is not a sweep file (JSON with a "points" list); rerun '
                      f'the sweep launcher with --root {root}, or delete it to report the '
                      f'subdirectories that hold a {POINT_FILE}.')
    entries = []
    for entry in sweep['points']:
      if not isinstance(entry, Mapping):
        continue
      workdir = entry.get('workdir') or entry.get('name')
      if workdir:
        entries.append({'name': entry.get('name') or workdir, 'workdir': str(workdir),
                        'overrides': entry.get('overrides')})
    return entries
  entries = []
  for workdir in sorted(os.listdir(root)):
    point = files.read_json(os.path.join(root, workdir, POINT_FILE))
    if isinstance(point, Mapping):
      entries.append({'name': point.get('name') or workdir, 'workdir': workdir,
                      'overrides': point.get('overrides')})
  return entries


def load_point(root: str, name: str, workdir: str,
               overrides: Mapping[str, Any] | None = None) -> PointRecord:
  """Reads one point's files; any of them may be missing or partial."""
  path = os.path.join(root, workdir)
  point_json = files.read_json(os.path.join(path, POINT_FILE))
  point_json = point_json if isinstance(point_json, Mapping) else {}
  if overrides is None:
    overrides = point_json.get('overrides') or {}
  config = point_json.get('config')
  point = PointRecord(name=name, workdir=workdir, path=path, overrides=dict(overrides),
                      config=dict(config) if isinstance(config, Mapping) else {})
  # Only well-formed records: a hand-edited or foreign line must not stop the report.
  records = [r for r in (metrics_lib.read(path) if os.path.isdir(path) else [])
             if isinstance(r, Mapping) and fields_lib.is_number(r.get('step'))
             and fields_lib.is_number(r.get('train/loss', 0.0))]
  status = files.read_json(os.path.join(path, STATUS_FILE))
  _apply_status(point, status if isinstance(status, Mapping) else None, records)
  _apply_records(point, records)
  return point


def _apply_status(point: PointRecord, status: Mapping[str, Any] | None,
                  records: Sequence[Mapping[str, Any]]) -> None:
  log_txt = os.path.join(point.path, LOG_FILE)
  # The launcher's own sign of a start is a checkpoint; the report also sees a point's
  # metrics or log, which appear before the first checkpoint.
  started = bool(records) or os.path.exists(log_txt)
  target_steps = _int_or_none(point.config.get('train', {}).get('steps'))
  if status is None:
    point.state = status_lib.state_of(None, target_steps, started)
    point.log = log_txt if os.path.exists(log_txt) else None
    return
  word = status.get('status')
  if word in status_lib.STATES:
    point.state = status_lib.state_of(status, target_steps, started)
  else:
    point.state = FAILED
    point.error = f'{STATUS_FILE} has unknown status {word!r}'
  point.step = _int_or_none(status.get('step'))
  point.num_params = _int_or_none(status.get('num_params'))
  point.state_size = _int_or_none(status.get('state_size'))
  point.num_classes = _int_or_none(status.get('num_classes'))
  point.seconds = _float_or_none(status.get('seconds'))
  if status.get('error'):
    # One line, so that the FAILED lines of the report stay one per point.
    point.error = ' '.join(str(status['error']).split())
  point.log = status.get('log') or (log_txt if os.path.exists(log_txt) else None)
  summary = status.get('summary') if isinstance(status.get('summary'), Mapping) else {}
  point.summary, point.summary_from = dict(summary), 'status' if summary else None
  results = _final_eval(point)
  if results is not None:
    point.summary, point.summary_from = dict(results['summary']), 'eval'
  if point.state != DONE:
    return
  if not all(point.acc(k) is not None for k in ACC_KEYS):
    point.error = point.error or f'done, but no accuracy summary in {STATUS_FILE}'
  elif point.num_classes:
    point.phase = diagnose.phase(point.summary, point.num_classes)
  elif results is not None and results.get('phase') in diagnose.PHASES:
    point.phase = results['phase']


def _final_eval(point: PointRecord) -> Mapping[str, Any] | None:
  """evaluate.py's results of the point's final step: more episodes than training's eval."""
  results = files.read_json(os.path.join(point.path, 'eval', str(point.step), 'results.json'))
  if (point.step is not None and isinstance(results, Mapping)
      and isinstance(results.get('summary'), Mapping)
      and all(fields_lib.is_number(results['summary'].get(k)) for k in ACC_KEYS)
      and _int_or_none(results.get('step', point.step)) == point.step):
    return results
  return None


def _apply_records(point: PointRecord, records: Sequence[Mapping[str, Any]]) -> None:
  losses = sorted((r for r in records if 'train/loss' in r), key=lambda r: r['step'])
  point.losses = [(int(r['step']), float(r['train/loss'])) for r in losses]
  point.evals = sorted((int(r['step']), float(r['unseen/acc_first']), float(r['unseen/acc_last']))
                       for r in records
                       if all(fields_lib.is_number(r.get(k))
                              for k in ('unseen/acc_first', 'unseen/acc_last')))
  if losses:
    point.final_loss = float(losses[-1]['train/loss'])
  if point.step is None and records:
    point.step = max(int(r['step']) for r in records)
  if losses and point.num_classes:
    point.plateau_steps = diagnose.plateau_length(records, point.num_classes)
    if point.plateau_steps is not None:
      point.left_plateau = True
    elif point.state == DONE:
      point.left_plateau = False  # A running point may still leave it.


def _int_or_none(x: Any) -> int | None:
  return int(x) if fields_lib.is_number(x) and math.isfinite(x) else None


def _float_or_none(x: Any) -> float | None:
  return float(x) if fields_lib.is_number(x) else None


def read_points(root: str) -> tuple[list[PointRecord], list[str]]:
  """Every point of the sweep at `root`, and the swept fields in order of first appearance."""
  if not os.path.isdir(root):
    raise UserError(f'Sweep root {root!r} is not a directory. Run python -m launch.sweep '
                    f'--config EXPERIMENT --root {root} first, or pass the --root of a sweep.')
  entries = sweep_entries(root)
  if not entries:
    raise UserError(f'Sweep root {root!r} holds no points: no {SWEEP_FILE} with points and '
                    f'no subdirectory with a {POINT_FILE}. Run python -m launch.sweep --config '
                    f'EXPERIMENT --root {root} first, or pass the --root of a sweep.')
  points = [load_point(root, **entry) for entry in entries]
  # The sweep author's order (model.width before model.depth), not the alphabet's.
  swept = list(dict.fromkeys(f for p in points for f in p.overrides))
  return points, swept
