"""The checkpoint store: the only module that talks to orbax. Save, restore, list.

A checkpoint is `<workdir>/checkpoints/<step>/` with two items: `state` (the train state
pytree: step, params, optimizer state) and `config` (JSON). Orbax writes each step to a
temporary directory (`<step>.orbax-checkpoint-tmp`, which orbax never lists as a step) and
renames it when complete, so a kill at any moment leaves the previous complete checkpoint as
the latest restorable one.

What to do with a checkpoint that does not restore (skip it, move it away, try an older
one) is the recovery policy's (`icl_jax/recovery.py`), not the store's. The store only
turns orbax's own failures into `SaveFailed` (one line: where, why, what is kept) and
retries a listing that races a rotation. Orbax's log noise is filtered once per process
at program start (`icl_jax/runtime.py`), not here.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

from icl_jax import status as status_lib
from icl_jax.errors import UserError

ITEMS = ('state', 'config')
CORRUPT_DIRNAME = 'corrupt_checkpoints'
# Restore errors are whole tensorstore specs; this many characters name the broken file.
MAX_ERROR_CHARS = 300
# Times a listing is taken again after a step vanished while orbax listed the steps.
_LISTING_RETRIES = 5


def directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), status_lib.CHECKPOINT_DIR)


def corrupt_directory(workdir: str) -> str:
  """Where damaged checkpoints are moved: outside `checkpoints/`, so orbax never sees them."""
  return os.path.join(os.path.abspath(workdir), CORRUPT_DIRNAME)


def key_path(path: tuple) -> str:
  """'blocks/0/attn/qkv/kernel': a pytree path as orbax names it."""
  return jax.tree_util.keystr(path, simple=True, separator='/')


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs that tell orbax where each restored array goes."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class SaveFailed(UserError):
  """A checkpoint could not be written; the message says where, why and what is kept."""

  def __init__(self, message: str, step: int | None = None):
    super().__init__(message)
    self.step = step  # The step whose save failed.


def listing_retried(list_steps: Callable[[], Any]) -> Any:
  """list_steps(), again if a step vanished while orbax listed the steps.

  Orbax lists the step directories, then stats each one: a trainer rotating a step away
  in between makes the stat raise FileNotFoundError, or NotADirectoryError where orbax
  asks "exists?" and then "a directory?" and the step goes between the two. The listing is
  simply taken again; a step that really is a file fails every time and raises.
  """
  for attempt in range(_LISTING_RETRIES):
    try:
      return list_steps()
    except (FileNotFoundError, NotADirectoryError):
      if attempt == _LISTING_RETRIES - 1:
        raise
      time.sleep(0.05)


class Store:
  """Saves and restores one run's train states with their config."""

  def __init__(self, workdir: str, keep: int | None = None, read_only: bool = False,
               barrier_key: str | None = None):
    """barrier_key: unique among the Stores that save at once (a sweep group's runs).
    Orbax names its cross-process barriers by step, so two runs saving step 20 together
    on several processes would meet at one barrier and fail."""
    self.workdir = os.path.abspath(workdir)
    self.directory = directory(workdir)
    self.read_only = read_only
    self._saving: int | None = None  # The step of the newest save started.
    # Created at the first save, not here: a run refused before it trains (a config that
    # cannot fit, a stop during set-up) leaves no checkpoints/ that would mark its workdir
    # as a run's.
    self._manager = self._open(ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=False, read_only=read_only,
        # Saving overlaps with training; the device-to-host copy happens before save()
        # returns, so donating the state to the next step is safe.
        enable_async_checkpointing=True,
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            barrier_sync_key_prefix=barrier_key)))

  def _open(self, options: ocp.CheckpointManagerOptions) -> ocp.CheckpointManager:
    return listing_retried(
        lambda: ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS))

  # --- Listing. ---
  def steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def reload(self) -> None:
    """Reads the step list from disk again (orbax caches it)."""
    listing_retried(self._manager.reload)

  def step_path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  # --- Saving. ---
  def save(self, step: int, state: Any, config_dict: dict[str, Any]) -> None:
    """Starts saving `step` in the background; SaveFailed if it, or the save before it (whose
    error only shows now), could not be written (a full disk, a lost mount)."""
    if self._saving is not None:
      # Orbax's save waits for the previous one anyway; waiting here first reports its
      # failure as that step's, not this one's.
      self.wait()
    self._saving = step
    try:
      os.makedirs(self.directory, exist_ok=True)
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config_dict)))
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_failed(e) from None

  def check(self) -> None:
    """SaveFailed if a background save has failed by now (cheap: no waiting)."""
    if self._saving is None:
      return
    try:
      self._manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_failed(e) from None

  def wait(self) -> None:
    """Waits for saves in flight; SaveFailed if one could not be written."""
    try:
      self._manager.wait_until_finished()
      self._manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_failed(e) from None

  def _save_failed(self, error: BaseException) -> SaveFailed:
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
      cause = ' '.join(str(error).split())[:MAX_ERROR_CHARS] or type(error).__name__
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

  # --- Restoring. ---
  def restore_state(self, step: int, abstract_state: Any) -> Any:
    """Restores onto the shardings carried by `abstract_state` (any mesh, any device count)."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
    return restored.state

  def restore_params(self, step: int, abstract_params: Any) -> Any:
    """Only the parameters of the state saved at `step` (the optimizer state, twice their
    size, is never read), onto the shardings carried by `abstract_params`."""
    # A manager binds one handler per item on first use, and a partial restore needs
    # another handler than the full one: a manager of its own keeps both usable here.
    manager = self._open(ocp.CheckpointManagerOptions(read_only=True))
    try:
      restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item={'params': abstract_params},
          restore_args=ocp.checkpoint_utils.construct_restore_args({'params': abstract_params}),
          partial_restore=True)))
    finally:
      manager.close()
    return restored.state['params']

  def param_shapes(self, step: int) -> dict[str, tuple[int, ...]]:
    """{'blocks/0/...': shape} of the parameters saved at `step`, from orbax's metadata
    alone (no array is read)."""
    manager = listing_retried(lambda: ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(read_only=True),
        item_handlers={'state': ocp.PyTreeCheckpointHandler(),
                       'config': ocp.JsonCheckpointHandler()}))
    try:
      tree = manager.item_metadata(step)['state']
    finally:
      manager.close()
    tree = getattr(tree, 'tree', tree)['params']
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, 'shape'))[0]
    return {key_path(path): tuple(leaf.shape) for path, leaf in leaves}

  def restore_config(self, step: int) -> Any:
    """The JSON stored with `step`, as orbax reads it (not validated: see recovery.py)."""
    restored = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return restored.config

  def close(self) -> None:
    self._manager.close()
