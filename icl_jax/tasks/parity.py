"""k-sparse parity of n bits (Barak et al. 2022), as in-context classification.

Task i is a subset S_i of `sparsity` = k distinct coordinates out of n = `dim`, derived
from `fold_in(task_key, i)`; inputs are uniform in {-1, +1}^n and the label is
y = 1 if prod_{j in S} x_j == -1 else 0. Labels are exactly balanced for k >= 1.

Inputs are bits, so `x_scale`, `x_shift` and `active_dim` are ignored.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from icl_jax.tasks.episode import Episode
from icl_jax.tasks.projected import sample_task_ids
from icl_jax.tasks.options import TaskOptions


def parity_subset(task_key: jax.Array, task_id: int | jax.Array,
                  options: TaskOptions) -> jax.Array:
  """subset_K int32: the K = `options.sparsity` coordinates of task `task_id`."""
  perm_D = jax.random.permutation(jax.random.fold_in(task_key, task_id), options.dim)
  return perm_D[:options.sparsity].astype(jnp.int32)


def sample_parity(key: jax.Array, task_key: jax.Array, *, batch_size: int, seq_len: int,
                  num_tasks: int | jax.Array, unseen: bool, options: TaskOptions,
                  active_dim: int | jax.Array | None = None) -> Episode:
  """B episodes of T labelled bit strings; y_BxT int32 in {0, 1}. `active_dim` is ignored."""
  del active_dim  # Truncating bits would change the task, not its difficulty.
  if not 0 <= options.sparsity <= options.dim:
    raise ValueError(f'sparsity={options.sparsity} must lie in [0, dim={options.dim}].')
  ids_key, x_key = jax.random.split(key)
  ids_B = sample_task_ids(ids_key, batch_size, num_tasks, unseen)
  x_BxTxD = jax.random.rademacher(x_key, (batch_size, seq_len, options.dim), jnp.float32)

  def one(task_id, x_TxD):
    in_subset_D = jnp.zeros((options.dim,), bool).at[parity_subset(task_key, task_id,
                                                                   options)].set(True)
    # The product of +-1 is -1 iff an odd number of the subset's bits are -1.
    negative_T = jnp.sum(in_subset_D[None, :] & (x_TxD < 0), axis=-1, dtype=jnp.int32)
    return negative_T % 2

  return Episode(x_BxTxD, jax.vmap(one)(ids_B, x_BxTxD))
