"""Associative recall / induction (Olsson et al. 2022), as in-context classification.

Task i is a mapping m_i from K = `dim` keys to values in [0, num_classes), derived from
`fold_in(task_key, i)`. Every position draws a key uniformly, x_t = onehot(key_t, K) and
y_t = m_i[key_t]: y_t is predictable exactly iff key_t appeared earlier in the episode,
by copying the label that followed it (an induction head), and is chance otherwise.

Inputs are one-hot keys, so `x_scale`, `x_shift` and `active_dim` are ignored.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from icl_jax.tasks.episode import Episode
from icl_jax.tasks.projected import sample_task_ids
from icl_jax.tasks.options import TaskOptions


def recall_mapping(task_key: jax.Array, task_id: int | jax.Array,
                   options: TaskOptions) -> jax.Array:
  """value_K int32: the value of each of the K = `options.dim` keys of task `task_id`."""
  return jax.random.randint(jax.random.fold_in(task_key, task_id), (options.dim,), 0,
                            options.num_classes, dtype=jnp.int32)


def sample_recall(key: jax.Array, task_key: jax.Array, *, batch_size: int, seq_len: int,
                  num_tasks: int | jax.Array, unseen: bool, options: TaskOptions,
                  active_dim: int | jax.Array | None = None) -> Episode:
  """B episodes of T (one-hot key, value) pairs; y_BxT int32 in [0, num_classes)."""
  del active_dim  # Zeroed keys would be no key at all.
  ids_key, keys_key = jax.random.split(key)
  ids_B = sample_task_ids(ids_key, batch_size, num_tasks, unseen)
  value_BxK = jax.vmap(lambda task_id: recall_mapping(task_key, task_id, options))(ids_B)
  key_BxT = jax.random.randint(keys_key, (batch_size, seq_len), 0, options.dim,
                               dtype=jnp.int32)
  x_BxTxD = jax.nn.one_hot(key_BxT, options.dim, dtype=jnp.float32)
  return Episode(x_BxTxD, jnp.take_along_axis(value_BxK, key_BxT, axis=1))
