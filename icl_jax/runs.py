"""One run as the host sees it: its config, its workdir and everything that writes there.

A `RunDir` holds a run's checkpoint store (through the recovery policy), its metric writer,
its learning-rate schedule (for the logs) and, once it stops early, why. Training keeps one
per run of a group; what happens to one run (it diverges, its workdir is refused) never
touches another's.
"""

from __future__ import annotations

import math
import os
import shlex
from typing import Any, Mapping

from absl import logging
import jax
import ml_collections

from icl_jax import evaluator as evaluator_lib
from icl_jax import fields as fields_lib
from icl_jax import files
from icl_jax import metrics as metrics_lib
from icl_jax import recovery as recovery_lib
from icl_jax import status as status_lib
from icl_jax import steps
from icl_jax import store as store_lib
from icl_jax.errors import UserError


def check_workdir(workdir: str) -> None:
  """UserError unless `workdir` is a path a run may live in and write: a valid path
  (files.local), a directory (or nothing yet), not inside another run, with none of a
  run's files replaced by something else (status.check_workdir_layout), writable."""
  if not isinstance(workdir, str) or not workdir.strip():
    raise UserError(f'The workdir is empty ({workdir!r}); pass --workdir=DIR, the directory '
                    'for this run\'s checkpoints and metrics.')
  files.local(workdir, 'Workdir')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f'Workdir {workdir!r} is a file, not a directory; pass a directory '
                    '(new or of this run) as --workdir.')
  status_lib.check_workdir_layout(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_probe_{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise UserError(f'Cannot write to workdir {workdir!r} ({e.strerror}). '
                    f'Pass a --workdir you can write to, with free disk space.') from None


class RunDir:
  """A run's workdir, opened for training: `open` checks it, `begin` starts writing there."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               recovery: recovery_lib.Recovery):
    self.config = config
    self.workdir = os.path.abspath(workdir)
    self.recovery = recovery
    self.store = recovery.store
    self.error: tuple[int, str] | None = None  # (step, why) once it stopped early.
    self.summary: dict[str, float] = {}  # The latest evaluation.
    self.writer: metrics_lib.MetricWriter | None = None
    self._lr = None

  @classmethod
  def open(cls, config: ml_collections.ConfigDict, workdir: str, index: int = 0) -> RunDir:
    """The run of `config` in `workdir`, after checking that the workdir is writable and
    holds nothing but this run (UserError otherwise): cheap, nothing is loaded or
    compiled. `index`: the run's place in its group (names its save barriers)."""
    check_workdir(workdir)
    store = store_lib.Store(workdir, keep=config.train.keep_checkpoints,
                            barrier_key=f'icl_jax_run{index}')
    recovery = recovery_lib.Recovery(store)
    try:
      latest, stored_config = recovery.latest_config()  # Newest readable; (None, None) if fresh.
    except BaseException:
      store.close()
      raise
    if latest is not None:
      bad = fields_lib.incompatible_fields(stored_config, config)
      if bad:
        store.close()
        # A field added since that run began: it ran with the old behaviour, which the
        # new default changed; say how to resume it as it was.
        older = [f'--config.{f}={fields_lib.get(stored_config, f)}' for f in bad
                 if f in fields_lib.ADDED_FIELDS]
        hint = f' (to resume it as it ran: {" ".join(older)})' if older else ''
        raise UserError(
            f'Workdir {workdir!r} holds a run (checkpoint step {latest}) whose config differs '
            f'in {", ".join(bad)}. Refusing to overwrite it: use a new --workdir, or the same '
            f'config to resume{hint}.')
    return cls(config, workdir, recovery)

  # --- Training. ---
  def begin(self, start: int, schedule: steps.Schedule) -> None:
    """Writes config.json (readable before the first checkpoint) and opens the metrics;
    records past `start` describe steps that will be redone and are dropped."""
    if jax.process_index() == 0:
      files.write_json(os.path.join(self.workdir, status_lib.CONFIG_FILE), self.config.to_dict())
    self.writer = metrics_lib.MetricWriter(self.workdir, resume_step=start, config=self.config)
    self._lr = steps.learning_rate(schedule, self.config.train.lr)

  def check_finite(self, step: int, m: Mapping[str, float]) -> bool:
    """Whether a step's metrics are finite; if not, the run has diverged: it says so in
    its status now, not at the end (a launcher that finds the group killed later must not
    regroup this run with the others, which it would hold back at its last step)."""
    if all(math.isfinite(v) for v in m.values()):
      return True
    good = self.store.latest_step()
    self.error = (step, (
        f'Training diverged at step {step}: ' + ', '.join(f'{k}={v}' for k, v in m.items()) +
        '. ' + (f'The last good checkpoint (step {good}) in {self.store.directory} is kept; '
                if good is not None else 'No checkpoint was written yet; ') +
        'lower config.train.lr, raise config.train.eps or set config.train.grad_clip, then '
        'rerun (a resumable config change needs a new --workdir).'))
    write_status(status_lib.RunResult(self.workdir, step, {}, self.error[1]))
    return False

  def log(self, step: int, means: dict[str, float], steps_per_sec: float) -> None:
    means['train/steps_per_sec'] = steps_per_sec
    means['train/lr'] = float(self._lr(step - 1))  # That made this step.
    self.writer.write(step, means)

  def evaluated(self, step: int, summary: dict[str, float]) -> None:
    self.summary = summary
    self.writer.write(step, summary)

  def save(self, step: int, state: steps.State) -> None:
    self.store.save(step, state, self.config.to_dict())

  def close(self, finished: bool) -> None:
    """Closes the metrics (the HParams session ends as a success when `finished`) once the
    saves in flight are whole, so the last good checkpoint is; a failure of theirs is
    reported already, or an exception is on its way."""
    if self.writer is not None:
      self.writer.close(finished=finished and self.error is None)
      self.writer = None
    try:
      self.store.wait()
    except store_lib.SaveFailed:
      pass

  def result(self, step: int, stop_signal: str | None = None,
             saved: bool = True) -> status_lib.RunResult:
    """How the run ended: its error, a stop at `step` by `stop_signal` (`saved`: that step
    is saved; not for a stop before the first step), or done."""
    if self.error is not None:
      return status_lib.RunResult(self.workdir, self.error[0], {}, self.error[1])
    if stop_signal is not None:
      return status_lib.RunResult(self.workdir, step, {}, preempted=True,
                                  stop_signal=stop_signal, saved=saved)
    return status_lib.RunResult(self.workdir, step, self.summary)

  # --- A run trained already. ---
  def finished(self, restored_step: int) -> status_lib.RunResult | None:
    """The stored result of a run trained to at least config.train.steps: its status says
    done at `restored_step`, the newest checkpoint that restored. Else None."""
    return finished_result(self.config, self.workdir, restored_step)


def finished_result(config: ml_collections.ConfigDict, workdir: str,
                    restored_step: int) -> status_lib.RunResult | None:
  status = status_lib.read(workdir)
  if not status or status.get('status') != status_lib.DONE:
    return None
  step, summary = status.get('step'), status.get('summary')
  if (not isinstance(step, int) or isinstance(step, bool) or step < config.train.steps
      or step != restored_step or not isinstance(summary, dict)):
    return None  # A hand-edited or stale status, or a damaged last checkpoint: train on.
  return status_lib.RunResult(os.path.abspath(workdir), step, summary)


def finished_lines(config: ml_collections.ConfigDict,
                   result: status_lib.RunResult) -> list[str]:
  """What a rerun of a finished run prints: that, its final summary, and its files."""
  asked = config.train.steps
  why = (f'trained to step {result.step}, more than the {asked} steps asked for; nothing to '
         'train (its checkpoints are kept as they are)' if result.step > asked else
         f'already trained to step {result.step}; nothing to train')
  lines = [f'icl_jax: {result.workdir} is {why}. Raise --config.train.steps to train on.']
  try:
    lines.append(evaluator_lib.format_summary(result.step, result.summary, config))
  except (KeyError, TypeError, ValueError):
    pass  # A summary without the usual fields (hand-edited): the files still say it all.
  return lines + [results_line(result.workdir)]


def results_line(workdir: str) -> str:
  """Where a finished run's results are, and how to meta-test it."""
  return (f'results: {os.path.join(workdir, status_lib.STATUS_FILE)}, metrics.jsonl, tb/; '
          f'meta-test it with: python -m icl_jax.evaluate --workdir {shlex.quote(workdir)}')


def write_status(result: status_lib.RunResult, **extra: Any) -> None:
  """status.json from process 0; a full disk is warned about, not raised: the error being
  reported matters more than its record."""
  if jax.process_index() != 0:
    return
  try:
    status_lib.write(result, **extra)
  except OSError as e:
    logging.warning('Could not write %s (%s).', status_lib.STATUS_FILE, e.strerror or e)
