"""Classical in-context baselines: causality, accuracy, agreement with reference implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets
from sklearn import linear_model

from icl_jax.baselines import classifiers
from icl_jax.baselines import logreg
from icl_jax.baselines import registry

# The classifiers as registered, with their default hyperparameters.
BASELINES = {name: b.predict for name, b in registry.available(regression=False).items()}

# Blobs: well separated, linearly separable toy episodes.
B, T, D, C = 64, 40, 5, 3
# Digits: sklearn's 8x8 digits under a random projection and label permutation.
DIGITS_B, DIGITS_T, DIGITS_C = 256, 50, 10

# Jitted once per learner and reused across tests (each test uses one of two shapes).
# SGD takes its rate as a traced argument so that the tuned rate needs no recompilation.
_JIT = {name: jax.jit(fn, static_argnums=2) for name, fn in BASELINES.items()}
_JIT['sgd'] = jax.jit(classifiers.predict_sgd, static_argnames='num_classes')
_fit_logreg = jax.jit(logreg.fit_logreg, static_argnames='num_classes')
_accuracy = jax.jit(classifiers.accuracy_per_position)


def _predict(name, x_BxTxD, y_BxT, num_classes, **kw):
  return np.asarray(_JIT[name](jnp.asarray(x_BxTxD), jnp.asarray(y_BxT), num_classes, **kw))


def _last10(scores_BxTxC, y_BxT):
  return float(np.mean(_accuracy(jnp.asarray(scores_BxTxC), jnp.asarray(y_BxT))[-10:]))


@pytest.fixture(scope='module')
def blobs():
  """Class c is N(10 * e_c, I) in D=5: separated by ~14 standard deviations."""
  rng = np.random.default_rng(0)
  y_BxT = rng.integers(0, C, (B, T)).astype(np.int32)
  means_CxD = 10.0 * np.eye(C, D)
  x_BxTxD = (means_CxD[y_BxT] + rng.normal(size=(B, T, D))).astype(np.float32)
  return x_BxTxD, y_BxT


@pytest.fixture(scope='module')
def blob_scores(blobs):
  return {name: _predict(name, *blobs, C) for name in BASELINES}


def _digits_episodes(seed, batch_size):
  x_NxD, y_N = datasets.load_digits(return_X_y=True)
  std_D = x_NxD.std(0)
  x_NxD = (x_NxD - x_NxD.mean(0)) / np.where(std_D > 0, std_D, 1.0)
  rng = np.random.default_rng(seed)
  num_features = x_NxD.shape[1]
  idx_BxT = rng.integers(0, len(x_NxD), (batch_size, DIGITS_T))
  a_BxDxD = rng.normal(size=(batch_size, num_features, num_features)) / np.sqrt(num_features)
  perm_BxC = np.stack([rng.permutation(DIGITS_C) for _ in range(batch_size)])
  x_BxTxD = np.einsum('btd,bed->bte', x_NxD[idx_BxT], a_BxDxD).astype(np.float32)
  y_BxT = np.take_along_axis(perm_BxC, y_N[idx_BxT], axis=1).astype(np.int32)
  return x_BxTxD, y_BxT


@pytest.fixture(scope='module')
def digits():
  return _digits_episodes(seed=1, batch_size=DIGITS_B)


@pytest.fixture(scope='module')
def tuned_sgd(digits):
  # Tuned on other (training) episodes than the ones it is scored on.
  return classifiers.tune_sgd_lr(*_digits_episodes(seed=2, batch_size=DIGITS_B), DIGITS_C)


# --- Causality -------------------------------------------------------------------------------

_POSITIONS = (0, 1, 5, 17, 38)


def _variants(x_TxD, y_T):
  """Perturbations of one episode that must not change predictions at positions <= t."""
  rng = np.random.default_rng(3)
  xs, ys, kinds = [], [], []
  for t in _POSITIONS:
    y = y_T.copy()
    y[t] = (y[t] + 1) % C
    xs.append(x_TxD), ys.append(y), kinds.append(('y_t', t))
    y = y_T.copy()
    y[t + 1:] = rng.integers(0, C, T - t - 1)
    xs.append(x_TxD), ys.append(y), kinds.append(('later y', t))
    x = x_TxD.copy()
    x[t + 1:] = rng.normal(size=x[t + 1:].shape) * 10.0
    xs.append(x), ys.append(y_T), kinds.append(('later x', t))
    y = y_T.copy()
    y[:t] = (y[:t] + 1) % C
    xs.append(x_TxD), ys.append(y), kinds.append(('earlier y', t))
  return np.stack(xs), np.stack(ys), kinds


@pytest.mark.parametrize('name', sorted(BASELINES))
def test_no_leakage_and_depends_on_context(name, blobs, blob_scores):
  x_BxTxD, y_BxT = blobs
  x_VxTxD, y_VxT, kinds = _variants(x_BxTxD[0], y_BxT[0])
  pad = B - len(kinds)  # Pad to the blobs batch size so the compiled function is reused.
  x_BxTxD = np.concatenate([x_VxTxD, np.repeat(x_VxTxD[:1], pad, axis=0)])
  y_BxT = np.concatenate([y_VxT, np.repeat(y_VxT[:1], pad, axis=0)])
  scores_BxTxC = _predict(name, x_BxTxD, y_BxT, C)
  base_TxC = blob_scores[name][0]
  for v, (kind, t) in enumerate(kinds):
    if kind == 'earlier y':
      if t > 0:  # Relabelling the context must move the scores at t.
        assert not np.allclose(scores_BxTxC[v, t], base_TxC[t]), (kind, t)
    else:
      np.testing.assert_allclose(scores_BxTxC[v, :t + 1], base_TxC[:t + 1], rtol=1e-6, atol=1e-6,
                                 err_msg=f'{name}: {kind} changed positions <= {t}')


@pytest.mark.parametrize('name', sorted(BASELINES))
def test_first_position_scores_are_all_equal(name, blob_scores):
  scores_BxC = blob_scores[name][:, 0]
  np.testing.assert_array_equal(scores_BxC, np.broadcast_to(scores_BxC[:, :1], scores_BxC.shape))


# --- Accuracy --------------------------------------------------------------------------------


@pytest.mark.parametrize('name', sorted(set(BASELINES) - {'majority'}))
def test_separable_blobs_are_learned(name, blobs, blob_scores):
  assert _last10(blob_scores[name], blobs[1]) >= 0.95


def test_majority_is_near_chance_on_balanced_blobs(blobs, blob_scores):
  assert 0.2 < _last10(blob_scores['majority'], blobs[1]) < 0.5


@pytest.mark.parametrize('name, floor', [('knn', 0.5), ('logreg', 0.5), ('centroid', 0.5)])
def test_digits_well_above_chance(name, floor, digits):
  acc = _last10(_predict(name, *digits, DIGITS_C), digits[1])
  print(f'digits last-10 accuracy {name}: {acc:.4f}')
  assert acc > floor


def test_digits_tuned_sgd_above_chance(digits, tuned_sgd):
  lr, _ = tuned_sgd
  acc = _last10(_predict('sgd', *digits, DIGITS_C, lr=lr), digits[1])
  print(f'digits last-10 accuracy sgd (lr={lr}): {acc:.4f}')
  assert acc > 0.3


def test_accuracy_per_position():
  scores_BxTxC = jnp.asarray([[[0., 1.], [1., 0.]], [[0., 1.], [0., 1.]]])
  y_BxT = jnp.asarray([[1, 1], [1, 1]], jnp.int32)
  np.testing.assert_allclose(classifiers.accuracy_per_position(scores_BxTxC, y_BxT), [1.0, 0.5])


# --- Reference implementations ----------------------------------------------------------------


def _sgd_reference(x_TxD, y_T, num_classes, lr):
  w_DxC = np.zeros((x_TxD.shape[1], num_classes))
  b_C = np.zeros(num_classes)
  scores = []
  for x_D, y in zip(x_TxD.astype(np.float64), y_T):
    logits_C = x_D @ w_DxC + b_C
    scores.append(logits_C)
    p_C = np.exp(logits_C - logits_C.max())
    err_C = p_C / p_C.sum()
    err_C[y] -= 1.0
    w_DxC -= lr * np.outer(x_D, err_C)
    b_C -= lr * err_C
  return np.stack(scores)


def test_sgd_matches_numpy_loop(blobs):
  lr = 0.05
  scores_BxTxC = _predict('sgd', *blobs, C, lr=lr)
  for b in range(3):
    ref_TxC = _sgd_reference(blobs[0][b], blobs[1][b], C, lr)
    np.testing.assert_allclose(scores_BxTxC[b], ref_TxC, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(scores_BxTxC[b].argmax(-1), ref_TxC.argmax(-1))


def test_tune_sgd_lr_returns_the_grid_argmax(digits, tuned_sgd):
  lr, acc_by_lr = tuned_sgd
  assert lr in classifiers.SGD_LR_GRID
  assert sorted(acc_by_lr) == sorted(classifiers.SGD_LR_GRID)
  assert acc_by_lr[lr] == max(acc_by_lr.values())
  print(f'tune_sgd_lr on digits: {acc_by_lr}')


def _centroid_reference(x_TxD, y_T, num_classes):
  scores = np.zeros((len(y_T), num_classes))
  for t in range(1, len(y_T)):
    for c in range(num_classes):
      members = x_TxD[:t][y_T[:t] == c].astype(np.float64)
      scores[t, c] = -np.sum((x_TxD[t] - members.mean(0)) ** 2) if len(members) else -np.inf
  return scores


def test_centroid_matches_numpy(blobs, blob_scores):
  for b in range(4):
    ref_TxC = _centroid_reference(blobs[0][b], blobs[1][b], C)
    np.testing.assert_allclose(blob_scores['centroid'][b], ref_TxC, rtol=1e-4, atol=1e-3)


def test_centroid_ignores_unseen_classes():
  # Class 2 lies right on the query but is only seen after it.
  x_1xTxD = np.zeros((1, 4, 2), np.float32)
  x_1xTxD[0, :, 0] = [0.0, 10.0, 5.0, 5.0]
  y_1xT = np.asarray([[0, 1, 2, 2]], np.int32)
  predict = jax.jit(classifiers.predict_centroid, static_argnums=2)
  scores_TxC = np.asarray(predict(x_1xTxD, y_1xT, 3))[0]
  assert np.all(np.isneginf(scores_TxC[1:3, 2]))
  assert scores_TxC[3].argmax() == 2


def test_majority_matches_numpy(blobs, blob_scores):
  y_BxT = blobs[1]
  ref_BxTxC = np.stack([[np.bincount(y_T[:t], minlength=C) for t in range(T)] for y_T in y_BxT])
  np.testing.assert_array_equal(blob_scores['majority'], ref_BxTxC)


def _knn_reference_predictions(x_TxD, y_T, num_classes, k):
  preds = np.zeros(len(y_T), np.int64)
  for t in range(1, len(y_T)):
    dist_J = np.sum((x_TxD[:t].astype(np.float64) - x_TxD[t]) ** 2, axis=-1)
    order = np.argsort(dist_J, kind='stable')[:k]
    votes_C = np.bincount(y_T[order], minlength=num_classes).astype(np.float64)
    votes_C[y_T[order[0]]] += 0.5  # Ties go to the nearest neighbour's class.
    preds[t] = votes_C.argmax()
  return preds


@pytest.mark.parametrize('name, k', [('knn', 1), ('knn3', 3)])
def test_knn_matches_numpy(name, k, digits):
  x_BxTxD, y_BxT = digits[0][:B], digits[1][:B]
  preds_BxT = _predict(name, *digits, DIGITS_C).argmax(-1)[:B]
  ref_BxT = np.stack([_knn_reference_predictions(x, y, DIGITS_C, k)
                      for x, y in zip(x_BxTxD, y_BxT)])
  np.testing.assert_array_equal(preds_BxT, ref_BxT)


def test_logreg_matches_sklearn_at_the_last_position(digits):
  n = DIGITS_T - 1
  # sklearn drops classes absent from the data, ours keeps them (penalised): pick an episode
  # whose prefix holds every class so both fit the same model.
  e = next(e for e, y_T in enumerate(digits[1]) if len(np.unique(y_T[:n])) == DIGITS_C)
  x_TxD, y_T = digits[0][e], digits[1][e]
  fit = _fit_logreg(x_TxD[:n], y_T[:n], num_classes=DIGITS_C)
  assert float(fit.suboptimality_bound) < 1e-5  # Certified: converged to the optimum.

  # Same objective in sklearn's terms: C * sum CE + ||W||^2 / 2 on [x, 1], no free intercept.
  xt_NxD1 = np.concatenate([x_TxD[:n], np.ones((n, 1))], axis=1).astype(np.float64)
  reg = logreg.DEFAULT_L2 * np.linalg.norm(xt_NxD1.T @ xt_NxD1 / n)
  sk = linear_model.LogisticRegression(C=1.0 / (reg * n), fit_intercept=False, tol=1e-10,
                                       max_iter=10_000).fit(xt_NxD1, y_T[:n])
  w_D1xC = np.concatenate([np.asarray(fit.w_DxC), np.asarray(fit.b_C)[None]], axis=0)
  np.testing.assert_allclose(w_D1xC, sk.coef_.T, atol=1e-3 * np.abs(sk.coef_).max())

  # Held-out inputs: the other episodes' inputs (projected differently, but any x will do).
  xh_NxD = np.delete(digits[0], e, axis=0).reshape(-1, x_TxD.shape[1])
  logits_NxC = xh_NxD @ np.asarray(fit.w_DxC) + np.asarray(fit.b_C)
  sk_logits_NxC = sk.decision_function(np.concatenate([xh_NxD, np.ones((len(xh_NxD), 1))], 1))
  agreement = np.mean(logits_NxC.argmax(-1) == sk_logits_NxC.argmax(-1))
  assert agreement > 0.999, agreement

  # predict_logreg's model at the last position is the same fit.
  scores_TxC = _predict('logreg', *digits, DIGITS_C)[e]
  np.testing.assert_allclose(scores_TxC[-1], x_TxD[-1] @ np.asarray(fit.w_DxC) + fit.b_C,
                             rtol=1e-4, atol=1e-4)
