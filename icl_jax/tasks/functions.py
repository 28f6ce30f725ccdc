"""The regression function classes of Garg et al. 2022: linear, sparse linear, ReLU net, tree.

Each task is one function f_i whose parameters are derived from `fold_in(task_key, i)`,
so a finite pool is a fixed set of functions reused across episodes and nothing is stored.
An episode is T points x_t with y_t = f_i(x_t) (+ Gaussian noise):

  linear:        y = w.x,                      w ~ N(0, I_D)
  sparse_linear: y = w.x, w with exactly `sparsity` non-zero N(0, 1) coordinates
  relu2nn:       y = sqrt(2/H) w2.relu(W1 x),  W1 ~ N(0, 1)^{HxD}, w2 ~ N(0, 1)^H
  tree:          y = leaf value of a depth-`tree_depth` tree splitting on sign(x_j)

Inputs are x = x_scale * z + x_shift with z ~ N(0, I_D) (Akyurek et al.'s shifted and
scaled evaluation), and, for Garg et al.'s curriculum, coordinates from `active_dim` on
are zeroed; both happen before y is computed, so y is always f(x) of the x the model sees.

The helpers `task_keys`, `transform_inputs` and `add_noise` are shared with gp.py.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from icl_jax.tasks.episode import Episode
from icl_jax.tasks.projected import sample_task_ids
from icl_jax.tasks.options import TaskOptions


def task_keys(key: jax.Array, task_key: jax.Array, batch_size: int,
              num_tasks: int | jax.Array, unseen: bool) -> jax.Array:
  """keys_B: the key of each episode's task, `fold_in(task_key, id)`."""
  ids_B = sample_task_ids(key, batch_size, num_tasks, unseen)
  return jax.vmap(lambda task_id: jax.random.fold_in(task_key, task_id))(ids_B)


def transform_inputs(z_BxTxD: jax.Array, options: TaskOptions,
                     active_dim: int | jax.Array | None) -> jax.Array:
  """x = x_scale * z + x_shift, then the inactive coordinates zeroed (after the shift, so
  that they are exactly 0 as in Garg et al.'s curriculum)."""
  x_BxTxD = z_BxTxD
  if options.x_scale != 1.0:
    x_BxTxD = x_BxTxD * jnp.float32(options.x_scale)
  if options.x_shift != 0.0:
    x_BxTxD = x_BxTxD + jnp.float32(options.x_shift)
  if active_dim is not None:
    active_D = jnp.arange(x_BxTxD.shape[-1]) < active_dim
    x_BxTxD = jnp.where(active_D[None, None, :], x_BxTxD, jnp.float32(0.0))
  return x_BxTxD


def add_noise(key: jax.Array, y_BxT: jax.Array, options: TaskOptions) -> jax.Array:
  if not options.noise_std:
    return y_BxT  # Static: noiseless episodes cost no extra draw.
  return y_BxT + jnp.float32(options.noise_std) * jax.random.normal(key, y_BxT.shape,
                                                                    jnp.float32)


def _check_sparsity(options: TaskOptions) -> None:
  if not 0 <= options.sparsity <= options.dim:
    raise ValueError(f'sparsity={options.sparsity} must lie in [0, dim={options.dim}].')


def _linear(task_key: jax.Array, x_TxD: jax.Array, options: TaskOptions) -> jax.Array:
  w_D = jax.random.normal(task_key, (options.dim,), jnp.float32)
  return x_TxD @ w_D


def _sparse_linear(task_key: jax.Array, x_TxD: jax.Array, options: TaskOptions) -> jax.Array:
  w_key, support_key = jax.random.split(task_key)
  w_D = jax.random.normal(w_key, (options.dim,), jnp.float32)
  # Garg et al.: the support is the first `sparsity` entries of a random permutation.
  support_S = jax.random.permutation(support_key, options.dim)[:options.sparsity]
  w_D = jnp.zeros_like(w_D).at[support_S].set(w_D[support_S])
  return x_TxD @ w_D


def _relu2nn(task_key: jax.Array, x_TxD: jax.Array, options: TaskOptions) -> jax.Array:
  w1_key, w2_key = jax.random.split(task_key)
  w1_HxD = jax.random.normal(w1_key, (options.hidden, options.dim), jnp.float32)
  w2_H = jax.random.normal(w2_key, (options.hidden,), jnp.float32)
  # sqrt(2/H) makes E[y^2] = E|x|^2 = D: E[relu(g)^2] = Var(g) / 2 for g = W1_h.x.
  return jax.nn.relu(x_TxD @ w1_HxD.T) @ w2_H * jnp.sqrt(jnp.float32(2.0 / options.hidden))


def _tree(task_key: jax.Array, x_TxD: jax.Array, options: TaskOptions) -> jax.Array:
  # Garg et al.'s layout: node n has children 2n+1 (x_j <= 0) and 2n+2 (x_j > 0); a coordinate
  # and a value are drawn for every node, internal nodes use the coordinate, leaves the value.
  num_nodes = 2**(options.tree_depth + 1) - 1
  coord_key, value_key = jax.random.split(task_key)
  coord_N = jax.random.randint(coord_key, (num_nodes,), 0, options.dim, dtype=jnp.int32)
  value_N = jax.random.normal(value_key, (num_nodes,), jnp.float32)
  node_T = jnp.zeros(x_TxD.shape[0], jnp.int32)
  for _ in range(options.tree_depth):  # Static depth: every point descends one level per step.
    split_T = jnp.take_along_axis(x_TxD, coord_N[node_T][:, None], axis=1)[:, 0]
    node_T = 2 * node_T + 1 + (split_T > 0).astype(jnp.int32)
  return value_N[node_T]


_Function = Callable[[jax.Array, jax.Array, TaskOptions], jax.Array]


def _sample(function: _Function, key: jax.Array, task_key: jax.Array, *, batch_size: int,
            seq_len: int, num_tasks: int | jax.Array, unseen: bool, options: TaskOptions,
            active_dim: int | jax.Array | None) -> Episode:
  ids_key, x_key, noise_key = jax.random.split(key, 3)
  keys_B = task_keys(ids_key, task_key, batch_size, num_tasks, unseen)
  z_BxTxD = jax.random.normal(x_key, (batch_size, seq_len, options.dim), jnp.float32)
  x_BxTxD = transform_inputs(z_BxTxD, options, active_dim)
  y_BxT = jax.vmap(lambda k, x_TxD: function(k, x_TxD, options))(keys_B, x_BxTxD)
  return Episode(x_BxTxD, add_noise(noise_key, y_BxT, options))


def sample_linear(key: jax.Array, task_key: jax.Array, *, batch_size: int, seq_len: int,
                  num_tasks: int | jax.Array, unseen: bool, options: TaskOptions,
                  active_dim: int | jax.Array | None = None) -> Episode:
  """B episodes of T points of linear regression, y = w.x (+ noise), on device.

  `num_tasks` (-1: a fresh task per episode) and `active_dim` may be traced.
  """
  return _sample(_linear, key, task_key, batch_size=batch_size, seq_len=seq_len,
                 num_tasks=num_tasks, unseen=unseen, options=options, active_dim=active_dim)


def sample_sparse_linear(key: jax.Array, task_key: jax.Array, *, batch_size: int, seq_len: int,
                         num_tasks: int | jax.Array, unseen: bool, options: TaskOptions,
                         active_dim: int | jax.Array | None = None) -> Episode:
  """Linear regression with `options.sparsity` non-zero weights per task."""
  _check_sparsity(options)
  return _sample(_sparse_linear, key, task_key, batch_size=batch_size, seq_len=seq_len,
                 num_tasks=num_tasks, unseen=unseen, options=options, active_dim=active_dim)


def sample_relu2nn(key: jax.Array, task_key: jax.Array, *, batch_size: int, seq_len: int,
                   num_tasks: int | jax.Array, unseen: bool, options: TaskOptions,
                   active_dim: int | jax.Array | None = None) -> Episode:
  """Regression on a random two-layer ReLU network with `options.hidden` units."""
  return _sample(_relu2nn, key, task_key, batch_size=batch_size, seq_len=seq_len,
                 num_tasks=num_tasks, unseen=unseen, options=options, active_dim=active_dim)


def sample_tree(key: jax.Array, task_key: jax.Array, *, batch_size: int, seq_len: int,
                num_tasks: int | jax.Array, unseen: bool, options: TaskOptions,
                active_dim: int | jax.Array | None = None) -> Episode:
  """Regression on a random depth-`options.tree_depth` decision tree over sign(x_j)."""
  return _sample(_tree, key, task_key, batch_size=batch_size, seq_len=seq_len,
                 num_tasks=num_tasks, unseen=unseen, options=options, active_dim=active_dim)
