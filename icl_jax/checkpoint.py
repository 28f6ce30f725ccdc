"""The only module that talks to orbax.

A checkpoint is `<workdir>/checkpoints/<step>/` with two items: `state` (the train state
pytree: step, params, optimizer state) and `config` (JSON). Orbax writes each step to a
temporary directory (`<step>.orbax-checkpoint-tmp`, which orbax never lists as a step) and
renames it when complete, so a kill at any moment leaves the previous complete checkpoint as
the latest restorable one.

A checkpoint damaged after the fact (a file removed or truncated, an item missing) is found
by `restore_latest`, which falls back to the newest checkpoint that restores completely. The
damaged one is moved to `<workdir>/corrupt_checkpoints/`, never deleted: left in place it
would keep orbax from saving its step again (orbax skips saves at or below its latest step).
"""

from __future__ import annotations

import logging as py_logging
import os
import re
import shutil
import sys
import time
from typing import Any, Callable

from absl import logging
import jax
import ml_collections
import orbax.checkpoint as ocp

from icl_jax import config as config_lib
from icl_jax import files
from icl_jax import status as status_lib
from icl_jax.errors import UserError

_ITEMS = ('state', 'config')
CORRUPT_DIRNAME = 'corrupt_checkpoints'
# Restore errors are whole tensorstore specs; the first line and this many characters name
# the broken file.
_MAX_ERROR_CHARS = 300
# Times a reader starts again from the newest step after the one it read was rotated away.
_MAX_ROTATION_RETRIES = 5
# How long a failed step's directory is watched for a rotation's delete to finish.
_ROTATION_GRACE_S = 1.0
_abandoned_reads_silenced = False  # The hooks chain, so install them once per process.
_read_only_notices_quiet = False


def _silence_abandoned_reads() -> None:
  """Drops the noise of a failed restore, once per process.

  When one array of a damaged checkpoint fails to read, orbax closes its event loop while
  tensorstore still completes the other reads; each late completion then prints an
  'Event loop is closed' traceback or a 'Task exception was never retrieved' log, a wall
  of text after the one warning that matters. Only those two messages are dropped.
  """
  global _abandoned_reads_silenced
  if _abandoned_reads_silenced:
    return
  _abandoned_reads_silenced = True
  previous_hook = sys.unraisablehook

  def hook(unraisable):
    e = unraisable.exc_value
    if not (isinstance(e, RuntimeError) and str(e) == 'Event loop is closed'):
      previous_hook(unraisable)

  sys.unraisablehook = hook

  def is_kept(record: py_logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (message.startswith('Task exception was never retrieved')
                and 'async_deserialize' in message)

  py_logging.getLogger('asyncio').addFilter(is_kept)


def _quiet_read_only_notices() -> None:
  """Drops orbax's two warnings on every read-only manager (that it will not save, and that
  the directory is read-only): a reader asked for exactly that. Once per process."""
  global _read_only_notices_quiet
  if _read_only_notices_quiet:
    return
  _read_only_notices_quiet = True
  notices = ('CheckpointManagerOptions.read_only=True', 'Given directory is read only')
  py_logging.getLogger('absl').addFilter(
      lambda record: not record.getMessage().startswith(notices))


def _listing_retried(list_steps: Callable[[], Any]) -> Any:
  """list_steps(), again if a step vanished while orbax listed the steps.

  Orbax lists the step directories, then stats each one: a trainer rotating a step away
  in between makes the stat raise FileNotFoundError, or NotADirectoryError where orbax
  asks "exists?" and then "a directory?" and the step goes between the two. The listing is
  simply taken again; a step that really is a file fails every time and raises.
  """
  for attempt in range(_MAX_ROTATION_RETRIES):
    try:
      return list_steps()
    except (FileNotFoundError, NotADirectoryError):
      if attempt == _MAX_ROTATION_RETRIES - 1:
        raise
      time.sleep(0.05)


def _open_manager(path: str, options: ocp.CheckpointManagerOptions) -> ocp.CheckpointManager:
  return _listing_retried(
      lambda: ocp.CheckpointManager(path, options=options, item_names=_ITEMS))


def directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), status_lib.CHECKPOINT_DIR)


def corrupt_directory(workdir: str) -> str:
  """Where damaged checkpoints are moved: outside `checkpoints/`, so orbax never sees them."""
  return os.path.join(os.path.abspath(workdir), CORRUPT_DIRNAME)


class SaveFailed(UserError):
  """A checkpoint could not be written; the message says where, why and what is kept."""

  def __init__(self, message: str, step: int | None = None):
    super().__init__(message)
    self.step = step  # The step whose save failed.


def _quiet_background_save_errors() -> None:
  """Drops orbax's own report of a failed background save (an error line and tracebacks
  per handler): Checkpointer.save and wait raise SaveFailed for it, in one line."""
  if getattr(_quiet_background_save_errors, 'done', False):
    return
  _quiet_background_save_errors.done = True
  _silence_abandoned_reads()  # Tensorstore writes completing after orbax closed its loop.
  notices = ('in background save thread', '_SignalingThread.run() raised an exception',
             'Save Finalize thread')
  py_logging.getLogger('absl').addFilter(
      lambda record: not any(n in record.getMessage() for n in notices))
  py_logging.getLogger('asyncio').addFilter(
      lambda record: not ('was never retrieved' in record.getMessage()
                          and '.orbax-checkpoint-tmp' in record.getMessage()))


class Checkpointer:
  """Saves and restores train states with their config."""

  def __init__(self, workdir: str, keep: int | None = None, read_only: bool = False,
               barrier_key: str | None = None):
    """barrier_key: unique among the Checkpointers that save at once (a sweep group's
    runs). Orbax names its cross-process barriers by step, so two runs saving step 20
    together on several processes would meet at one barrier and fail."""
    self.workdir = os.path.abspath(workdir)
    self.directory = directory(workdir)
    self.read_only = read_only
    self._saving: int | None = None  # The step of the newest save started.
    self._bad: dict[int, str] = {}  # Step -> why it failed to restore, found this session.
    if read_only:
      _quiet_read_only_notices()  # Before the options: they warn too.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        # Saving overlaps with training; the device-to-host copy happens before save()
        # returns, so donating the state to the next step is safe.
        enable_async_checkpointing=True,
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            barrier_sync_key_prefix=barrier_key))
    self._manager = _open_manager(self.directory, options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, config: ml_collections.ConfigDict) -> None:
    """Starts saving `step` in the background; SaveFailed if it, or the save before it (whose
    error only shows now), could not be written (a full disk, a lost mount)."""
    _quiet_background_save_errors()
    if self._saving is not None:
      # Orbax's save waits for the previous one anyway; waiting here first reports its
      # failure as that step's, not this one's.
      self.wait()
    self._saving = step
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          config=ocp.args.JsonSave(config.to_dict())))
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_failed(e) from None

  def check(self) -> None:
    """SaveFailed if a background save has failed by now; cheap, so a single-process
    training loop asks every step and stops at once rather than at the next save."""
    if self._saving is None:
      return
    try:
      self._manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_failed(e) from None

  def _save_failed(self, error: BaseException) -> 'SaveFailed':
    """The one-line error of a failed save, once orbax's partial directories are removed."""
    chain = [error]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and nxt not in chain:
      chain.append(nxt)
    text = ' '.join(' '.join(str(e).split()) for e in chain)
    os_error = next((e for e in chain if isinstance(e, OSError)), None)
    code = re.search(r"os_error_code='?(\d+)", text)  # Tensorstore's OSErrors: ValueErrors.
    if code:
      cause = os.strerror(int(code.group(1)))
    elif os_error is not None:
      cause = f'{os_error.strerror or os_error}'
    else:
      cause = ' '.join(str(error).split())[:_MAX_ERROR_CHARS] or type(error).__name__
    removed = []
    try:
      for name in os.listdir(self.directory):
        if '.orbax-checkpoint-tmp' in name:
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
          removed.append(name)
    except OSError:
      pass
    try:
      free = f'{shutil.disk_usage(self.directory).free / 2**20:.1f} MB free there now'
    except OSError:
      free = 'free space unknown'
    good = status_lib.latest_checkpoint_step(self.workdir)
    return SaveFailed(
        f'Saving checkpoint step {self._saving} to {self.directory} failed: {cause} '
        f'({free}). ' + (f'The last good checkpoint, step {good}, is kept; '
                         if good else 'No checkpoint was saved before; ') +
        ('the partial one was removed. ' if removed else '') +
        'Free some space (or move the workdir) and rerun the same command to resume.',
        self._saving)

  def restore_state(self, step: int, abstract_state: Any) -> Any:
    """Restores onto the shardings carried by `abstract_state` (any mesh, any device count)."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
    return restored.state

  def restore_params(self, step: int, abstract_params: Any) -> Any:
    """Only the parameters of the state saved at `step` (the optimizer state, twice their
    size, is never read), onto the shardings carried by `abstract_params`."""
    _silence_abandoned_reads()  # A damaged file: as in restore_latest.
    # A manager binds one handler per item on first use, and a partial restore needs
    # another handler than the full one: a manager of its own keeps both usable here.
    _quiet_read_only_notices()
    manager = _open_manager(self.directory, ocp.CheckpointManagerOptions(read_only=True))
    try:
      restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item={'params': abstract_params},
          restore_args=ocp.checkpoint_utils.construct_restore_args({'params': abstract_params}),
          partial_restore=True)))
    finally:
      manager.close()
    return restored.state['params']

  def restore_config(self, step: int) -> ml_collections.ConfigDict:
    """The config stored with `step`; UserError naming that checkpoint (and only it) if the
    file is damaged or was edited into something that is not a valid config."""
    path = os.path.join(self.step_path(step), 'config', 'metadata')
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
      if not isinstance(restored.config, dict):
        raise ValueError(f'it holds a {type(restored.config).__name__}, not a config')
      config = config_lib.from_dict(restored.config)
      config_lib.validate(config)
    except Exception as e:  # pylint: disable=broad-except
      if not os.path.isdir(self.step_path(step)):
        raise  # Rotated away meanwhile: the caller reads the step list again.
      why = ' '.join(str(e).split())[:_MAX_ERROR_CHARS] or type(e).__name__
      raise UserError(f'The config stored with checkpoint step {step} ({path}) cannot be '
                      f'used: {why}. Pass another --step, or restore that file.') from None
    return config

  def step_path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def latest_config(self) -> tuple[int | None, ml_collections.ConfigDict | None]:
    """(step, config) of the newest checkpoint whose config reads back; (None, None) if none.

    Cheap (no arrays are read), so the workdir can be checked against a new config before
    any data is loaded. Raises UserError if checkpoints exist but no config reads back.
    """
    found = self.newest(self.restore_config)
    return (None, None) if found is None else found

  def restore_latest(
      self, abstract_state: Any) -> tuple[int, Any, ml_collections.ConfigDict] | None:
    """(step, state, config) of the newest checkpoint that restores completely.

    Verifies by restoring: a checkpoint whose state or config fails to restore is skipped
    with a warning naming its step and path, and (unless read-only) moved to
    `<workdir>/corrupt_checkpoints/` once an older one has restored, so that training can
    save its step again. Returns None in a workdir without checkpoints; raises UserError
    (moving nothing) when none of them restores, because then the cause is more likely a
    code or config mismatch than damage.
    """
    _silence_abandoned_reads()  # Before the first try: the noise starts before it raises.
    found = self.newest(lambda step: (self.restore_config(step),
                                      self.restore_state(step, abstract_state)))
    if found is None:
      return None
    step, (config, state) = found
    self._quarantine([s for s in self._bad if s > step])
    return step, state, config

  def newest(self, read: Callable[[int], Any]) -> tuple[int, Any] | None:
    """(step, read(step)) for the newest step that `read` succeeds on; None without steps.

    A step that fails while its directory is still there is damaged: skipped with a
    warning (and remembered). A step whose directory is gone after the failure was rotated
    away by a trainer still writing this workdir (or removed by hand): not damage, so the
    step list is read again and the newest step tried anew. UserError if every step is
    damaged.
    """
    for _ in range(_MAX_ROTATION_RETRIES):
      rotated = False
      for step in sorted(self.all_steps(), reverse=True):
        if step in self._bad:
          continue
        try:
          return step, read(step)
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
      _listing_retried(self._manager.reload)
    raise UserError(f'The checkpoints of {self.workdir} were rotated away {_MAX_ROTATION_RETRIES} '
                    f'times while being read: a trainer saves there faster than they can be '
                    f'read. Raise its config.train.keep_checkpoints, or read after it is done.')

  def _going_away(self, step: int) -> bool:
    """Whether a step that failed to read is being deleted (rotated) rather than damaged:
    its directory vanishes within a second. A rotation removes files one by one, so a
    reader can fail on a half-deleted step that still exists for a moment."""
    deadline = time.monotonic() + _ROTATION_GRACE_S
    while True:
      if not os.path.isdir(self.step_path(step)):
        return True
      if time.monotonic() > deadline:
        return False
      time.sleep(0.05)

  def _mark_bad(self, step: int, error: Exception) -> None:
    if step in self._bad:
      return
    why = f'{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}'
    self._bad[step] = why[:_MAX_ERROR_CHARS]
    logging.warning('Checkpoint step %d at %s is corrupt or incomplete and is skipped; '
                    'falling back to an earlier checkpoint. (%s)',
                    step, self.step_path(step), self._bad[step])

  def _raise_if_all_bad(self) -> None:
    if not self._bad:
      return
    details = '; '.join(f'step {s} ({why})' for s, why in sorted(self._bad.items()))
    raise UserError(
        f'No checkpoint in {self.directory} restores: {details}. Nothing was moved or '
        f'deleted. If the checkpoints are damaged, move them away to start afresh, or use a '
        f'new --workdir; if they come from another version of icl_jax, restore with that '
        f'version.')

  def _quarantine(self, bad_steps: list[int]) -> None:
    """Moves damaged steps out of orbax's sight; on a shared disk process 0 moves them."""
    if self.read_only or not bad_steps:
      return
    target_dir = corrupt_directory(self.workdir)
    if jax.process_index() == 0:
      os.makedirs(target_dir, exist_ok=True)
      for step in sorted(bad_steps):
        target = os.path.join(target_dir, str(step))
        suffix = 1
        while os.path.exists(target):  # The same step can be damaged in two runs.
          target = os.path.join(target_dir, f'{step}.{suffix}')
          suffix += 1
        os.rename(self.step_path(step), target)
        logging.warning('Moved corrupt checkpoint step %d from %s to %s (kept for inspection; '
                        'delete it when you no longer need it).',
                        step, self.step_path(step), target)
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes('icl_jax_quarantine_corrupt_checkpoints')
    self._manager.reload()  # Orbax's cached step list still holds the moved steps.

  def wait(self) -> None:
    """Waits for saves in flight; SaveFailed if one could not be written."""
    try:
      self._manager.wait_until_finished()
      self._manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_failed(e) from None

  def close(self) -> None:
    self._manager.close()


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs that tell orbax where each restored array goes."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def open_run(workdir: str, step: int | None = None
             ) -> tuple[Checkpointer, int, ml_collections.ConfigDict]:
  """(read-only checkpointer, step, stored config) of a training run's workdir.

  step=None: the newest checkpoint whose config reads back (unreadable ones are skipped
  with a warning). UserError if the workdir holds no checkpoint, or none at `step`.
  """
  files.local(workdir, 'Workdir')
  if not os.path.isdir(directory(workdir)):
    raise UserError(f'No checkpoints in {workdir!r}: expected {directory(workdir)}. '
                    f'Pass the --workdir of a training run.')
  ckpt = Checkpointer(workdir, read_only=True)
  available = ckpt.all_steps()
  if not available:
    ckpt.close()
    raise UserError(f'Workdir {workdir!r} has no complete checkpoint yet.')
  if step is None:
    step, config = ckpt.latest_config()
  elif step not in available:
    ckpt.close()
    raise UserError(f'Workdir {workdir!r} has no checkpoint at step {step}; available steps: '
                    f'{", ".join(map(str, sorted(available)))}.')
  else:
    config = ckpt.restore_config(step)
  return ckpt, step, config
