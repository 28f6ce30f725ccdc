"""Pieces shared by the classifiers and the regressors: shape checks, the causal prefix matrix,
nearest earlier neighbours, and the normalised squared error every regression score uses."""

from __future__ import annotations

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def check_episodes(x_BxTxD: jax.Array, y_BxT: jax.Array) -> None:
  """Raises unless x is B x T x D and y is B x T."""
  if x_BxTxD.ndim != 3 or y_BxT.shape != x_BxTxD.shape[:2]:
    raise ValueError(f'Expected x_BxTxD and y_BxT, got shapes {x_BxTxD.shape} and {y_BxT.shape}.')


def before_matrix(seq_len: int) -> jax.Array:
  """before_TxT[t, j] = 1 where j < t: summing rows with it gives the context seen before t.

  A matmul rather than a cumsum: XLA:CPU lowers cumsum to a quadratic reduce-window, and an
  exclusive sum taken as (inclusive - own row) would let row t's own label leak into rounding.
  """
  return (jnp.arange(seq_len)[None, :] < jnp.arange(seq_len)[:, None]).astype(jnp.float32)


def pairwise_sq_dists(x_TxD: jax.Array) -> jax.Array:
  """Squared Euclidean distances between all pairs of rows: dist_TxT."""
  sq_T = jnp.sum(x_TxD * x_TxD, axis=-1)
  gram_TxT = jnp.matmul(x_TxD, x_TxD.T, precision=_HIGHEST)
  # The expansion can dip below zero by rounding; callers that only rank distances need no
  # clamp, those that exponentiate them clamp themselves.
  return sq_T[:, None] + sq_T[None, :] - 2.0 * gram_TxT


def nearest_earlier(x_TxD: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """(valid_TxK, idx_TxK): the k nearest (Euclidean) examples before each position t,
  nearest first. Before t there may be fewer than k: the missing ones have valid 0."""
  seq_len = x_TxD.shape[0]
  dist_TxT = jnp.where(before_matrix(seq_len) > 0, pairwise_sq_dists(x_TxD), jnp.inf)
  neg_dist_TxK, idx_TxK = jax.lax.top_k(-dist_TxT, k)
  return (neg_dist_TxK > -jnp.inf).astype(jnp.float32), idx_TxK


def normalized_squared_error_BxT(pred_BxT: jax.Array, y_BxT: jax.Array,
                                 y_variance: float | jax.Array) -> jax.Array:
  """Squared error of every prediction divided by the prior's E[y^2]: err_BxT.

  The one definition of the regression score: the zero predictor scores 1 on average. Pass
  the task family's `y_variance` (for linear regression dim + noise_std^2); for Garg et al.'s
  noiseless linear regression, x, w ~ N(0, I_dim), that is `dim`, their normalisation.
  """
  return jnp.square(pred_BxT - y_BxT) / y_variance
