"""In-context regression baselines: causality and agreement with numpy / scikit-learn references."""

import functools
import warnings

import jax
import numpy as np
import pytest
from sklearn import ensemble
from sklearn import exceptions
from sklearn import linear_model
from sklearn import tree

from icl_jax.baselines import classifiers
from icl_jax.baselines import registry
from icl_jax.baselines import regression
from icl_jax.baselines import trees

# The regressors as registered, with their default hyperparameters: jit-able and host.
REGRESSION_BASELINES = {n: b.predict for n, b in registry.available(regression=True).items()
                        if not b.host}
HOST_REGRESSION_BASELINES = {n: b.predict for n, b in registry.available(regression=True).items()
                             if b.host}

# One shape for nearly every call, so each estimator compiles once or twice.
B, T, D = 16, 12, 5

# Jitted once, hyperparameters traced where they may be, and shared by the default-bound entries
# of _JIT so that each estimator compiles as few times as possible.
_gd = jax.jit(regression.predict_gd, static_argnames='num_steps')
_lasso = jax.jit(regression.predict_lasso)
_knn = jax.jit(regression.predict_knn, static_argnames='k')
_gp = jax.jit(regression.predict_gp_posterior_mean)
_JIT = {name: jax.jit(fn) for name, fn in REGRESSION_BASELINES.items()}
_JIT.update(
    gd=functools.partial(_gd, num_steps=regression.DEFAULT_GD_NUM_STEPS,
                         lr=regression.DEFAULT_GD_LR),
    lasso=functools.partial(_lasso, alpha=regression.DEFAULT_LASSO_ALPHA),
    knn=functools.partial(_knn, k=regression.DEFAULT_KNN_K),
    gp=functools.partial(_gp, length_scale=regression.DEFAULT_GP_LENGTH_SCALE,
                         noise=regression.DEFAULT_GP_NOISE),
)


def _predict(fn, x_BxTxD, y_BxT, **kw):
  return np.asarray(fn(x_BxTxD, y_BxT, **kw))


def _linear_episodes(seed, batch_size=B, seq_len=T, dim=D, noise=0.0, nonzeros=None):
  """Garg et al.'s linear regression: x, w ~ N(0, I), y = w . x (+ noise); optionally sparse w."""
  rng = np.random.default_rng(seed)
  x_BxTxD = rng.normal(size=(batch_size, seq_len, dim))
  w_BxD = rng.normal(size=(batch_size, dim))
  if nonzeros is not None:
    for w_D in w_BxD:
      w_D[rng.permutation(dim)[nonzeros:]] = 0.0
  y_BxT = np.einsum('btd,bd->bt', x_BxTxD, w_BxD) + noise * rng.normal(size=(batch_size, seq_len))
  return x_BxTxD.astype(np.float32), y_BxT.astype(np.float32)


def _weights_at(predict, x_TxD, y_T, ts):
  """w_D of a linear estimator fit on each prefix t in ts, read from queries x_t = e_i.

  One episode per (t, i), padded to B episodes so the compiled function is reused.
  """
  dim = x_TxD.shape[1]
  assert len(ts) * dim <= B
  x_BxTxD = np.repeat(x_TxD[None], B, axis=0)
  for n, t in enumerate(ts):
    x_BxTxD[n * dim:(n + 1) * dim, t] = np.eye(dim)
  pred_BxT = _predict(predict, x_BxTxD, np.repeat(y_T[None], B, axis=0))
  return np.stack([pred_BxT[n * dim:(n + 1) * dim, t] for n, t in enumerate(ts)])


# --- Causality, for every estimator -----------------------------------------------------------

_POSITIONS = (0, 2, 5, 10)


def _variants(x_TxD, y_T, positions):
  """Perturbations of one episode that must not change predictions at positions <= t."""
  rng = np.random.default_rng(3)
  xs, ys, kinds = [], [], []
  for t in positions:
    y = y_T.copy()
    y[t] += 5.0
    xs.append(x_TxD), ys.append(y), kinds.append(('y_t', t))
    y = y_T.copy()
    y[t + 1:] = rng.normal(size=T - t - 1) * 10.0
    xs.append(x_TxD), ys.append(y), kinds.append(('later y', t))
    x = x_TxD.copy()
    x[t + 1:] = rng.normal(size=x[t + 1:].shape) * 10.0
    xs.append(x), ys.append(y_T), kinds.append(('later x', t))
    y = y_T.copy()
    y[:t] += 3.0
    xs.append(x_TxD), ys.append(y), kinds.append(('earlier y', t))
  return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32), kinds


def _check_causal(name, predict, positions, pad_to=B):
  x_BxTxD, y_BxT = _linear_episodes(seed=0, noise=0.1)
  # Inputs at the GP prior's length scale, so that every estimator depends on the context.
  x_BxTxD = 0.25 * x_BxTxD
  x_VxTxD, y_VxT, kinds = _variants(x_BxTxD[0], y_BxT[0], positions)
  pad = pad_to - len(kinds)  # Padded to B the compiled function is reused.
  pred_VxT = _predict(predict, np.concatenate([x_VxTxD, np.repeat(x_VxTxD[:1], pad, axis=0)]),
                      np.concatenate([y_VxT, np.repeat(y_VxT[:1], pad, axis=0)]))
  base_T = _predict(predict, x_BxTxD[:pad_to], y_BxT[:pad_to])[0]
  for v, (kind, t) in enumerate(kinds):
    if kind == 'earlier y':
      if t > 0:  # Changing the context must move the prediction at t.
        assert abs(pred_VxT[v, t] - base_T[t]) > 1e-3, (name, kind, t)
    else:
      np.testing.assert_allclose(pred_VxT[v, :t + 1], base_T[:t + 1], rtol=1e-6, atol=1e-6,
                                 err_msg=f'{name}: {kind} changed positions <= {t}')


@pytest.mark.parametrize('name', sorted(REGRESSION_BASELINES))
def test_predictions_use_only_earlier_examples(name):
  _check_causal(name, _JIT[name], _POSITIONS)


# Fewer positions and boosting rounds: every prefix of every variant is a scikit-learn fit.
@pytest.mark.parametrize('name, predict', [
    ('tree', trees.predict_tree),
    ('boosting', functools.partial(trees.predict_boosting, max_iter=5)),
])
def test_host_predictions_use_only_earlier_examples(name, predict):
  _check_causal(name, predict, (2, 5), pad_to=8)


@pytest.mark.parametrize('name', sorted(REGRESSION_BASELINES))
def test_first_position_predicts_zero(name):
  pred_BxT = _predict(_JIT[name], *_linear_episodes(seed=0, noise=0.1))
  np.testing.assert_array_equal(pred_BxT[:, 0], 0.0)
  assert np.all(np.isfinite(pred_BxT))


# --- Least squares ------------------------------------------------------------------------------


def test_least_squares_is_exact_from_d_examples():
  x_BxTxD, y_BxT = _linear_episodes(seed=1)
  pred_BxT = _predict(_JIT['least_squares'], x_BxTxD, y_BxT)
  err_BxT = np.abs(pred_BxT - y_BxT)
  print(f'max |error| for t >= D: {err_BxT[:, D:].max():.2e}')
  assert err_BxT[:, D:].max() < 1e-4
  assert err_BxT[:, 1:D].mean() > 0.1  # Not yet determined: the check above can fail.


@pytest.mark.parametrize('ts, collinear', [((1, 2, 4), False), ((5, 6, 11), False),
                                           ((3, 6, 11), True)])
def test_least_squares_is_numpys_min_norm_solution(ts, collinear):
  x_BxTxD, y_BxT = _linear_episodes(seed=2, noise=0.3)
  if collinear:  # Rank D - 1 at every t: only the singular-value cut keeps w finite.
    x_BxTxD[:, :, -1] = 2.0 * x_BxTxD[:, :, 0]
  w_NxD = _weights_at(_JIT['least_squares'], x_BxTxD[0], y_BxT[0], ts)
  x_TxD, y_T = x_BxTxD[0].astype(np.float64), y_BxT[0].astype(np.float64)
  for w_D, t in zip(w_NxD, ts):
    ref_D = np.linalg.lstsq(x_TxD[:t], y_T[:t], rcond=None)[0]
    np.testing.assert_allclose(w_D, ref_D, rtol=1e-4, atol=1e-4, err_msg=f't = {t}')


def test_least_squares_error_follows_garg_curve():
  # Noiseless, x, w ~ N(0, I_D): the residual at t < D is w's component orthogonal to the t
  # inputs seen, so E[(y - pred)^2] / D = (D - t) / D, and 0 from t = D on.
  num_episodes, seq_len = 4096, 8
  x_BxTxD, y_BxT = _linear_episodes(seed=4, batch_size=num_episodes, seq_len=seq_len)
  pred_BxT = _predict(_JIT['least_squares'], x_BxTxD, y_BxT)
  err_T, half_width_T = map(np.asarray, regression.normalized_squared_error_interval(
      pred_BxT, y_BxT, D))
  expected_T = np.maximum(D - np.arange(seq_len), 0) / D
  print(f'least-squares error {err_T.round(3)} +- {half_width_T.round(3)}')
  # 2 * the 95% half-width is ~4 standard errors; an off-by-one curve is ~7 away.
  assert np.all(np.abs(err_T[:D] - expected_T[:D]) < 2.0 * half_width_T[:D])
  assert np.all(err_T[D:] < 1e-8)


# --- Ridge ------------------------------------------------------------------------------------

_LAMS = (1e-2, 0.3, 3.0)
_ridge_grid = jax.jit(jax.vmap(regression.predict_ridge, in_axes=(None, None, 0)))


def _ridge_reference(x_TxD, y_T, lam):
  x_TxD, y_T = x_TxD.astype(np.float64), y_T.astype(np.float64)
  pred_T = np.zeros(len(y_T))
  for t in range(1, len(y_T)):
    gram_DxD = x_TxD[:t].T @ x_TxD[:t] + lam * np.eye(x_TxD.shape[1])
    pred_T[t] = x_TxD[t] @ np.linalg.solve(gram_DxD, x_TxD[:t].T @ y_T[:t])
  return pred_T


def test_ridge_matches_closed_form_for_a_grid_of_lambdas():
  x_BxTxD, y_BxT = _linear_episodes(seed=5, noise=0.5)
  pred_LxBxT = np.asarray(_ridge_grid(x_BxTxD, y_BxT, np.asarray(_LAMS, np.float32)))
  for pred_BxT, lam in zip(pred_LxBxT, _LAMS):
    for b in range(4):
      np.testing.assert_allclose(pred_BxT[b], _ridge_reference(x_BxTxD[b], y_BxT[b], lam),
                                 rtol=1e-4, atol=1e-4, err_msg=f'lam = {lam}')
  # The bound default is the same function.
  default_BxT = np.asarray(_ridge_grid(x_BxTxD, y_BxT, np.asarray([regression.DEFAULT_RIDGE_LAM],
                                                                  np.float32)))[0]
  np.testing.assert_allclose(_predict(_JIT['ridge'], x_BxTxD, y_BxT), default_BxT, rtol=1e-6,
                             atol=1e-6)


def test_ridge_tends_to_least_squares():
  x_BxTxD, y_BxT = _linear_episodes(seed=6, noise=0.5)
  lams = np.asarray([1.0, 1e-2, 1e-4, 1e-6, 1e-8], np.float32)
  gap_L = np.abs(np.asarray(_ridge_grid(x_BxTxD, y_BxT, lams))
                 - _predict(_JIT['least_squares'], x_BxTxD, y_BxT)[None]).max(axis=(1, 2))
  print(f'max |ridge - least squares| for lam = {lams}: {gap_L}')
  # The gap shrinks like lam / s_min^2: slowest at t = D, where noisy data is interpolated
  # through the smallest singular values (s_min^2 ~ 1e-5 in these episodes).
  assert np.all(np.diff(gap_L) < 0)
  assert np.all(gap_L[3:] < 0.05 * gap_L[2:-1])  # Linear in lam once lam << s_min^2.
  assert gap_L[-1] < 1e-2


# --- Lasso ------------------------------------------------------------------------------------


@pytest.mark.parametrize('alpha', [0.01, 0.1])
def test_lasso_matches_sklearn(alpha):
  x_BxTxD, y_BxT = _linear_episodes(seed=7, noise=0.1, nonzeros=2)
  pred_BxT = _predict(_lasso, x_BxTxD, y_BxT, alpha=alpha)
  worst = 0.0
  for b in range(3):
    x_TxD, y_T = x_BxTxD[b].astype(np.float64), y_BxT[b].astype(np.float64)
    for t in range(1, T):
      with warnings.catch_warnings():
        warnings.simplefilter('ignore', exceptions.ConvergenceWarning)
        sk = linear_model.Lasso(alpha=alpha, fit_intercept=False, tol=1e-12,
                                max_iter=100_000).fit(x_TxD[:t], y_T[:t])
      ref = float(sk.predict(x_TxD[t:t + 1])[0])
      worst = max(worst, abs(pred_BxT[b, t] - ref) / (1.0 + abs(ref)))
  print(f'lasso alpha={alpha}: max relative gap to sklearn {worst:.2e}')
  assert worst < 1e-3


def test_lasso_weights_are_sparse_and_match_sklearn():
  x_BxTxD, y_BxT = _linear_episodes(seed=8, noise=0.1, nonzeros=2)
  ts = (3, 7, 11)
  w_NxD = _weights_at(_JIT['lasso'], x_BxTxD[0], y_BxT[0], ts)
  for w_D, t in zip(w_NxD, ts):
    sk = linear_model.Lasso(alpha=regression.DEFAULT_LASSO_ALPHA, fit_intercept=False, tol=1e-12,
                            max_iter=100_000).fit(x_BxTxD[0, :t].astype(np.float64),
                                                  y_BxT[0, :t].astype(np.float64))
    np.testing.assert_allclose(w_D, sk.coef_, atol=1e-3, err_msg=f't = {t}')
    np.testing.assert_array_equal(w_D == 0, sk.coef_ == 0)


# --- Gradient descent and averaging -----------------------------------------------------------

def _gd_reference(x_TxD, y_T, num_steps, lr):
  x_TxD, y_T = x_TxD.astype(np.float64), y_T.astype(np.float64)
  pred_T = np.zeros(len(y_T))
  for t in range(1, len(y_T)):
    w_D = np.zeros(x_TxD.shape[1])
    for _ in range(num_steps):
      w_D -= lr * x_TxD[:t].T @ (x_TxD[:t] @ w_D - y_T[:t]) / t
    pred_T[t] = w_D @ x_TxD[t]
  return pred_T


def test_gd_matches_numpy_loop():
  x_BxTxD, y_BxT = _linear_episodes(seed=9, noise=0.1)
  pred_BxT = _predict(_gd, x_BxTxD, y_BxT, num_steps=4, lr=0.15)
  for b in range(4):
    np.testing.assert_allclose(pred_BxT[b], _gd_reference(x_BxTxD[b], y_BxT[b], 4, 0.15),
                               rtol=1e-4, atol=1e-4)


def test_gd_one_step_is_lr_times_mean_of_y_x():
  x_BxTxD, y_BxT = _linear_episodes(seed=10, noise=0.1)
  lr = 0.3
  w_NxD = _weights_at(functools.partial(_gd, num_steps=1, lr=lr), x_BxTxD[0], y_BxT[0], (1, 4, 9))
  for w_D, t in zip(w_NxD, (1, 4, 9)):
    ref_D = lr * x_BxTxD[0, :t].astype(np.float64).T @ y_BxT[0, :t] / t
    np.testing.assert_allclose(w_D, ref_D, rtol=1e-5, atol=1e-5)
  # At lr = 1 one step is Garg's averaging estimator.
  np.testing.assert_allclose(_predict(_gd, x_BxTxD, y_BxT, num_steps=1, lr=1.0),
                             _predict(_JIT['averaging'], x_BxTxD, y_BxT), rtol=1e-5, atol=1e-5)


def test_tune_gd_lr_returns_the_grid_argmin():
  x_BxTxD, y_BxT = _linear_episodes(seed=11, noise=0.1)
  lrs = (0.01, 0.1, 0.3, 10.0)  # 10 diverges over 3 steps.
  lr, err_by_lr = regression.tune_gd_lr(x_BxTxD, y_BxT, num_steps=3, lrs=lrs)
  print(f'tune_gd_lr: {err_by_lr}')
  assert sorted(err_by_lr) == sorted(lrs)
  assert err_by_lr[lr] == min(err_by_lr.values())
  assert lr in (0.1, 0.3)
  pred_BxT = _predict(_gd, x_BxTxD, y_BxT, num_steps=3, lr=lr)
  mean_err = float(np.mean(regression.normalized_squared_error(pred_BxT, y_BxT, D)))
  np.testing.assert_allclose(err_by_lr[lr], mean_err, rtol=1e-4)


def test_averaging_matches_numpy():
  x_BxTxD, y_BxT = _linear_episodes(seed=12, noise=0.1)
  pred_BxT = _predict(_JIT['averaging'], x_BxTxD, y_BxT)
  x64_BxTxD = x_BxTxD.astype(np.float64)
  for b in range(4):
    for t in range(1, T):
      w_D = np.mean(y_BxT[b, :t, None] * x64_BxTxD[b, :t], axis=0)
      np.testing.assert_allclose(pred_BxT[b, t], w_D @ x64_BxTxD[b, t], rtol=1e-5, atol=1e-5)


# --- k nearest neighbours ---------------------------------------------------------------------


@pytest.mark.parametrize('k', [1, 3, 2 * T])
def test_knn_matches_numpy(k):
  x_BxTxD, y_BxT = _linear_episodes(seed=13, noise=0.1)
  pred_BxT = _predict(_knn, x_BxTxD, y_BxT, k=k)
  for b in range(B):
    for t in range(1, T):
      dist_J = np.sum((x_BxTxD[b, :t].astype(np.float64) - x_BxTxD[b, t]) ** 2, axis=-1)
      nearest = np.argsort(dist_J, kind='stable')[:k]
      np.testing.assert_allclose(pred_BxT[b, t], y_BxT[b, nearest].mean(), rtol=1e-6, atol=1e-6)


# --- Gaussian process -------------------------------------------------------------------------


@pytest.mark.parametrize('length_scale, noise, signal_var, tol', [
    (0.6, 1e-2, 1.0, 1e-4),
    (0.3, 0.1, 2.0, 1e-4),
    (0.6, 1e-4, 1.0, 1e-3),  # The PFN prior: K + 1e-4 I is ill-conditioned in float32.
])
def test_gp_posterior_mean_matches_dense_solve(length_scale, noise, signal_var, tol):
  rng = np.random.default_rng(14)
  x_BxTxD = rng.uniform(size=(B, T, D)).astype(np.float32)
  y_BxT = rng.normal(size=(B, T)).astype(np.float32)
  pred_BxT = _predict(_gp, x_BxTxD, y_BxT,
                      length_scale=length_scale, noise=noise, signal_var=signal_var)
  worst = 0.0
  for b in range(4):
    x_TxD, y_T = x_BxTxD[b].astype(np.float64), y_BxT[b].astype(np.float64)
    sq_TxT = np.sum((x_TxD[:, None] - x_TxD[None]) ** 2, axis=-1)
    k_TxT = signal_var * np.exp(-0.5 * sq_TxT / length_scale**2)
    for t in range(1, T):
      alpha_J = np.linalg.solve(k_TxT[:t, :t] + noise * np.eye(t), y_T[:t])
      worst = max(worst, abs(pred_BxT[b, t] - k_TxT[t, :t] @ alpha_J))
  print(f'gp noise={noise}: max |gap| to float64 solve {worst:.2e}')
  assert worst < tol


# --- Host (scikit-learn) estimators -----------------------------------------------------------


def test_tree_and_boosting_fit_each_prefix():
  x_BxTxD, y_BxT = _linear_episodes(seed=15, batch_size=1, noise=0.1)
  pred_tree_BxT = trees.predict_tree(x_BxTxD, y_BxT, max_depth=3)
  pred_boost_BxT = trees.predict_boosting(x_BxTxD, y_BxT, max_iter=5)
  x_TxD, y_T = x_BxTxD[0], y_BxT[0]
  for t in (1, 6, T - 1):
    ref_tree = tree.DecisionTreeRegressor(max_depth=3, random_state=0).fit(x_TxD[:t], y_T[:t])
    ref_boost = ensemble.HistGradientBoostingRegressor(
        max_iter=5, learning_rate=0.3, max_depth=6, max_leaf_nodes=None, min_samples_leaf=1,
        l2_regularization=1.0, early_stopping=False, random_state=0).fit(x_TxD[:t], y_T[:t])
    assert pred_tree_BxT[0, t] == np.float32(ref_tree.predict(x_TxD[t:t + 1])[0])
    np.testing.assert_allclose(pred_boost_BxT[0, t], ref_boost.predict(x_TxD[t:t + 1])[0],
                               rtol=1e-6)
  np.testing.assert_array_equal(pred_tree_BxT[:, 0], 0.0)
  # With one example a tree can only predict its label.
  np.testing.assert_array_equal(pred_tree_BxT[:, 1], y_BxT[:, 0])


# --- Metric and exports -----------------------------------------------------------------------


def test_normalized_squared_error_and_interval():
  pred_BxT = np.asarray([[0.0, 1.0], [2.0, 1.0]], np.float32)
  y_BxT = np.asarray([[1.0, 1.0], [0.0, 3.0]], np.float32)
  err_T = np.asarray(regression.normalized_squared_error(pred_BxT, y_BxT, 2))
  np.testing.assert_allclose(err_T, [(1.0 + 4.0) / 2 / 2, (0.0 + 4.0) / 2 / 2])
  mean_T, half_T = regression.normalized_squared_error_interval(pred_BxT, y_BxT, 2)
  np.testing.assert_allclose(mean_T, err_T)
  # Per-episode errors / d: [0.5, 2] and [0, 2]; sample std (ddof 1) / sqrt(2).
  np.testing.assert_allclose(half_T, 1.96 * np.asarray([1.5, 2.0]) / np.sqrt(2) / np.sqrt(2),
                             rtol=1e-6)


def test_the_registry_holds_every_learner_of_each_kind():
  assert sorted(registry.available(False)) == ['centroid', 'knn', 'knn3', 'logreg', 'majority',
                                               'sgd']
  assert sorted(REGRESSION_BASELINES) == [
      'averaging', 'gd', 'gp', 'knn', 'lasso', 'least_squares', 'ridge']
  assert sorted(HOST_REGRESSION_BASELINES) == ['boosting', 'tree', 'tree_depth4']
  assert classifiers.predict_knn is not regression.predict_knn
  assert registry.title('knn', regression=True) == 'nearest-neighbour regression'
