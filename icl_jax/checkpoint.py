"""The only module that talks to orbax.

A checkpoint is `<workdir>/checkpoints/<step>/` with two items: `state` (the train state
pytree: step, params, optimizer state) and `config` (JSON). Orbax writes each step to a
temporary directory and renames it when complete, so a kill at any moment leaves the
previous complete checkpoint as the latest restorable one.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from icl_jax import config as config_lib

_ITEMS = ('state', 'config')


def directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


class Checkpointer:
  """Saves and restores train states with their config."""

  def __init__(self, workdir: str, keep: int | None = None, read_only: bool = False):
    self.directory = directory(workdir)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        # Saving overlaps with training; the device-to-host copy happens before save()
        # returns, so donating the state to the next step is safe.
        enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, config: ml_collections.ConfigDict) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(config_lib.to_dict(config))))

  def restore_state(self, step: int, abstract_state: Any) -> Any:
    """Restores onto the shardings carried by `abstract_state` (any mesh, any device count)."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
    return restored.state

  def restore_config(self, step: int) -> ml_collections.ConfigDict:
    restored = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return config_lib.from_dict(restored.config)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs that tell orbax where each restored array goes."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
