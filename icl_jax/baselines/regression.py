"""Classical in-context regressors: the estimators a meta-trained regressor is compared against.

Every estimator has the signature

  predict_<name>(x_BxTxD, y_BxT, **hparams) -> pred_BxT

where pred[b, t] predicts y[b, t] at the query x[b, t] from the examples (x[b, j], y[b, j]),
j < t, alone. Position 0 has no examples and predicts 0 (the prior mean of the function classes
of Garg et al. 2022; a GP with zero mean function predicts it too). All outputs are float32.

Conventions, which fix how the hyperparameters read:
  * least squares: the minimum-norm solution (numpy's `lstsq`, `pinv`), so it interpolates
    noiseless linear data exactly from t = D examples on, and its normalised error is (D - t)/D
    before that (x, w ~ N(0, I)).
  * ridge: min_w ||y - Xw||^2 + lam ||w||^2 (sklearn's `Ridge(alpha=lam, fit_intercept=False)`;
    a sum, not a mean, over examples), the posterior mean for w ~ N(0, I) and noise variance lam.
  * lasso: min_w ||y - Xw||^2 / (2n) + alpha ||w||_1 (sklearn's `Lasso(fit_intercept=False)`).
  * gradient descent: steps on the mean loss ||y - Xw||^2 / (2n) from w = 0, so one step is
    w = lr * X^T y / n (von Oswald et al. 2023), and one step at lr = 1 is `averaging`.
  * averaging: w = X^T y / n (Garg et al. 2022).
  * GP: RBF kernel signal_var * exp(-||x - x'||^2 / (2 length_scale^2)); `noise` is the noise
    *variance* added to the kernel's diagonal (gpytorch's and the PFN prior's convention).

All JAX estimators are pure, jit-able, vmapped over episodes and vectorised over prefixes. Hyper-
parameters that set shapes or loop lengths (`k`, `num_steps`, `num_iters`) are static; the rest
(`lam`, `alpha`, `lr`, GP hyperparameters) may be traced, so a grid of them can be vmapped. Under
`jax.vmap` over `lam` the per-prefix SVDs do not depend on the mapped argument and are computed
once for the whole grid.

Decision trees and gradient boosting are not JAX: `predict_tree` and `predict_boosting`
(trees.py) call scikit-learn on the host, once per prefix (see their docstrings), and are
registered as host learners (`Baseline.host`), called outside jit.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.baselines.common import before_matrix
from icl_jax.baselines.common import check_episodes
from icl_jax.baselines.common import nearest_earlier
from icl_jax.baselines.common import normalized_squared_error_BxT
from icl_jax.baselines.common import pairwise_sq_dists
from icl_jax.baselines.registry import Baseline
from icl_jax.baselines.registry import REGRESSION
from icl_jax.baselines.registry import register

# Defaults for `REGRESSION_BASELINES`. Each is a choice for the function classes of Garg et al.
# (x, w ~ N(0, I_d)); tune on training-task episodes for other data.

# The posterior mean for label-noise variance 0.1; pass the data's noise variance.
DEFAULT_RIDGE_LAM = 0.1
DEFAULT_LASSO_ALPHA = 0.01
# d = 20, T = 41, 3-sparse w, alpha in 1e-3..0.1, noise 0..0.5: after 1000 iterations the error
# curve is within 6e-3 (normalised) of 8000 iterations', and 0.05-5% of predictions still differ
# from converged ones by > 1e-3 (relative). They sit at prefixes with t ~ the support size, where
# the objective is nearly flat along a null direction of X_t (objective gap ~2e-4 relative) but
# the query is not; sklearn's coordinate descent needs 1e4-6e4 sweeps on the same prefixes.
# 1000 iterations take 0.8 s for 64 such episodes on 2 CPU cores.
DEFAULT_LASSO_NUM_ITERS = 1000
# One step, as one linear self-attention layer takes (von Oswald et al.). Picked by `tune_gd_lr`
# on noiseless d = 20, T = 41 episodes (512): mean error 0.72 / 0.68 / 0.69 / 0.77 at
# lr = 0.2 / 0.3 / 0.4 / 0.5; the rate that is best at t examples is about t / (t + d + 1).
DEFAULT_GD_NUM_STEPS = 1
DEFAULT_GD_LR = 0.3
GD_LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
DEFAULT_KNN_K = 3
# The PFN paper's GP prior (Mueller et al. 2022): x ~ U[0, 1]^5, length scale 0.6, noise 1e-4.
DEFAULT_GP_LENGTH_SCALE = 0.6
DEFAULT_GP_NOISE = 1e-4

# Episodes solved together by the per-prefix SVDs: each holds T masked copies of its T x D
# inputs, so chunking bounds memory at chunk * T * T * D floats whatever the batch size.
_EPISODE_CHUNK = 64

_HIGHEST = jax.lax.Precision.HIGHEST


def _as_float(x_BxTxD: jax.Array, y_BxT: jax.Array) -> tuple[jax.Array, jax.Array]:
  return jnp.asarray(x_BxTxD, jnp.float32), jnp.asarray(y_BxT, jnp.float32)


def _prefix_moments(x_TxD: jax.Array, y_T: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Sufficient statistics of every prefix: X_t^T X_t, X_t^T y_t and max(t, 1).

  Summed with the strictly-lower-triangular `before_matrix`, so row t holds exactly the
  examples j < t and nothing from later rows can reach it.
  """
  before_TxT = before_matrix(x_TxD.shape[0])
  xx_TxDxD = jnp.einsum('tj,jd,je->tde', before_TxT, x_TxD, x_TxD, precision=_HIGHEST)
  xy_TxD = jnp.einsum('tj,j,jd->td', before_TxT, y_T, x_TxD, precision=_HIGHEST)
  count_T = jnp.maximum(jnp.arange(x_TxD.shape[0], dtype=jnp.float32), 1.0)
  return xx_TxDxD, xy_TxD, count_T


def _predict_linear(w_TxD: jax.Array, x_TxD: jax.Array) -> jax.Array:
  return jnp.sum(w_TxD * x_TxD, axis=-1)


# --- Least squares and ridge -------------------------------------------------------------------


def _spectral_episode(x_TxD: jax.Array, y_T: jax.Array, lam: jax.Array,
                      rcond: float) -> jax.Array:
  """Ridge (least squares at lam = 0) on every prefix from the SVD of its zero-padded inputs.

  Prefix t is the whole T x D input with rows j >= t zeroed: zero rows change neither the
  minimisers nor the minimum norm, so its solution is the prefix's. An SVD per prefix, rather than
  solving with X^T X, keeps float32 accurate at t ~ D, where X^T X squares the condition number.
  """
  before_TxT = before_matrix(x_TxD.shape[0])
  xm_TxTxD = before_TxT[:, :, None] * x_TxD[None, :, :]
  ym_TxT = before_TxT * y_T[None, :]
  u_TxTxK, s_TxK, vt_TxKxD = jnp.linalg.svd(xm_TxTxD, full_matrices=False)
  # Singular values below the cut are rounding noise of exact zeros (t < D, or t = 0): dropping
  # them is what makes the lam = 0 solution the minimum-norm one rather than noise / eps.
  keep_TxK = s_TxK > rcond * s_TxK[:, :1]
  s_TxK = jnp.where(keep_TxK, s_TxK, 1.0)
  gain_TxK = jnp.where(keep_TxK, s_TxK / (s_TxK * s_TxK + lam), 0.0)
  uty_TxK = jnp.einsum('tjk,tj->tk', u_TxTxK, ym_TxT, precision=_HIGHEST)
  w_TxD = jnp.einsum('tkd,tk->td', vt_TxKxD, gain_TxK * uty_TxK, precision=_HIGHEST)
  return _predict_linear(w_TxD, x_TxD)


def _default_rcond(seq_len: int, num_features: int) -> float:
  # jnp.linalg.pinv's cut: 10 * max(M, N) * eps, relative to the largest singular value.
  return 10.0 * max(seq_len, num_features) * float(jnp.finfo(jnp.float32).eps)


def predict_ridge(x_BxTxD: jax.Array, y_BxT: jax.Array, lam: float | jax.Array = DEFAULT_RIDGE_LAM,
                  rcond: float | None = None) -> jax.Array:
  """Ridge regression, min_w ||y - Xw||^2 + lam ||w||^2, fit on each prefix: pred_BxT.

  Sum-of-squares convention (sklearn's `Ridge(alpha=lam, fit_intercept=False)`): for w ~ N(0, I)
  and Gaussian label noise of variance sigma^2 it is the posterior mean at lam = sigma^2.

  Args:
    x_BxTxD: inputs.
    y_BxT: labels.
    lam: penalty >= 0; may be traced (vmap a grid of them: the SVDs are shared). lam = 0 gives
      `predict_least_squares`.
    rcond: singular values below rcond * the largest are treated as zero (static); default
      10 * max(T, D) * float32 eps, as in `jnp.linalg.pinv`.
  """
  check_episodes(x_BxTxD, y_BxT)
  x_BxTxD, y_BxT = _as_float(x_BxTxD, y_BxT)
  if rcond is None:
    rcond = _default_rcond(*x_BxTxD.shape[1:])
  lam = jnp.asarray(lam, jnp.float32)
  def episode(xy):
    return _spectral_episode(xy[0], xy[1], lam, rcond)
  return jax.lax.map(episode, (x_BxTxD, y_BxT), batch_size=min(_EPISODE_CHUNK, x_BxTxD.shape[0]))


def predict_least_squares(x_BxTxD: jax.Array, y_BxT: jax.Array,
                          rcond: float | None = None) -> jax.Array:
  """Minimum-norm least squares on each prefix (numpy's lstsq / pinv semantics): pred_BxT.

  Exact from t = D examples on for noiseless linear data; for t < D it predicts with the
  minimum-norm interpolant. `rcond` as in `predict_ridge`.
  """
  return predict_ridge(x_BxTxD, y_BxT, lam=0.0, rcond=rcond)


# --- Lasso -------------------------------------------------------------------------------------


def _soft_threshold(v: jax.Array, threshold: jax.Array) -> jax.Array:
  return jnp.sign(v) * jnp.maximum(jnp.abs(v) - threshold, 0.0)


def _lasso_episode(x_TxD: jax.Array, y_T: jax.Array, alpha: jax.Array,
                   num_iters: int) -> jax.Array:
  """FISTA with continuation and adaptive restart on every prefix at once, in D x D moments.

  The smooth part ||y - Xw||^2 / (2n) has gradient (X^T X w - X^T y) / n and Lipschitz constant
  L = lambda_max(X^T X / n), so each prefix takes steps 1 / L of its own. Two standard aids make
  a fixed iteration count go far:
    * continuation: the penalty starts at alpha_max = ||X^T y / n||_inf (where w = 0 is optimal)
      and falls geometrically to alpha over the first half of the iterations, so the iterates
      follow the sparse regularisation path. Started at a small alpha instead, the first steps
      switch on many coordinates that then shrink by only alpha / L a step: at t = 1, 2 (D = 20)
      the plain method was still 40% off sklearn after 1000 iterations, this one 3e-6.
    * restarting the momentum whenever it points uphill (O'Donoghue & Candes 2015), which
      recovers linear convergence on the strongly convex prefixes (t > D).
  """
  xx_TxDxD, xy_TxD, count_T = _prefix_moments(x_TxD, y_T)
  xx_TxDxD = xx_TxDxD / count_T[:, None, None]
  xy_TxD = xy_TxD / count_T[:, None]
  lipschitz_T = jnp.linalg.eigvalsh(xx_TxDxD)[:, -1]
  # t = 0 (or an all-zero prefix) has L = 0 and a zero gradient: a zero step keeps w = 0.
  step_T = jnp.where(lipschitz_T > 0, 1.0 / jnp.where(lipschitz_T > 0, lipschitz_T, 1.0), 0.0)
  step_Tx1 = step_T[:, None]
  alpha_max_T = jnp.maximum(jnp.max(jnp.abs(xy_TxD), axis=-1), alpha)
  log_ratio_T = jnp.log(alpha) - jnp.log(alpha_max_T)
  num_continuation = max(num_iters // 2, 1)

  def iteration(k, carry):
    w_TxD, z_TxD, theta_T = carry
    frac = jnp.minimum((k + 1) / num_continuation, 1.0)
    penalty_Tx1 = (alpha_max_T * jnp.exp(frac * log_ratio_T))[:, None]
    grad_TxD = jnp.einsum('tde,te->td', xx_TxDxD, z_TxD, precision=_HIGHEST) - xy_TxD
    new_w_TxD = _soft_threshold(z_TxD - step_Tx1 * grad_TxD, penalty_Tx1 * step_Tx1)
    new_theta_T = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * theta_T * theta_T))
    restart_T = jnp.sum((z_TxD - new_w_TxD) * (new_w_TxD - w_TxD), axis=-1) > 0
    momentum_T = jnp.where(restart_T, 0.0, (theta_T - 1.0) / new_theta_T)
    new_z_TxD = new_w_TxD + momentum_T[:, None] * (new_w_TxD - w_TxD)
    return new_w_TxD, new_z_TxD, jnp.where(restart_T, 1.0, new_theta_T)

  zeros_TxD = jnp.zeros_like(x_TxD)
  init = (zeros_TxD, zeros_TxD, jnp.ones_like(count_T))
  w_TxD, _, _ = jax.lax.fori_loop(0, num_iters, iteration, init)
  return _predict_linear(w_TxD, x_TxD)


def predict_lasso(x_BxTxD: jax.Array, y_BxT: jax.Array,
                  alpha: float | jax.Array = DEFAULT_LASSO_ALPHA,
                  num_iters: int = DEFAULT_LASSO_NUM_ITERS) -> jax.Array:
  """Lasso, min_w ||y - Xw||^2 / (2n) + alpha ||w||_1, fit on each prefix of n = t: pred_BxT.

  sklearn's `Lasso(alpha=alpha, fit_intercept=False)` objective, solved by accelerated proximal
  gradient (FISTA with continuation and restart, see `_lasso_episode`) for a fixed `num_iters`
  (static) so that it jits; see DEFAULT_LASSO_NUM_ITERS for the accuracy that buys. alpha > 0,
  may be traced.
  """
  check_episodes(x_BxTxD, y_BxT)
  x_BxTxD, y_BxT = _as_float(x_BxTxD, y_BxT)
  alpha = jnp.asarray(alpha, jnp.float32)
  return jax.vmap(lambda x, y: _lasso_episode(x, y, alpha, num_iters))(x_BxTxD, y_BxT)


# --- Gradient descent and averaging ------------------------------------------------------------


def predict_gd(x_BxTxD: jax.Array, y_BxT: jax.Array, num_steps: int = DEFAULT_GD_NUM_STEPS,
               lr: float | jax.Array = DEFAULT_GD_LR) -> jax.Array:
  """`num_steps` steps of full-batch gradient descent from w = 0 on each prefix: pred_BxT.

  The loss is the mean ||y - Xw||^2 / (2n) over the n = t examples, so a step is
  w <- w - lr * (X^T X w - X^T y) / n and the first is w = lr * X^T y / n (the step one linear
  self-attention layer implements, von Oswald et al. 2023). The mean keeps a rate's meaning from
  changing with t; stability needs lr < 2 / lambda_max(X^T X / n), about 2 / D at t = 1 for
  x ~ N(0, I_D). `num_steps` is static, `lr` may be traced (see `tune_gd_lr`).
  """
  check_episodes(x_BxTxD, y_BxT)
  x_BxTxD, y_BxT = _as_float(x_BxTxD, y_BxT)

  def episode(x_TxD, y_T):
    xx_TxDxD, xy_TxD, count_T = _prefix_moments(x_TxD, y_T)
    rate_Tx1 = (lr / count_T)[:, None]

    def step(_, w_TxD):
      grad_TxD = jnp.einsum('tde,te->td', xx_TxDxD, w_TxD, precision=_HIGHEST) - xy_TxD
      return w_TxD - rate_Tx1 * grad_TxD

    w_TxD = jax.lax.fori_loop(0, num_steps, step, jnp.zeros_like(x_TxD))
    return _predict_linear(w_TxD, x_TxD)

  return jax.vmap(episode)(x_BxTxD, y_BxT)


def normalized_squared_error(pred_BxT: jax.Array, y_BxT: jax.Array,
                             y_variance: float | jax.Array) -> jax.Array:
  """`normalized_squared_error_BxT` averaged over episodes, per position: err_T.

  For Garg et al.'s noiseless linear regression (x, w ~ N(0, I_dim)) y_variance = dim, their
  metric: 1 for the zero predictor.
  """
  # Mean over episodes first, then the division: the order this function has always used, so
  # its numbers stay bit-identical (dividing by 1.0 is exact).
  err_BxT = normalized_squared_error_BxT(
      jnp.asarray(pred_BxT, jnp.float32), jnp.asarray(y_BxT, jnp.float32), 1.0)
  return jnp.mean(err_BxT, axis=0) / y_variance


def normalized_squared_error_interval(pred_BxT: jax.Array, y_BxT: jax.Array,
                                      y_variance: float | jax.Array,
                                      z: float = 1.96) -> tuple[jax.Array, jax.Array]:
  """`normalized_squared_error` and the half-width of its normal-approximation interval.

  Returns (err_T, half_width_T) with half_width = z * std / sqrt(B) over episodes (z = 1.96: a
  95% interval; needs B >= 2). Garg et al. bootstrap instead; with B in the hundreds or more the
  two agree, and this costs nothing. For Garg et al.'s noiseless linear regression
  y_variance = dim.
  """
  err_BxT = normalized_squared_error_BxT(
      jnp.asarray(pred_BxT, jnp.float32), jnp.asarray(y_BxT, jnp.float32), y_variance)
  num_episodes = err_BxT.shape[0]
  half_width_T = z * jnp.std(err_BxT, axis=0, ddof=1) / np.sqrt(num_episodes)
  return jnp.mean(err_BxT, axis=0), half_width_T


@functools.partial(jax.jit, static_argnames='num_steps')
def _gd_error_by_lr(x_BxTxD, y_BxT, lr_L, num_steps):
  def error(lr):
    pred_BxT = predict_gd(x_BxTxD, y_BxT, num_steps, lr)
    return jnp.mean(normalized_squared_error(pred_BxT, y_BxT, x_BxTxD.shape[-1]))
  return jax.vmap(error)(lr_L)


def tune_gd_lr(x_BxTxD: jax.Array, y_BxT: jax.Array, num_steps: int = DEFAULT_GD_NUM_STEPS,
               lrs: Sequence[float] = GD_LR_GRID) -> tuple[float, dict[float, float]]:
  """Picks the GD learning rate with the lowest mean normalised squared error on these episodes.

  The error is `normalized_squared_error` averaged over positions. Tune on training-task
  episodes, then evaluate with the returned rate (record it with the results). The whole grid
  runs as one vmapped call; rates that diverge score inf.

  Returns:
    (best_lr, {lr: mean error}); ties go to the first rate in `lrs`.
  """
  check_episodes(x_BxTxD, y_BxT)
  lr_L = jnp.asarray(lrs, jnp.float32)
  err_L = np.asarray(jax.device_get(_gd_error_by_lr(x_BxTxD, y_BxT, lr_L, num_steps)))
  err_L = np.where(np.isfinite(err_L), err_L, np.inf)
  err_by_lr = {float(lr): float(err) for lr, err in zip(lrs, err_L)}
  return float(lrs[int(err_L.argmin())]), err_by_lr


def predict_averaging(x_BxTxD: jax.Array, y_BxT: jax.Array) -> jax.Array:
  """Garg et al.'s averaging estimator w = mean_{j<t} y_j x_j, predicting w . x_t: pred_BxT.

  Unbiased for w when E[x x^T] = I; equal to one step of `predict_gd` at lr = 1.
  """
  check_episodes(x_BxTxD, y_BxT)
  x_BxTxD, y_BxT = _as_float(x_BxTxD, y_BxT)
  before_TxT = before_matrix(x_BxTxD.shape[1])
  xy_BxTxD = jnp.einsum('tj,bj,bjd->btd', before_TxT, y_BxT, x_BxTxD, precision=_HIGHEST)
  count_T = jnp.maximum(jnp.arange(x_BxTxD.shape[1], dtype=jnp.float32), 1.0)
  return jnp.sum(xy_BxTxD * x_BxTxD, axis=-1) / count_T[None, :]


# --- Nonparametric ----------------------------------------------------------------------------


def predict_knn(x_BxTxD: jax.Array, y_BxT: jax.Array, k: int = DEFAULT_KNN_K) -> jax.Array:
  """Mean label of the min(k, t) nearest (Euclidean) examples before t: pred_BxT.

  Garg et al.'s 3-NN baseline (sklearn's `KNeighborsRegressor(k, weights='uniform')`); equal
  distances go to the earlier example. `k` is static.
  """
  check_episodes(x_BxTxD, y_BxT)
  x_BxTxD, y_BxT = _as_float(x_BxTxD, y_BxT)
  k = min(k, x_BxTxD.shape[1])

  def episode(x_TxD, y_T):
    valid_TxK, idx_TxK = nearest_earlier(x_TxD, k)
    total_T = jnp.sum(valid_TxK * y_T[idx_TxK], axis=-1)
    return total_T / jnp.maximum(jnp.sum(valid_TxK, axis=-1), 1.0)

  return jax.vmap(episode)(x_BxTxD, y_BxT)


def _gp_episode(x_TxD: jax.Array, y_T: jax.Array, length_scale: jax.Array, noise: jax.Array,
                signal_var: jax.Array) -> jax.Array:
  """GP posterior mean at every x_t given the examples before t, from one Cholesky factor.

  With K + noise I = L L^T (all T points), the leading t x t block of L is the Cholesky factor
  of the prefix's matrix K_t + noise I, and forward substitution is causal: the first t entries
  of L^{-1} v only read v[:t]. So with z = L^{-1} y and V = L^{-1} K,
    k_t^T (K_t + noise I)^{-1} y_t = (L_t^{-1} k_t) . (L_t^{-1} y_t) = sum_{j<t} V[j, t] z[j],
  all T posterior means for O(T^3) rather than a solve per prefix. Rows j >= t of L, V and z
  never enter the sum, so later examples cannot reach position t.
  """
  seq_len = x_TxD.shape[0]
  # The expanded distance can dip below zero by rounding; a kernel value above signal_var
  # could make the matrix indefinite.
  sq_dist_TxT = jnp.maximum(pairwise_sq_dists(x_TxD), 0.0)
  k_TxT = signal_var * jnp.exp(-0.5 * sq_dist_TxT / (length_scale * length_scale))
  chol_TxT = jnp.linalg.cholesky(k_TxT + noise * jnp.eye(seq_len, dtype=jnp.float32))
  solve = functools.partial(jax.scipy.linalg.solve_triangular, chol_TxT, lower=True)
  z_T = solve(y_T)
  v_TxT = solve(k_TxT)
  return jnp.einsum('tj,jt,j->t', before_matrix(seq_len), v_TxT, z_T, precision=_HIGHEST)


def predict_gp_posterior_mean(x_BxTxD: jax.Array, y_BxT: jax.Array,
                              length_scale: float | jax.Array = DEFAULT_GP_LENGTH_SCALE,
                              noise: float | jax.Array = DEFAULT_GP_NOISE,
                              signal_var: float | jax.Array = 1.0) -> jax.Array:
  """Exact posterior mean of a zero-mean GP with an RBF kernel, on each prefix: pred_BxT.

  Kernel signal_var * exp(-||x - x'||^2 / (2 length_scale^2)) and Gaussian noise of variance
  `noise`: the Bayes-optimal prediction under squared loss for functions drawn from that GP
  (the PFN prior), k_t^T (K_t + noise I)^{-1} y_t.

  Computed in float32: on the PFN prior (x ~ U[0, 1]^5, length scale 0.6, noise 1e-4, T = 100)
  it is within 2e-4 of a float64 solve. Much smaller noise / (T * signal_var) can make the
  Cholesky factorisation fail, which turns the whole episode into NaN. The hyperparameters may
  be traced.
  """
  check_episodes(x_BxTxD, y_BxT)
  x_BxTxD, y_BxT = _as_float(x_BxTxD, y_BxT)
  hparams = [jnp.asarray(h, jnp.float32) for h in (length_scale, noise, signal_var)]
  return jax.vmap(lambda x, y: _gp_episode(x, y, *hparams))(x_BxTxD, y_BxT)


def _ridge_prior(task) -> dict[str, float]:
  # Ridge with lam = the noise variance is the posterior mean for w ~ N(0, I); without
  # noise a small lam keeps it defined before D examples.
  noise_var = task.noise_std**2
  return {'lam': noise_var if noise_var > 0 else DEFAULT_RIDGE_LAM}


def _gp_prior(task) -> dict[str, float]:
  # The GP prior's own kernel and noise (the sampler adds 1e-6 jitter): Bayes-optimal.
  return {'length_scale': task.length_scale, 'noise': task.noise_std**2 + 1e-6}


# Garg et al.'s rows; the GP posterior mean is compared by default on the GP prior only.
for _baseline in (
    Baseline('least_squares', 'least squares', REGRESSION, predict_least_squares),
    Baseline('ridge', 'ridge', REGRESSION,
             functools.partial(predict_ridge, lam=DEFAULT_RIDGE_LAM), prior=_ridge_prior),
    Baseline('lasso', 'Lasso', REGRESSION,
             functools.partial(predict_lasso, alpha=DEFAULT_LASSO_ALPHA)),
    Baseline('gd', 'gradient descent (lr tuned)', REGRESSION,
             functools.partial(predict_gd, num_steps=DEFAULT_GD_NUM_STEPS, lr=DEFAULT_GD_LR),
             tune=tune_gd_lr),
    Baseline('averaging', 'averaging', REGRESSION, predict_averaging),
    Baseline('knn', 'nearest-neighbour regression', REGRESSION,
             functools.partial(predict_knn, k=DEFAULT_KNN_K)),
    Baseline('gp', 'GP posterior mean', REGRESSION,
             functools.partial(predict_gp_posterior_mean, length_scale=DEFAULT_GP_LENGTH_SCALE,
                               noise=DEFAULT_GP_NOISE),
             prior=_gp_prior, default=lambda family: family == 'gp'),
):
  register(_baseline)
