"""The public Python API: a trained model from its workdir, for scripts and notebooks.

    import icl_jax
    trained = icl_jax.load('workdirs/gpicl_digits')          # the newest checkpoint
    episode = trained.sample_episodes(jax.random.key(0), 8)  # unseen tasks by default
    logits_BxTxC = trained.logits(episode.x_BxTxD, episode.y_BxT)
    pred_BxT = trained.predict(episode.x_BxTxD, episode.y_BxT)

Works on the workdir of a single run (`icl_jax.main --workdir`) and on any point of a
sweep (each point is a workdir of its own, `<root>/<name>-<hash>`), on whatever devices
exist now. Only the parameters are read, never the optimizer state.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import ml_collections

from icl_jax import plugins
from icl_jax import recovery as recovery_lib
from icl_jax import runtime
from icl_jax import sharding
from icl_jax import steps
from icl_jax import tasks
from icl_jax import workload as workload_lib


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained model: its config, its parameters and what it was trained on."""
  workdir: str
  step: int
  config: ml_collections.ConfigDict  # As stored with the checkpoint (mesh: all devices now).
  params: Any  # Pure dict of arrays, replicated on `mesh`.
  workload: workload_lib.Workload
  mesh: jax.sharding.Mesh

  @property
  def num_features(self) -> int:
    """D: the features of one input x_t."""
    return self.workload.num_features

  @property
  def num_classes(self) -> int:
    """C: the classes it predicts (1 for a regression family: one number)."""
    return self.workload.num_classes

  @property
  def seq_len(self) -> int:
    """T: the examples per episode it was trained on (and has positions for)."""
    return self.workload.spec.seq_len

  @property
  def regression(self) -> bool:
    return self.workload.regression

  def logits(self, x_BxTxD: jax.Array, y_BxT: jax.Array) -> jax.Array:
    """logits_BxTxC: at position t, the prediction of y_t from (x_1, y_1) ... (x_{t-1},
    y_{t-1}) and x_t; y_t and later labels are never seen. Regression: C = 1."""
    return _logits(self.workload.spec, self.params, tasks.Episode(x_BxTxD, y_BxT))

  def predict(self, x_BxTxD: jax.Array, y_BxT: jax.Array) -> jax.Array:
    """pred_BxT: the predicted class at every position (the predicted value for a
    regression family)."""
    return _predict(self.workload.spec, self.params, tasks.Episode(x_BxTxD, y_BxT))

  def sample_episodes(self, key: jax.Array, batch_size: int,
                      unseen: bool = True) -> tasks.Episode:
    """B episodes of the training distribution, each of its own task: unseen tasks on the
    held-out split (unseen=True) or tasks from the training pool on the training split."""
    wl = self.workload
    ds = wl.eval_ds if unseen else wl.train_ds
    run = steps.run_values(self.config)
    return _sample(wl.spec, key, run, *wl.device_inputs(ds, self.mesh), batch_size, unseen)


@functools.partial(jax.jit, static_argnums=0)
def _logits(spec, params, episode):
  return spec.logits(params, episode)


@functools.partial(jax.jit, static_argnums=0)
def _predict(spec, params, episode):
  return spec.predict(params, episode)


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def _sample(spec, key, run, x_NxD, y_N, batch_size, unseen):
  return spec.sample(key, run, x_NxD, y_N, batch_size, unseen=unseen)


def load(workdir: str, step: int | None = None, *, data_dir: str | None = None) -> Trained:
  """The model saved in `workdir` at `step` (default: the newest checkpoint that restores).

  `data_dir`: where the training dataset is prepared, if not where the run found it
  (the stored config's data.data_dir); a synthetic family needs none. Raises
  icl_jax.errors.UserError when the workdir holds no usable checkpoint.
  """
  runtime.install_log_filters()  # The API's entry: as every program does at its start.
  plugins.load()
  requested = step
  recovery, step, config = recovery_lib.open_run(workdir, step)
  try:
    config.mesh.data = config.mesh.run = -1  # Whatever devices exist now.
    if data_dir is not None:
      config.data.data_dir = data_dir
    wl = workload_lib.build(config)
    mesh = sharding.make_mesh(config.mesh)
    step, params = recovery.params(wl.abstract_on(mesh)['params'], requested)
  finally:
    recovery.store.close()
  return Trained(workdir, step, config, params, wl, mesh)
