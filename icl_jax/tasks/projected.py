"""GPICL tasks: a supervised dataset under a random projection and a label permutation.

Task `i` is the pair (A_i, rho_i) derived from `fold_in(task_key, i)`: nothing is stored,
so a pool of 2**24 tasks costs no memory and any task can be re-derived anywhere.

Task ids are uint32 and come from two disjoint ranges, so memorisation and general
learning are measured on provably different tasks:
  seen   (training) ids: [0, num_tasks), or [0, 2**31) for an infinite pool;
  unseen (meta-test) ids: [2**31, 2**32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from icl_jax.tasks.episode import Episode
from icl_jax.tasks.options import TaskOptions

UNSEEN_OFFSET = 2**31
_INT32_MAX = 2**31 - 1


def sample_task_ids(key: jax.Array, batch_size: int, num_tasks: int | jax.Array,
                    unseen: bool) -> jax.Array:
  """Task ids for one batch; `num_tasks=-1` draws from the (practically) infinite range.

  `num_tasks` may be traced, so runs with different pool sizes share one program.
  """
  high = _INT32_MAX if unseen else jnp.where(num_tasks < 0, _INT32_MAX, num_tasks)
  ids_B = jax.random.randint(key, (batch_size,), 0, high, dtype=jnp.int32).astype(jnp.uint32)
  return ids_B + jnp.uint32(UNSEEN_OFFSET) if unseen else ids_B


def task_params(task_key: jax.Array, task_id: jax.Array, num_features: int, num_classes: int,
                proj_scale: float | jax.Array) -> tuple[jax.Array, jax.Array]:
  """Projection A_DxD with A_ij ~ N(0, proj_scale / D) and label permutation perm_C of one task."""
  proj_key, perm_key = jax.random.split(jax.random.fold_in(task_key, task_id))
  a_DxD = jax.random.normal(proj_key, (num_features, num_features)) * jnp.sqrt(
      proj_scale / num_features)
  perm_C = jax.random.permutation(perm_key, num_classes).astype(jnp.int32)
  return a_DxD, perm_C


def sample_episodes(key: jax.Array, task_key: jax.Array, x_NxD: jax.Array, y_N: jax.Array, *,
                    batch_size: int, seq_len: int, num_tasks: int | jax.Array,
                    num_classes: int, proj_scale: float | jax.Array = 1.0,
                    bias_fraction: float | jax.Array = 0.0, unseen: bool = False) -> Episode:
  """Samples B episodes of T examples, each from one task, entirely on device.

  Examples are drawn with replacement: for the dataset sizes used here repeats are rare
  and it avoids a permutation of N per episode.

  `bias_fraction` of the batch (the first rows) keeps the identity permutation: the
  paper's biased data distribution that shortens the loss plateau.

  `num_tasks`, `proj_scale` and `bias_fraction` may be traced (per-run values of a group).
  """
  ids_key, examples_key = jax.random.split(key)
  ids_B = sample_task_ids(ids_key, batch_size, num_tasks, unseen)
  biased_B = jnp.arange(batch_size) < jnp.round(jnp.float32(bias_fraction) * batch_size)
  num_features = x_NxD.shape[1]

  def one(example_key, task_id, biased):
    a_DxD, perm_C = task_params(task_key, task_id, num_features, num_classes, proj_scale)
    perm_C = jnp.where(biased, jnp.arange(num_classes, dtype=jnp.int32), perm_C)
    idx_T = jax.random.randint(example_key, (seq_len,), 0, x_NxD.shape[0])
    x_TxD = x_NxD[idx_T] @ a_DxD.T
    y_T = perm_C[y_N[idx_T]]
    return x_TxD, y_T

  keys_B = jax.random.split(examples_key, batch_size)
  x_BxTxD, y_BxT = jax.vmap(one)(keys_B, ids_B, biased_B)
  return Episode(x_BxTxD, y_BxT)


def sample(key: jax.Array, task_key: jax.Array, *, batch_size: int, seq_len: int,
           num_tasks: int | jax.Array, unseen: bool, options: TaskOptions | None = None,
           active_dim: int | jax.Array | None = None, x_NxD: jax.Array, y_N: jax.Array,
           num_classes: int, proj_scale: float | jax.Array = 1.0,
           bias_fraction: float | jax.Array = 0.0) -> Episode:
  """`sample_episodes` with the registry's keywords (tasks.FAMILIES['projected'].sample).

  The dataset supplies what the synthetic families take from `options`, so it is ignored.
  The curriculum does not apply (the config refuses it), so `active_dim` must be None.
  """
  del options
  if active_dim is not None:
    raise ValueError('The projected family has no curriculum: its inputs are the dataset\'s '
                     'projected examples, which have no active dimension to grow.')
  return sample_episodes(key, task_key, x_NxD, y_N, batch_size=batch_size, seq_len=seq_len,
                         num_tasks=num_tasks, num_classes=num_classes, proj_scale=proj_scale,
                         bias_fraction=bias_fraction, unseen=unseen)
