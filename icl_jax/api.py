"""The public Python API: a trained model from its workdir, for scripts and notebooks.

    import icl_jax
    trained = icl_jax.load('workdirs/gpicl_digits')          # the newest checkpoint
    episode = trained.sample_episodes(jax.random.key(0), 8)  # unseen tasks by default
    logits_BxTxC = trained.logits(episode.x_BxTxD, episode.y_BxT)
    pred_BxT = trained.predict(episode.x_BxTxD, episode.y_BxT)

Works on the workdir of a single run (`icl_jax.main --workdir`) and on any point of a
sweep (each point is a workdir of its own, `<root>/<name>-<hash>`), on whatever devices
exist now. Only the parameters are read, never the optimizer state.

Every argument is checked by this module's one validation layer (the functions below
"Arguments") before anything is compiled or read: a wrong type, dtype, rank, shape or value
is one UserError naming what was expected (README.md, "From Python"), never an error from
inside JAX, and never silently wrong logits (a label out of range has an all-zero one-hot).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from icl_jax import plugins
from icl_jax import recovery as recovery_lib
from icl_jax import runtime
from icl_jax import sharding
from icl_jax import steps
from icl_jax import tasks
from icl_jax import store as store_lib
from icl_jax import workload as workload_lib
from icl_jax.errors import UserError


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
    y_{t-1}) and x_t; y_t and later labels are never seen. Regression: C = 1.
    1 <= T <= seq_len: a shorter episode gives the first T positions' logits."""
    return _logits(self.workload.spec, self.params, self._episode(x_BxTxD, y_BxT))

  def predict(self, x_BxTxD: jax.Array, y_BxT: jax.Array) -> jax.Array:
    """pred_BxT: the predicted class at every position (the predicted value for a
    regression family)."""
    return _predict(self.workload.spec, self.params, self._episode(x_BxTxD, y_BxT))

  def sample_episodes(self, key: jax.Array, batch_size: int,
                      unseen: bool = True) -> tasks.Episode:
    """B episodes of the training distribution, each of its own task: unseen tasks on the
    held-out split (unseen=True) or tasks from the training pool on the training split."""
    key, batch_size = _key(key), _positive_int(batch_size, 'batch_size', 'episodes to sample')
    if not isinstance(unseen, (bool, np.bool_)):
      raise UserError(f'unseen must be True (held-out tasks on the held-out split) or False '
                      f'(tasks of the training pool); got {_describe(unseen)}.')
    wl = self.workload
    ds = wl.eval_ds if unseen else wl.train_ds
    run = steps.run_values(self.config)
    return _sample(wl.spec, key, run, *wl.device_inputs(ds, self.mesh), batch_size,
                   bool(unseen))

  def _episode(self, x_BxTxD: Any, y_BxT: Any) -> tasks.Episode:
    return checked_episode(x_BxTxD, y_BxT, num_features=self.num_features,
                           seq_len=self.seq_len, num_classes=self.num_classes,
                           regression=self.regression)


@functools.partial(jax.jit, static_argnums=0)
def _logits(spec, params, episode):
  return spec.logits(params, episode)


@functools.partial(jax.jit, static_argnums=0)
def _predict(spec, params, episode):
  return spec.predict(params, episode)


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def _sample(spec, key, run, x_NxD, y_N, batch_size, unseen):
  return spec.sample(key, run, x_NxD, y_N, batch_size, unseen=unseen)


def load(workdir: str | os.PathLike, step: int | None = None, *,
         data_dir: str | os.PathLike | None = None) -> Trained:
  """The model saved in `workdir` at `step` (default: the newest checkpoint that restores).

  `workdir`, `data_dir`: a str or os.PathLike. `step`: an int >= 0 (a checkpoint's step;
  a float, bool or str is refused, naming the available steps). `data_dir`: where the
  training dataset is prepared, if not where the run found it (the stored config's
  data.data_dir); a synthetic family needs none. Raises icl_jax.errors.UserError for a bad
  argument, or when the workdir holds no usable checkpoint.
  """
  workdir = _path(workdir, 'workdir', "a run's workdir")
  data_dir = None if data_dir is None else _path(data_dir, 'data_dir', 'a TFDS data dir')
  step = _step(step, workdir)
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


# ---------------------------------------------------------------------------------------
# Arguments: the API's one validation layer. Types, dtypes, ranks and shapes are checked on
# the arrays' metadata; values (finite inputs, labels in range) by one small reduction each,
# skipped under a trace (jax.jit or vmap of these methods), where only shapes are known.
# ---------------------------------------------------------------------------------------
def _describe(value: Any) -> str:
  """A short description of a value for messages: its type, and its repr if short."""
  text = repr(value)
  return type(value).__name__ + (f' {text}' if len(text) <= 60 else '')


def _path(value: Any, name: str, what: str) -> str:
  if isinstance(value, os.PathLike):
    value = os.fspath(value)
  if not isinstance(value, str):
    raise UserError(f'{name} must be a str or os.PathLike (e.g. pathlib.Path) naming {what}; '
                    f'got {_describe(value)}.')
  if '\0' in value:  # No file name holds one; messages would carry it raw.
    raise UserError(f'{name} {value!r} contains a NUL character (\\x00), which no path can '
                    f'hold; pass the path of {what}.')
  return value


def _step(step: Any, workdir: str) -> int | None:
  """None or an int >= 0; else UserError naming the workdir's steps (when it has some)."""
  if step is None:
    return None
  if (isinstance(step, (int, np.integer)) and not isinstance(step, (bool, np.bool_))
      and step >= 0):
    return int(step)
  available = _available_steps(workdir)
  listed = (f'; {workdir!r} has steps {", ".join(map(str, available))}' if available else '')
  raise UserError(f'step must be None (the newest checkpoint) or an int >= 0, a checkpoint\'s '
                  f'step; got {_describe(step)}{listed}.')


def _available_steps(workdir: str) -> list[int]:
  """The workdir's checkpoint steps, or [] when it has none that can be listed."""
  if not os.path.isdir(store_lib.directory(workdir)):
    return []
  try:
    store = store_lib.Store(workdir, read_only=True)
  except (OSError, ValueError):
    return []
  try:
    return sorted(store.steps())
  finally:
    store.close()


def _positive_int(value: Any, name: str, what: str) -> int:
  if (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
      and value >= 1):
    return int(value)
  raise UserError(f'{name} must be a positive int ({what}), e.g. 8; got {_describe(value)}.')


@functools.cache
def _raw_key_shape() -> tuple[int, ...]:
  """The shape of a raw uint32 key (jax.random.PRNGKey) of the default implementation."""
  return jax.random.key_data(jax.random.key(0)).shape


def _key(key: Any) -> jax.Array:
  """One typed key (jax.random.key), from a typed or a raw (jax.random.PRNGKey) one."""
  typed = isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
  raw = (isinstance(key, (jax.Array, np.ndarray)) and not typed and key.dtype == np.uint32
         and key.shape == _raw_key_shape())
  if (typed and key.shape == ()) or raw:
    return jax.random.wrap_key_data(key) if raw else key
  got = (f'a key array of shape {key.shape}' if typed else
         f'{type(key).__name__} of shape {key.shape} and dtype {key.dtype}'
         if isinstance(key, (jax.Array, np.ndarray)) else _describe(key))
  raise UserError(f'key must be one JAX random key, e.g. jax.random.key(0) (or '
                  f'jax.random.PRNGKey(0)); got {got}.')


def _array(value: Any, name: str) -> Any:
  """`value` as an array (jax or numpy) with a real numeric dtype; UserError otherwise."""
  if not isinstance(value, (jax.Array, np.ndarray)):
    if isinstance(value, (str, bytes)) or value is None:
      raise UserError(f'{name} must be an array (numpy or jax); got {_describe(value)}.')
    try:
      value = np.asarray(value)
    except (ValueError, TypeError) as e:  # Ragged nested lists, objects numpy cannot hold.
      raise UserError(f'{name} must be an array (numpy or jax); got {type(value).__name__} '
                      f'that numpy cannot read as one ({e}).') from None
  if value.dtype == bool or not (jnp.issubdtype(value.dtype, jnp.integer)
                                 or jnp.issubdtype(value.dtype, jnp.floating)):
    raise UserError(f'{name} must hold real numbers (integers or floats); got dtype '
                    f'{value.dtype}.')
  return value


def _concrete(value: Any) -> bool:
  return not isinstance(value, jax.core.Tracer)


def _all_finite(value: Any) -> bool:
  return bool(np.isfinite(value).all() if isinstance(value, np.ndarray)
              else jnp.isfinite(value).all())


def checked_episode(x_BxTxD: Any, y_BxT: Any, *, num_features: int, seq_len: int,
                    num_classes: int, regression: bool) -> tasks.Episode:
  """The Episode (x float32, y int32 or float32) that a model of these sizes reads, or
  UserError naming the expected shapes and values."""
  x_BxTxD, y_BxT = _array(x_BxTxD, 'x_BxTxD'), _array(y_BxT, 'y_BxT')
  shape = tuple(x_BxTxD.shape)
  if len(shape) != 3 or shape[0] < 1 or not 1 <= shape[1] <= seq_len or shape[2] != num_features:
    raise UserError(f'x_BxTxD must have shape B x T x {num_features} (B >= 1 episodes, '
                    f'1 <= T <= {seq_len} examples each, {num_features} features: the '
                    f"model's num_features and seq_len); got shape {shape}.")
  if tuple(y_BxT.shape) != shape[:2]:
    raise UserError(f'y_BxT must have shape B x T = {shape[:2]}, one label per example of '
                    f'x_BxTxD; got shape {tuple(y_BxT.shape)}.')
  with np.errstate(over='ignore', invalid='ignore'):  # float64 beyond float32: inf, refused.
    x_BxTxD = x_BxTxD.astype(jnp.float32)  # As in training.
  if _concrete(x_BxTxD) and not _all_finite(x_BxTxD):
    raise UserError('x_BxTxD holds NaN or inf (or values beyond float32\'s range); the logits '
                    'would not be numbers. Pass finite inputs.')
  return tasks.Episode(x_BxTxD, _labels(y_BxT, num_classes, regression))


def _labels(y_BxT: Any, num_classes: int, regression: bool) -> Any:
  if regression:
    with np.errstate(over='ignore', invalid='ignore'):
      y_BxT = y_BxT.astype(jnp.float32)
    if _concrete(y_BxT) and not _all_finite(y_BxT):
      raise UserError('y_BxT holds NaN or inf (or values beyond float32\'s range); this '
                      'regression model reads finite real targets.')
    return y_BxT
  if not jnp.issubdtype(y_BxT.dtype, jnp.integer):
    raise UserError(f'y_BxT must hold integer class labels in [0, {num_classes}) for this '
                    f'classification model; got dtype {y_BxT.dtype}.')
  if _concrete(y_BxT) and y_BxT.size:
    lo, hi = (int(v) for v in jax.device_get((y_BxT.min(), y_BxT.max())))
    if lo < 0 or hi >= num_classes:
      raise UserError(f'y_BxT must hold class labels in [0, {num_classes}); it holds labels '
                      f'from {lo} to {hi} (an out-of-range label would be read as no class '
                      'at all).')
  return y_BxT.astype(jnp.int32)
