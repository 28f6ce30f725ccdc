"""Metric output: JSON lines (the record) and TensorBoard events (for viewing), process 0 only.

TensorBoard gets, in `<workdir>/tb/`: the scalars; the config as text (tag `config`); and
the run's hyperparameters in the HParams plugin's own summary format (tensorboardX writes
it), so that a sweep root opened in TensorBoard can be filtered and compared by its swept
fields, with the final seen/unseen accuracies as the metrics (HPARAM_METRICS).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from icl_jax import fields as fields_lib
from icl_jax import files

METRICS_FILE = 'metrics.jsonl'
TB_DIR = 'tb'
# The scalars the HParams dashboard lists against each run's hyperparameters.
HPARAM_METRICS = ('seen/acc_last', 'unseen/acc_last', 'seen/acc_first', 'unseen/acc_first',
                  'train/loss')
# Shown as hyperparameters for every run, besides the fields a run changed from the
# defaults: what a sweep varies most.
HPARAM_FIELDS = ('seed', 'model.name', 'model.width', 'model.depth', 'model.num_heads',
                 'task.family', 'task.num_tasks', 'task.prompt', 'train.lr',
                 'train.batch_size', 'train.steps')


class MetricWriter:
  """Appends `{"step": s, name: value, ...}` lines to `<workdir>/metrics.jsonl`."""

  def __init__(self, workdir: str, resume_step: int = 0, config: Any = None):
    # Imported here: readers of metrics.jsonl (the sweep report) must not pay for JAX.
    import jax  # pylint: disable=g-import-not-at-top
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    self._end = None  # The HParams session's end, written when the run completes.
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    # Lines past the checkpoint we resume from describe steps that will be redone; drop
    # them so the log reads as one uninterrupted run.
    _truncate_after(self.path, resume_step)
    self._tb = tensorboard_writer(os.path.join(workdir, TB_DIR))
    if config is not None:
      self._tb.add_text('config', config_markdown(config), resume_step)
      from tensorboardX.summary import hparams  # pylint: disable=g-import-not-at-top
      experiment, start, self._end = hparams(hparam_values(config),
                                             dict.fromkeys(HPARAM_METRICS, 0.0))
      for summary in (experiment, start):
        self._tb.file_writer.add_summary(summary)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for name, value in scalars.items():
      if math.isfinite(float(value)):
        self._tb.add_scalar(name, float(value), int(step))

  def close(self, finished: bool = False) -> None:
    """finished: the run reached its last step (the HParams session ends as a success)."""
    if self._tb is not None:
      if finished and self._end is not None:
        self._tb.file_writer.add_summary(self._end)
      self._tb.close()
      self._tb = None


def tensorboard_writer(logdir: str):
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  return SummaryWriter(logdir)


def hparam_values(config: Any) -> dict[str, bool | int | float | str]:
  """A run's hyperparameters for the HParams dashboard: HPARAM_FIELDS and every field the
  run changed from the defaults, as the numbers, strings and booleans it accepts."""
  # Imported here: the sweep report reads metrics without the config's defaults.
  from icl_jax import banner  # pylint: disable=g-import-not-at-top
  flat = fields_lib.flatten(config)
  chosen = {k: flat[k] for k in HPARAM_FIELDS if k in flat}
  chosen.update(banner.changed_fields(config))
  return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
          for k, v in sorted(chosen.items()) if v is not None}


def config_markdown(config: Any) -> str:
  """The config as TensorBoard's text plugin shows it: a JSON code block."""
  as_dict = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
  return '```\n' + json.dumps(as_dict, indent=2, sort_keys=True, default=str) + '\n```'


def read(workdir: str) -> list[dict]:
  """All records of a run, oldest first."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  records = []
  # errors='replace': a line of binary garbage is skipped like any foreign line.
  with open(path, encoding='utf-8', errors='replace') as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue  # A line cut short by a kill mid-write; the steps it held get redone.
      step = record.get('step') if isinstance(record, dict) else None
      if isinstance(step, int) and not isinstance(step, bool):
        records.append(record)
      # Anything else (a note, a hand-edited line) is not a record of ours: skipped.
  return records


def _truncate_after(path: str, step: int) -> None:
  if not os.path.exists(path):
    return
  records = read(os.path.dirname(path))
  kept = [r for r in records if r['step'] <= step]
  # A last line cut by a kill mid-write would swallow the next record appended to it.
  if len(kept) == len(records) and _ends_with_newline(path):
    return
  with files.atomic_write(path) as f:
    f.writelines(json.dumps(r) + '\n' for r in kept)


def _ends_with_newline(path: str) -> bool:
  with open(path, 'rb') as f:
    if f.seek(0, os.SEEK_END) == 0:
      return True  # Empty: nothing to cut.
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b'\n'
