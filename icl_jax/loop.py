"""The training loop: the step, then the hooks due at that step. Nothing else.

Between the hooks' steps the loop only dispatches: it never reads from the device, so the
host runs ahead and the device never waits on Python (tests run the loop with JAX's
device-to-host transfer guard set to 'disallow'; the few places that do read are marked
with `reads_device`). A step's metrics stay on the device until the next log, evaluation
or save step, which fetches them all at once: that is where a run that went non-finite is
found, before anything of it is saved.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Protocol, Sequence

import jax
import numpy as np

from icl_jax import evaluator as evaluator_lib
from icl_jax import group as group_lib
from icl_jax import lease as lease_lib
from icl_jax import progress
from icl_jax import runs as runs_lib
from icl_jax import stopping


def is_due(step: int, every_steps: int, last_step: int) -> bool:
  """The one rule for periodic actions: every `every_steps` steps and at the last step."""
  return step % every_steps == 0 or step == last_step


def reads_device() -> contextlib.AbstractContextManager:
  """Marks a place that reads from the device on purpose (the transfer guard allows it)."""
  return jax.transfer_guard_device_to_host('allow')


class Hook(Protocol):
  def due(self, step: int) -> bool: ...
  def __call__(self, step: int, state: Any) -> None: ...


class Metrics:
  """Each step's metrics, kept on the device until a flush reads them all at once.

  At a flush every pending step is checked per run (a non-finite one stops that run, see
  RunDir.check_finite) and, at log steps, each live run's means since its last log are
  written. The means are taken on the host in float64 from each step's float32 values,
  as they always were, so the logs of a resumed or regrouped run match to the bit. Each
  logged run's lease notes the step (no file access here: its heartbeat thread writes it),
  which is where launchers read a running group's progress.
  """

  def __init__(self, runs: Sequence[runs_lib.RunDir], every_steps: int, total: int,
               bar: progress.Progress, start: int, leases: Sequence[lease_lib.Lease] = ()):
    self.runs, self.every, self.total, self.bar = runs, every_steps, total, bar
    self._leases = {lease.workdir: lease for lease in leases}  # Process 0 holds them.
    self._pending: list[tuple[int, dict[str, jax.Array]]] = []
    self._history: list[list[dict[str, float]]] = [[] for _ in runs]
    self._last = (time.perf_counter(), start)  # (time, step) of the last log.

  def record(self, step: int, metrics_R: dict[str, jax.Array]) -> None:
    self._pending.append((step, metrics_R))

  def due(self, step: int) -> bool:
    return is_due(step, self.every, self.total)

  def __call__(self, step: int, state: Any) -> None:
    del state
    self.flush()

  def flush(self) -> None:
    if not self._pending:
      return
    with reads_device():
      fetched = jax.device_get([m for _, m in self._pending])
    steps = [s for s, _ in self._pending]
    self._pending.clear()
    now = time.perf_counter()
    for step, metrics_R in zip(steps, fetched):
      for r, run in enumerate(self.runs):
        if run.error is None:
          m = {k: float(v[r]) for k, v in metrics_R.items()}
          if run.check_finite(step, m):
            self._history[r].append(m)
      if self.due(step):
        self._log(step, now)

  def _log(self, step: int, now: float) -> None:
    last_time, last_step = self._last
    steps_per_sec = (step - last_step) / max(now - last_time, 1e-9)
    for r, run in enumerate(self.runs):
      history = self._history[r]
      if run.error is not None or not history:
        continue
      means = {f'train/{k}': float(np.mean([h[k] for h in history])) for k in history[0]}
      run.log(step, means, steps_per_sec)
      history.clear()
      if run.workdir in self._leases:
        self._leases[run.workdir].progress(step)
      if r == 0:
        self.bar.set_postfix(loss=f'{means["train/loss"]:.4f}')
    self._last = (now, step)


class Evaluation:
  """Every live run of the group evaluated at once (vmapped over runs), then logged."""

  def __init__(self, evaluator: evaluator_lib.Evaluator, group: group_lib.Group,
               runs: Sequence[runs_lib.RunDir], metrics: Metrics, every_steps: int,
               total: int, say: Callable[[str], None] | None):
    self.evaluator, self.group, self.runs, self.metrics = evaluator, group, runs, metrics
    self.every, self.total, self.say = every_steps, total, say

  def due(self, step: int) -> bool:
    return is_due(step, self.every, self.total)

  def __call__(self, step: int, state: Any) -> None:
    self.metrics.flush()  # A run that diverged is not evaluated.
    if all(run.error is not None for run in self.runs):
      return
    with reads_device():
      summaries = self.evaluator.group_summaries(state['params'], self.group)
    for run, summary in zip(self.runs, summaries):
      if run.error is None:
        run.evaluated(step, summary)
        if self.say is not None:
          self.say(evaluator_lib.format_summary(step, summary, run.config))


class Checkpoint:
  """Saves every live run at its steps, in the background; a failed earlier save, a lost
  lease or a non-finite step stops it first."""

  def __init__(self, group: group_lib.Group, runs: Sequence[runs_lib.RunDir], metrics: Metrics,
               leases: Sequence[lease_lib.Lease], every_steps: int, total: int):
    self.group, self.runs, self.metrics, self.leases = group, runs, metrics, leases
    self.every, self.total = every_steps, total

  def due(self, step: int) -> bool:
    return is_due(step, self.every, self.total)

  def __call__(self, step: int, state: Any) -> None:
    self.metrics.flush()  # Never save a state whose step went non-finite.
    for lease in self.leases:
      lease.check()  # Never write over a trainer that took the workdir over.
    with reads_device():  # Orbax copies to the host before save() returns.
      for r, run in enumerate(self.runs):
        if run.error is None:
          run.save(step, self.group.run_state(state, r))


def run(group: group_lib.Group, state: Any, start: int, total: int, hooks: Sequence[Hook],
        metrics: Metrics, checkpoint: Checkpoint, runs: Sequence[runs_lib.RunDir],
        bar: progress.Progress, stop: stopping.StopSignals) -> tuple[Any, int, str | None]:
  """Steps from `start` to `total`, calling each hook at its steps; returns (state, the
  step reached, the stop signal that ended it early or None). A stop signal saves the
  step reached, so a resume loses nothing and stays exact; one that came during set-up
  or compilation stops before the first step, with nothing new to save."""
  if stop.before_start():
    return state, start, stop.name
  step = start
  for step in range(start + 1, total + 1):
    state, metrics_R = group.step(state)
    metrics.record(step, metrics_R)
    bar.update(1)
    if stop.requested(step):
      checkpoint(step, state)
      return state, step, stop.name
    for hook in hooks:
      if hook.due(step):
        hook(step, state)
    if all(r.error is not None for r in runs):
      break  # Nothing left to train.
  return state, step, None
