"""Metric output: JSON lines (the record) and TensorBoard events (for viewing), process 0 only."""

from __future__ import annotations

import json
import math
import os
from typing import Mapping

from icl_jax import files

METRICS_FILE = 'metrics.jsonl'


class MetricWriter:
  """Appends `{"step": s, name: value, ...}` lines to `<workdir>/metrics.jsonl`."""

  def __init__(self, workdir: str, resume_step: int = 0):
    # Imported here: readers of metrics.jsonl (the sweep report) must not pay for JAX.
    import jax  # pylint: disable=g-import-not-at-top
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    # Lines past the checkpoint we resume from describe steps that will be redone; drop
    # them so the log reads as one uninterrupted run.
    _truncate_after(self.path, resume_step)
    from tensorboardX import SummaryWriter  # Imported here: only process 0 needs it.
    self._tb = SummaryWriter(os.path.join(workdir, 'tb'))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for name, value in scalars.items():
      if math.isfinite(float(value)):
        self._tb.add_scalar(name, float(value), int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read(workdir: str) -> list[dict]:
  """All records of a run, oldest first."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue  # A line cut short by a kill mid-write; the steps it held get redone.
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
