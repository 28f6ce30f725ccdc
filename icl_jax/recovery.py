"""The one recovery policy: which checkpoint of a workdir to read, and what to do with the
ones that do not read. Training (resume), evaluation and `icl_jax.load` all go through it.

  newest       the newest step a read succeeds on. A step that fails while its directory
               stays is damaged: skipped with a warning naming its step and path. A step
               whose directory vanishes within a second of the failure was rotated away by
               a trainer still writing the workdir: not damage, so the step list is read
               again (up to ROTATION_RETRIES times). UserError if every step is damaged,
               moving nothing: then a code or config mismatch is likelier than damage.
  quarantine   once an older step restored, a trainer moves the damaged newer ones to
               `<workdir>/corrupt_checkpoints/`, never deletes them: left in place they would
               keep orbax from saving their steps again (it skips saves at or below its
               latest step). Readers (evaluation, load) move nothing.
  groups       the runs of a sweep group resume from the newest step all of them can
               restore (`restore_group`): a kill between their saves can leave them one
               checkpoint apart, and training is a function of the step.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

from absl import logging
import jax
import ml_collections
import orbax.checkpoint as ocp

from icl_jax import config as config_lib
from icl_jax import files
from icl_jax import store as store_lib
from icl_jax.errors import UserError

ROTATION_RETRIES = 5


class _ShapeMismatch(UserError):
  """The checkpoint is whole, but of another model than the one to restore into."""
# How long a failed step's directory is watched for a rotation's delete to finish.
_ROTATION_GRACE_S = 1.0


class Recovery:
  """The policy over one run's Store; remembers the damaged steps it found."""

  def __init__(self, store: store_lib.Store):
    self.store = store
    self.workdir = store.workdir
    self._bad: dict[int, str] = {}  # Step -> why it failed to read, found this session.

  def read_config(self, step: int) -> ml_collections.ConfigDict:
    """The config stored with `step`; UserError naming that checkpoint (and only it) if the
    file is damaged or was edited into something that is not a valid config."""
    path = os.path.join(self.store.step_path(step), 'config', 'metadata')
    try:
      stored = self.store.restore_config(step)
      if not isinstance(stored, dict):
        raise ValueError(f'it holds a {type(stored).__name__}, not a config')
      config = config_lib.from_dict(stored)
      config_lib.validate(config)
    except Exception as e:  # pylint: disable=broad-except
      if not os.path.isdir(self.store.step_path(step)):
        raise  # Rotated away meanwhile: `newest` reads the step list again.
      why = ' '.join(str(e).split())[:store_lib.MAX_ERROR_CHARS] or type(e).__name__
      raise UserError(f'The config stored with checkpoint step {step} ({path}) cannot be '
                      f'used: {why}. Pass another --step, or restore that file.') from None
    return config

  def latest_config(self) -> tuple[int | None, ml_collections.ConfigDict | None]:
    """(step, config) of the newest checkpoint whose config reads back; (None, None) if none.
    Cheap (no arrays are read): a workdir is checked against a new config with it before
    any data is loaded."""
    found = self.newest(self.read_config)
    return (None, None) if found is None else found

  def restore_latest(
      self, abstract_state: Any) -> tuple[int, Any, ml_collections.ConfigDict] | None:
    """(step, state, config) of the newest checkpoint whose config and state restore;
    damaged newer ones are quarantined (unless the store is read-only). None without
    checkpoints."""
    def read(step):
      config = self.read_config(step)
      self._check_shapes(step, abstract_state['params'])
      return config, self.store.restore_state(step, abstract_state)

    found = self.newest(read)
    if found is None:
      return None
    step, (config, state) = found
    self._quarantine([s for s in self._bad if s > step])
    return step, state, config

  def _check_shapes(self, step: int, abstract_params: Any) -> None:
    """UserError if the parameters at `step` have other shapes than `abstract_params`: the
    checkpoint is whole, but the model it would restore into changed (the dataset's classes
    or features, or the code) since the run began. Raised at once, never taken for damage."""
    try:
      stored = self.store.param_shapes(step)
    except Exception:  # pylint: disable=broad-except
      return  # Unreadable metadata: damage, which the restore that follows finds.
    expected = {store_lib.key_path(path): tuple(leaf.shape)
                for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]}
    differ = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
    if not differ:
      return
    shown = '; '.join(f'{k}: {stored.get(k, "absent")} there, {expected.get(k, "absent")} now'
                      for k in differ[:3])
    raise _ShapeMismatch(
        f'The checkpoints in {self.store.directory} hold a model of other shapes than this '
        f'config builds now ({shown}{"; ..." if len(differ) > 3 else ""}): its dataset (the '
        f'number of classes or features) or the code changed since the run began. They are '
        f'kept as they are: resume with the data the run was trained on, or train anew in '
        f'another --workdir.')

  def params(self, abstract_params: Any, step: int | None = None) -> tuple[int, Any]:
    """(step, parameters) for evaluation and `icl_jax.load`: at `step` (UserError if they do
    not restore), or with step=None from the newest checkpoint whose parameters read back.
    Parameters only: a third of the bytes of the whole state, so a read outruns a rotating
    trainer."""
    def read(s):
      self._check_shapes(s, abstract_params)
      return self.store.restore_params(s, abstract_params)

    if step is None:
      found = self.newest(read)
      if found is None:
        raise UserError(f'Workdir {self.workdir!r} has no complete checkpoint (any more).')
      return found
    try:
      return step, read(step)
    except _ShapeMismatch:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise UserError(f'The parameters of checkpoint step {step} in {self.workdir!r} do not '
                      f'restore ({type(e).__name__}: {str(e).splitlines()[0][:200]}). Pass '
                      f'another step, or check that the workdir was copied whole.') from None

  def newest(self, read: Callable[[int], Any]) -> tuple[int, Any] | None:
    """(step, read(step)) for the newest step that `read` succeeds on (see the module
    docstring); None without steps."""
    for _ in range(ROTATION_RETRIES):
      rotated = False
      for step in sorted(self.store.steps(), reverse=True):
        if step in self._bad:
          continue
        try:
          return step, read(step)
        except _ShapeMismatch:
          raise
        except Exception as e:  # pylint: disable=broad-except
          if self._going_away(step):
            logging.info('Checkpoint step %d of %s went away while it was read (rotated by '
                         'a running trainer); reading the newest again.', step, self.workdir)
            rotated = True
            break
          self._mark_bad(step, e)  # Orbax and tensorstore raise many types on damaged files.
      if not rotated:
        self._raise_if_all_bad()
        return None
      self.store.reload()
    raise UserError(f'The checkpoints of {self.workdir} were rotated away {ROTATION_RETRIES} '
                    f'times while being read: a trainer saves there faster than they can be '
                    f'read. Raise its config.train.keep_checkpoints, or read after it is done.')

  def _going_away(self, step: int) -> bool:
    """Whether a step that failed to read is being deleted (rotated) rather than damaged:
    its directory vanishes within a second. A rotation removes files one by one, so a
    reader can fail on a half-deleted step that still exists for a moment."""
    deadline = time.monotonic() + _ROTATION_GRACE_S
    while True:
      if not os.path.isdir(self.store.step_path(step)):
        return True
      if time.monotonic() > deadline:
        return False
      time.sleep(0.05)

  def _mark_bad(self, step: int, error: Exception) -> None:
    if step in self._bad:
      return
    why = f'{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}'
    self._bad[step] = why[:store_lib.MAX_ERROR_CHARS]
    logging.warning('Checkpoint step %d at %s is corrupt or incomplete and is skipped; '
                    'falling back to an earlier checkpoint. (%s)',
                    step, self.store.step_path(step), self._bad[step])

  def _raise_if_all_bad(self) -> None:
    if not self._bad:
      return
    details = '; '.join(f'step {s} ({why})' for s, why in sorted(self._bad.items()))
    raise UserError(
        f'No checkpoint in {self.store.directory} restores: {details}. Nothing was moved or '
        f'deleted. If the checkpoints are damaged, move them away to start afresh, or use a '
        f'new --workdir; if they come from another version of icl_jax, restore with that '
        f'version.')

  def _quarantine(self, bad_steps: list[int]) -> None:
    """Moves damaged steps out of orbax's sight; on a shared disk process 0 moves them."""
    if self.store.read_only or not bad_steps:
      return
    target_dir = store_lib.corrupt_directory(self.workdir)
    if jax.process_index() == 0:
      os.makedirs(target_dir, exist_ok=True)
      for step in sorted(bad_steps):
        target = os.path.join(target_dir, str(step))
        suffix = 1
        while os.path.exists(target):  # The same step can be damaged in two runs.
          target = os.path.join(target_dir, f'{step}.{suffix}')
          suffix += 1
        os.rename(self.store.step_path(step), target)
        logging.warning('Moved corrupt checkpoint step %d from %s to %s (kept for inspection; '
                        'delete it when you no longer need it).',
                        step, self.store.step_path(step), target)
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes('icl_jax_quarantine_corrupt_checkpoints')
    self.store.reload()  # Orbax's cached step list still holds the moved steps.


def restore_group(recoveries: Sequence[Recovery],
                  abstract_state: Any) -> tuple[list[Any], int] | None:
  """(one state per run, step) at the newest step every run of a group can restore; None:
  start afresh. A run one checkpoint ahead of the others is restored at their step
  (training is a function of the step, so redoing it reproduces the newer checkpoint)."""
  found = [r.restore_latest(abstract_state) if r.store.latest_step() is not None else None
           for r in recoveries]
  if all(f is None for f in found):
    return None
  start = min(f[0] if f is not None else 0 for f in found)
  states = []
  for recovery, f in zip(recoveries, found):
    if start == 0:
      break
    if f[0] == start:
      states.append(f[1])
      continue
    try:
      states.append(recovery.store.restore_state(start, abstract_state))
    except Exception:  # pylint: disable=broad-except
      break  # Not kept any more; handled below.
  if len(states) == len(recoveries):
    return states, start
  logging.warning('The runs of this group have no checkpoint step in common (latest: %s); '
                  'the group restarts from step 0 and reproduces them.',
                  ', '.join(str(f[0] if f else None) for f in found))
  return None


def open_run(workdir: str, step: int | None = None
             ) -> tuple[Recovery, int, ml_collections.ConfigDict]:
  """(the policy over a read-only store, step, stored config) of a training run's workdir,
  for readers. step=None: the newest checkpoint whose config reads back. UserError if the
  workdir holds no checkpoint, or none at `step`. Close with `recovery.store.close()`."""
  files.local(workdir, 'Workdir')
  if not os.path.isdir(store_lib.directory(workdir)):
    raise UserError(f'No checkpoints in {workdir!r}: expected {store_lib.directory(workdir)}. '
                    f'Pass the --workdir of a training run.')
  recovery = Recovery(store_lib.Store(workdir, read_only=True))
  available = recovery.store.steps()
  if not available:
    recovery.store.close()
    raise UserError(f'Workdir {workdir!r} has no complete checkpoint yet.')
  if step is None:
    step, config = recovery.latest_config()
  elif step not in available:
    recovery.store.close()
    raise UserError(f'Workdir {workdir!r} has no checkpoint at step {step}; available steps: '
                    f'{", ".join(map(str, sorted(available)))}.')
  else:
    config = recovery.read_config(step)
  return recovery, step, config
