"""One way to build a workload: `build(config) -> Workload`.

A Workload is everything a run of `config` needs that does not depend on the run's values
(seed, lr, ...): the datasets (or, for a synthetic family, one-row placeholders that carry
its shapes), the `steps.Spec` that the compiled step closes over, and the abstract state
with its shardings on a mesh. Training, evaluation, the public API (`icl_jax.load`), the
benchmarks and the scripts all assemble a run through it, so the recipe exists once:

    wl = workload.build(config)
    state = jax.jit(wl.init, out_shardings=wl.state_shardings(mesh))(run)   # fresh
    abstract = wl.abstract_on(mesh)          # what a checkpoint restores onto (recovery.py)
    x_NxD, y_N = wl.training_inputs(mesh)     # the training split, on the devices once

Which config fields may differ within a vmapped group, which a resumed run may change and
which name a workdir is said in `icl_jax/fields.py`, the one place for field policies.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import ml_collections
import numpy as np

from icl_jax import data
from icl_jax import models
from icl_jax import sharding
from icl_jax import steps
from icl_jax import store
from icl_jax import tasks


@dataclasses.dataclass(frozen=True)
class Workload:
  """The static part of a run: datasets, Spec, abstract state. Build it with `build`."""
  config: ml_collections.ConfigDict
  train_ds: data.Dataset  # Seen tasks: training and seen-task evaluation.
  eval_ds: data.Dataset  # Unseen tasks: new tasks on held-out examples.
  spec: steps.Spec
  abstract_state: steps.State  # ShapeDtypeStructs of one run's state, without shardings.
  # (dataset, mesh) -> its arrays on the mesh (`device_inputs`): each split is placed once
  # and shared by training and evaluation. A cache, not part of the workload's identity.
  _placed: dict[tuple[int, jax.sharding.Mesh], tuple[data.Dataset, Any]] = dataclasses.field(
      default_factory=dict, init=False, repr=False, compare=False)

  @property
  def num_features(self) -> int:
    return self.spec.num_features

  @property
  def num_classes(self) -> int:
    """Output units: the classes of a classification family, 1 for a regression one."""
    return self.spec.num_classes

  @property
  def regression(self) -> bool:
    return self.spec.regression

  @property
  def reads_dataset(self) -> bool:
    """Whether episodes come from the dataset arrays (GPICL's projected tasks)."""
    return tasks.FAMILIES[self.config.task.family].reads_dataset

  @property
  def train_name(self) -> str:
    """What the model was trained on: the dataset, or the synthetic family."""
    if self.reads_dataset:
      return self.train_ds.short_name
    return tasks.FAMILIES[self.config.task.family].title

  def num_params(self) -> int:
    return steps.num_params(self.abstract_state['params'])

  def state_size(self) -> int:
    """Floats of state per sequence that the next prediction can draw on (GPICL's measure)."""
    spec = self.spec
    return models.state_size(self.config.model, tasks.num_tokens(spec.prompt, spec.seq_len),
                             spec.num_features + spec.num_classes)

  def init(self, run: steps.Run) -> steps.State:
    """Step 0 of `run` (pure: jit it with `state_shardings`, or vmap it over a group)."""
    return steps.init_state(run, self.spec)

  # --- Shardings: a run's state is replicated; a group's is split over `run`. ---
  def state_shardings(self, mesh: jax.sharding.Mesh) -> Any:
    replicated = sharding.replicated(mesh)
    return jax.tree.map(lambda _: replicated, self.abstract_state)

  def group_shardings(self, mesh: jax.sharding.Mesh) -> Any:
    run_sharded = sharding.run_sharded(mesh)
    return jax.tree.map(lambda _: run_sharded, self.abstract_state)

  def abstract_on(self, mesh: jax.sharding.Mesh) -> Any:
    """The abstract state carrying its target shardings: what orbax restores onto."""
    return store.abstract_with_shardings(self.abstract_state, self.state_shardings(mesh))

  # --- Input: one copy of each split per device, compact where that is exact. ---
  def device_inputs(self, ds: data.Dataset,
                    mesh: jax.sharding.Mesh) -> tuple[data.Pixels | jax.Array, jax.Array]:
    """(x_NxD, y_N) of a split, replicated on `mesh`, as the samplers read them: x as
    data.Pixels (uint8 pixels and a 256-entry table of their normalised values: a quarter of
    float32's bytes, looked up row by row as episodes gather them) where the split holds its
    pixels exactly, else as float32. Placed on the first call for a (split, mesh); later
    calls, from training or evaluation, get the same arrays."""
    key = (id(ds), mesh)
    if key not in self._placed:  # The entry holds `ds`, so its id is never reused.
      placed = sharding.put((ds.compact_x(), ds.y_N), sharding.replicated(mesh))
      self._placed[key] = (ds, placed)
    return self._placed[key][1]

  def training_inputs(self, mesh: jax.sharding.Mesh) -> tuple[data.Pixels | jax.Array,
                                                              jax.Array]:
    """(x_NxD, y_N) of the training split, as the step reads them (see device_inputs)."""
    return self.device_inputs(self.train_ds, mesh)


def load_splits(config: ml_collections.ConfigDict) -> tuple[data.Dataset, data.Dataset]:
  """The training split (seen tasks) and the held-out split (unseen tasks).

  A synthetic family draws its own inputs: its "splits" are one-row placeholders that
  carry the shapes, so every family goes through the same step signature.
  """
  if not tasks.FAMILIES[config.task.family].reads_dataset:
    num_features, num_classes = steps.synthetic_shape(config)
    return tuple(data.Dataset(np.zeros((1, num_features), np.float32), np.zeros((1,), np.int32),
                              num_classes, (1, num_features), config.task.family, split)
                 for split in ('train', 'test'))
  dc = config.data
  train_ds = data.load(dc.dataset, dc.train_split, tuple(dc.image_shape), dc.data_dir)
  eval_ds = data.load(dc.dataset, dc.eval_split, tuple(dc.image_shape), dc.data_dir)
  for ds in (train_ds, eval_ds):
    ds.check_seq_len(config.task.seq_len)
  return train_ds, eval_ds


def build(config: ml_collections.ConfigDict,
          splits: tuple[data.Dataset, data.Dataset] | None = None) -> Workload:
  """The workload of `config` (validated by the caller): loads or shapes its data, builds
  the model's graph once and derives the abstract state from it, compiling nothing.

  `splits`: (training, held-out) datasets to use instead of loading config.data's (e.g.
  random images of a dataset's shape, for benchmarks).
  """
  train_ds, eval_ds = load_splits(config) if splits is None else splits
  spec = steps.make_spec(config, train_ds.num_features, train_ds.num_classes)
  abstract_state = jax.eval_shape(functools.partial(steps.init_state, spec=spec),
                                  steps.run_values(config))
  return Workload(config, train_ds, eval_ds, spec, abstract_state)
