"""summary.csv: one row per point with its state, swept fields, accuracies, phase, plateau."""

from __future__ import annotations

from typing import Any, Sequence

from icl_jax.report.grid import format_num_tasks
from icl_jax.report.points import ACC_KEYS, BATCH_SIZE, NUM_TASKS, SEED
from icl_jax.report.points import PointRecord

CSV_FILE = 'summary.csv'
# Every point's training curve: a row per logged step (loss) or evaluation (accuracies).
CURVES_FILE = 'training_curves.csv'
CURVE_KEYS = ('train/loss', 'unseen/acc_first', 'unseen/acc_last')
# Shown in every CSV whether swept or not: they say what each point was.
FIXED_FIELDS = ('model.name', 'model.width', 'model.depth', 'num_params', 'state_size', NUM_TASKS,
                SEED, BATCH_SIZE)


def csv_columns(swept: Sequence[str]) -> list[str]:
  fields = list(swept) + [f for f in FIXED_FIELDS if f not in swept]
  return (['name', 'status', 'workdir'] + fields + ['step', *ACC_KEYS, 'summary_from', 'phase',
          'plateau_steps', 'left_plateau', 'train/loss', 'seconds', 'log', 'error'])


def csv_row(point: PointRecord, columns: Sequence[str]) -> dict[str, Any]:
  fixed = {'name': point.name, 'status': point.state, 'workdir': point.workdir,
           'step': point.step, 'summary_from': point.summary_from, 'phase': point.phase,
           'plateau_steps': point.plateau_steps, 'left_plateau': point.left_plateau,
           'train/loss': point.final_loss, 'seconds': point.seconds, 'log': point.log,
           'error': point.error}
  # Failed points keep whatever summary they wrote: it says how far they got.
  fixed.update({k: point.summary.get(k) for k in ACC_KEYS})
  row = {}
  for column in columns:
    value = fixed[column] if column in fixed else point.get(column)
    if column == NUM_TASKS and value is not None:
      value = format_num_tasks(value)
    row[column] = '' if value is None else value
  return row


def curve_columns(swept: Sequence[str]) -> list[str]:
  return ['name', *swept, 'step', *CURVE_KEYS]


def curve_rows(point: PointRecord, swept: Sequence[str]) -> list[list[Any]]:
  """The rows of `point` in training_curves.csv, by step; blank where a step has no value."""
  by_step = {}
  for step, loss in point.losses:
    by_step.setdefault(step, {})['train/loss'] = loss
  for step, first, last in point.evals:
    by_step.setdefault(step, {}).update({'unseen/acc_first': first, 'unseen/acc_last': last})
  head = [point.name] + [point.get(f) for f in swept]
  return [head + [step] + [values.get(k) for k in CURVE_KEYS]
          for step, values in sorted(by_step.items())]
