"""Classical learners run in context on the same episodes a meta-trained model sees.

Every learner has the signature

  predict_<name>(x_BxTxD, y_BxT, num_classes, **hparams) -> scores_BxTxC

and at position t uses only the labelled examples (x_j, y_j), j < t, and the query x_t; its
prediction is argmax over C of the float32 scores (ties go to the lowest class index). At t = 0
there are no examples and every class scores the same. `num_classes`, `k` and `num_iters` are
static under jit (the rates `lr` and `l2` may be traced); all learners are pure, vmapped over
episodes, and vectorised over positions except online SGD, which scans over them because it is
sequential by nature.

Chance (1/C) is deliberately not a learner here: all-equal scores would read as "always class 0",
so reporting code should draw 1/C as a line instead.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from icl_jax.baselines.common import before_matrix
from icl_jax.baselines.common import check_episodes
from icl_jax.baselines.common import nearest_earlier
from icl_jax.baselines.logreg import predict_logreg
from icl_jax.baselines.registry import Baseline
from icl_jax.baselines.registry import CLASSIFICATION
from icl_jax.baselines.registry import register

# Picked by `tune_sgd_lr` on z-normalised, projected digits episodes (inputs of squared norm
# ~D = 64); tune again for other data: the best rate scales like 1 / ||x||^2.
DEFAULT_SGD_LR = 0.1
SGD_LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)

_HIGHEST = jax.lax.Precision.HIGHEST


def accuracy_per_position(scores_BxTxC: jax.Array, y_BxT: jax.Array) -> jax.Array:
  """Fraction of episodes whose argmax prediction is right, per position: acc_T."""
  correct_BxT = jnp.argmax(scores_BxTxC, axis=-1) == y_BxT
  return jnp.mean(correct_BxT.astype(jnp.float32), axis=0)


def predict_sgd(x_BxTxD: jax.Array, y_BxT: jax.Array, num_classes: int,
                lr: float | jax.Array = DEFAULT_SGD_LR) -> jax.Array:
  """Online SGD on a linear softmax classifier (the GPICL paper's "SGD" baseline).

  W_DxC and b_C start at zero; at position t the scores are the current logits of x_t, then W
  and b take one cross-entropy gradient step on (x_t, y_t). `lr` may be traced, so a grid of
  rates can be vmapped (see `tune_sgd_lr`).
  """
  check_episodes(x_BxTxD, y_BxT)
  num_features = x_BxTxD.shape[-1]

  def episode(x_TxD, y_T):
    def step(carry, example):
      w_DxC, b_C = carry
      x_D, y = example
      logits_C = jnp.matmul(x_D, w_DxC, precision=_HIGHEST) + b_C
      # d CE / d logits = softmax - onehot.
      err_C = jax.nn.softmax(logits_C) - jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
      return (w_DxC - lr * jnp.outer(x_D, err_C), b_C - lr * err_C), logits_C

    init = (jnp.zeros((num_features, num_classes), jnp.float32),
            jnp.zeros((num_classes,), jnp.float32))
    _, scores_TxC = jax.lax.scan(step, init, (x_TxD, y_T))
    return scores_TxC

  return jax.vmap(episode)(x_BxTxD.astype(jnp.float32), y_BxT)


@functools.partial(jax.jit, static_argnames='num_classes')
def _sgd_accuracy_by_lr(x_BxTxD, y_BxT, lr_L, num_classes):
  def accuracy(lr):
    return jnp.mean(accuracy_per_position(predict_sgd(x_BxTxD, y_BxT, num_classes, lr), y_BxT))
  return jax.vmap(accuracy)(lr_L)


def tune_sgd_lr(x_BxTxD: jax.Array, y_BxT: jax.Array, num_classes: int,
                grid: Sequence[float] = SGD_LR_GRID) -> tuple[float, dict[float, float]]:
  """Picks the SGD learning rate maximising mean accuracy over positions on these episodes.

  Tune on training-task episodes, then evaluate with the returned rate (record it with the
  results). The whole grid runs as one vmapped call.

  Returns:
    (best_lr, {lr: mean accuracy}); ties go to the first rate in `grid`.
  """
  check_episodes(x_BxTxD, y_BxT)
  lr_L = jnp.asarray(grid, jnp.float32)
  acc_L = jax.device_get(_sgd_accuracy_by_lr(x_BxTxD, y_BxT, lr_L, num_classes))
  acc_by_lr = {float(lr): float(acc) for lr, acc in zip(grid, acc_L)}
  best_lr = float(grid[int(acc_L.argmax())])
  return best_lr, acc_by_lr


def predict_knn(x_BxTxD: jax.Array, y_BxT: jax.Array, num_classes: int, k: int = 1) -> jax.Array:
  """k-nearest-neighbour vote (Euclidean) among the examples before t, k = min(k, t).

  Scores are vote counts plus 1/2 for the nearest neighbour's class, so a tied vote goes to the
  class of the nearest neighbour (rather than the lowest class index, which a label permutation
  would make arbitrary) and a strict majority always wins.
  """
  check_episodes(x_BxTxD, y_BxT)
  k = min(k, x_BxTxD.shape[1])

  def episode(x_TxD, y_T):
    valid_TxK, idx_TxK = nearest_earlier(x_TxD, k)
    weight_TxK = valid_TxK * (1.0 + 0.5 * (jnp.arange(k) == 0))[None, :]
    votes_TxKxC = jax.nn.one_hot(y_T[idx_TxK], num_classes, dtype=jnp.float32)
    return jnp.einsum('tk,tkc->tc', weight_TxK, votes_TxKxC)

  return jax.vmap(episode)(x_BxTxD.astype(jnp.float32), y_BxT)


def predict_centroid(x_BxTxD: jax.Array, y_BxT: jax.Array, num_classes: int) -> jax.Array:
  """Nearest class centroid (Euclidean) among the classes seen before t.

  Scores are minus squared distances; classes not seen yet score -inf, so they are never
  predicted while any class has been seen (all zeros at t = 0).
  """
  check_episodes(x_BxTxD, y_BxT)
  before_TxT = before_matrix(x_BxTxD.shape[1])

  def episode(x_TxD, y_T):
    y1h_TxC = jax.nn.one_hot(y_T, num_classes, dtype=jnp.float32)
    count_TxC = jnp.matmul(before_TxT, y1h_TxC, precision=_HIGHEST)
    sum_TxCxD = jnp.einsum('tj,jc,jd->tcd', before_TxT, y1h_TxC, x_TxD, precision=_HIGHEST)
    centroid_TxCxD = sum_TxCxD / jnp.maximum(count_TxC, 1.0)[:, :, None]
    diff_TxCxD = x_TxD[:, None, :] - centroid_TxCxD
    scores_TxC = jnp.where(count_TxC > 0, -jnp.sum(diff_TxCxD * diff_TxCxD, axis=-1), -jnp.inf)
    any_seen_Tx1 = jnp.any(count_TxC > 0, axis=-1, keepdims=True)
    return jnp.where(any_seen_Tx1, scores_TxC, 0.0)

  return jax.vmap(episode)(x_BxTxD.astype(jnp.float32), y_BxT)


def predict_majority(x_BxTxD: jax.Array, y_BxT: jax.Array, num_classes: int) -> jax.Array:
  """Counts of each label before t: predicts the most frequent one (lowest index on ties)."""
  check_episodes(x_BxTxD, y_BxT)
  y1h_BxTxC = jax.nn.one_hot(y_BxT, num_classes, dtype=jnp.float32)
  return jnp.einsum('tj,bjc->btc', before_matrix(y_BxT.shape[1]), y1h_BxTxC, precision=_HIGHEST)


# The paper's rows, in its order. SGD's rate is picked on training-pool tasks.
for _baseline in (
    Baseline('sgd', 'SGD (lr tuned)', CLASSIFICATION,
             functools.partial(predict_sgd, lr=DEFAULT_SGD_LR), tune=tune_sgd_lr),
    Baseline('logreg', 'logistic regression', CLASSIFICATION, predict_logreg),
    Baseline('knn', '1-nearest neighbour', CLASSIFICATION, functools.partial(predict_knn, k=1)),
    Baseline('knn3', '3-nearest neighbours', CLASSIFICATION,
             functools.partial(predict_knn, k=3)),
    Baseline('centroid', 'nearest centroid', CLASSIFICATION, predict_centroid),
    Baseline('majority', 'majority label', CLASSIFICATION, predict_majority),
):
  register(_baseline)
