"""Gaussian-process prior regression (the prior-fitted networks of Mueller et al.).

f ~ GP(0, k) with the RBF kernel k(x, x') = exp(-|x - x'|^2 / (2 length_scale^2)), inputs
z ~ U[x_low, x_high]^D (then scaled, shifted and truncated as in functions.py), and
y = f(x) + N(0, noise_std^2).

Two ways to draw f, because a task pool needs functions that can be re-derived:
  infinite pool (num_tasks == -1): an exact joint draw of (y_1..y_T) per episode,
    L eps with L L^T = K + (noise_std^2 + jitter) I; the function exists only at the
    episode's T inputs, which is all an infinite pool needs;
  finite pool: task i is the fixed function of random Fourier features derived from
    `fold_in(task_key, i)`, f(x) = sqrt(2/F) sum_f a_f cos(omega_f.x + b_f) with
    omega ~ N(0, I / length_scale^2), b ~ U[0, 2 pi), a ~ N(0, 1); its covariance is
    exactly k in expectation over tasks (Rahimi & Recht), with O(1/sqrt(F)) deviation
    per task.
A traced `num_tasks` computes both and selects; a Python int computes only the one used.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.tasks.episode import Episode
from icl_jax.tasks.functions import add_noise
from icl_jax.tasks.functions import task_keys
from icl_jax.tasks.functions import transform_inputs
from icl_jax.tasks.options import TaskOptions

NUM_FEATURES = 1024
# Tried in order until one factorises: smooth kernels on close inputs (low D, many points,
# repeated points) make K numerically singular in float32, where 1e-6 alone can fail.
_JITTERS = (1e-6, 1e-4, 1e-2)


def rbf_kernel(x_TxD: jax.Array, y_SxD: jax.Array, length_scale: float) -> jax.Array:
  """k_TxS. Squared distances from differences, not |x|^2 + |y|^2 - 2 x.y: exactly
  symmetric and non-negative, so K is as close to PSD as float32 allows."""
  sq_TxS = jnp.sum(jnp.square(x_TxD[:, None, :] - y_SxD[None, :, :]), axis=-1)
  return jnp.exp(-sq_TxS / jnp.float32(2.0 * length_scale**2))


def _exact_joint(key: jax.Array, x_TxD: jax.Array, options: TaskOptions) -> jax.Array:
  seq_len = x_TxD.shape[0]
  k_TxT = rbf_kernel(x_TxD, x_TxD, options.length_scale)
  jitter_J = jnp.float32(options.noise_std**2) + jnp.array(_JITTERS, jnp.float32)
  eye_TxT = jnp.eye(seq_len, dtype=jnp.float32)
  chol_JxTxT = jnp.linalg.cholesky(k_TxT[None] + jitter_J[:, None, None] * eye_TxT[None])
  ok_J = jnp.all(jnp.isfinite(chol_JxTxT), axis=(1, 2))
  first = jnp.where(ok_J.any(), jnp.argmax(ok_J), len(_JITTERS) - 1)
  eps_T = jax.random.normal(key, (seq_len,), jnp.float32)
  return chol_JxTxT[first] @ eps_T


def _rff_function(task_key: jax.Array, x_TxD: jax.Array, options: TaskOptions) -> jax.Array:
  omega_key, phase_key, amp_key = jax.random.split(task_key, 3)
  omega_FxD = jax.random.normal(omega_key, (NUM_FEATURES, options.dim),
                                jnp.float32) / jnp.float32(options.length_scale)
  phase_F = jax.random.uniform(phase_key, (NUM_FEATURES,), jnp.float32, 0.0, 2 * math.pi)
  amp_F = jax.random.normal(amp_key, (NUM_FEATURES,), jnp.float32)
  features_TxF = jnp.cos(x_TxD @ omega_FxD.T + phase_F[None, :])
  return features_TxF @ amp_F * jnp.float32(math.sqrt(2.0 / NUM_FEATURES))


def sample_gp(key: jax.Array, task_key: jax.Array, *, batch_size: int, seq_len: int,
              num_tasks: int | jax.Array, unseen: bool, options: TaskOptions,
              active_dim: int | jax.Array | None = None) -> Episode:
  """B episodes of T points of GP-prior regression, on device.

  `num_tasks` (-1: exact joint draws, else a pool of fixed RFF functions) and `active_dim`
  may be traced. T up to a few hundred: the exact path factorises a TxT matrix per episode.
  """
  ids_key, x_key, joint_key, noise_key = jax.random.split(key, 4)
  z_BxTxD = jax.random.uniform(x_key, (batch_size, seq_len, options.dim), jnp.float32,
                               options.x_low, options.x_high)
  x_BxTxD = transform_inputs(z_BxTxD, options, active_dim)

  def exact():
    joint_keys_B = jax.random.split(joint_key, batch_size)
    return jax.vmap(lambda k, x_TxD: _exact_joint(k, x_TxD, options))(joint_keys_B, x_BxTxD)

  def pool():
    keys_B = task_keys(ids_key, task_key, batch_size, num_tasks, unseen)
    y_BxT = jax.vmap(lambda k, x_TxD: _rff_function(k, x_TxD, options))(keys_B, x_BxTxD)
    return add_noise(noise_key, y_BxT, options)

  if isinstance(num_tasks, (int, np.integer)):
    y_BxT = exact() if num_tasks < 0 else pool()
  else:
    y_BxT = jnp.where(num_tasks < 0, exact(), pool())
  return Episode(x_BxTxD, y_BxT)
