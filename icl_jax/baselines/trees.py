"""Decision trees and gradient boosting in context: scikit-learn, fit on the host.

Same signature as the JAX regressors in regression.py (x_BxTxD, y_BxT -> pred_BxT, the
prediction at t from the examples before it), but numpy in and out and not jit-able:
registered as host learners, which the Evaluator calls outside jit.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import numpy as np
from sklearn import ensemble
from sklearn import tree
import threadpoolctl

from icl_jax.baselines.common import check_episodes
from icl_jax.baselines.registry import Baseline
from icl_jax.baselines.registry import REGRESSION
from icl_jax.baselines.registry import register


def _host_per_prefix(x_BxTxD: np.ndarray | jax.Array, y_BxT: np.ndarray | jax.Array,
                     make_model: Callable[[], object]) -> np.ndarray:
  x_BxTxD = np.asarray(x_BxTxD, np.float32)
  y_BxT = np.asarray(y_BxT, np.float32)
  check_episodes(x_BxTxD, y_BxT)
  batch_size, seq_len, _ = x_BxTxD.shape
  pred_BxT = np.zeros((batch_size, seq_len), np.float32)
  # OpenMP threads only add start-up and spin-wait costs on a few dozen examples: measured 40x
  # slower for HistGradientBoostingRegressor on a busy 2-core host.
  with threadpoolctl.threadpool_limits(limits=1):
    for b in range(batch_size):
      for t in range(1, seq_len):
        model = make_model().fit(x_BxTxD[b, :t], y_BxT[b, :t])
        pred_BxT[b, t] = model.predict(x_BxTxD[b, t:t + 1])[0]
  return pred_BxT


def predict_tree(x_BxTxD: np.ndarray | jax.Array, y_BxT: np.ndarray | jax.Array,
                 max_depth: int | None = None, random_state: int = 0) -> np.ndarray:
  """scikit-learn's `DecisionTreeRegressor` fit on each prefix, on the host: pred_BxT (numpy).

  Not reimplemented in JAX: growing a tree is data-dependent control flow (which split, how deep,
  when to stop) that jit cannot express without padding every node to the worst case; a maintained
  implementation is also the reference Garg et al. compare against (max_depth 4 and None). One
  fit per prefix and episode in a Python loop, not jit-able: for small evaluation sets (~1 ms a
  fit). `random_state` fixes the tie-breaking among equally good splits.
  """
  return _host_per_prefix(x_BxTxD, y_BxT, lambda: tree.DecisionTreeRegressor(
      max_depth=max_depth, random_state=random_state))


def predict_boosting(x_BxTxD: np.ndarray | jax.Array, y_BxT: np.ndarray | jax.Array,
                     max_iter: int = 100, learning_rate: float = 0.3,
                     max_depth: int | None = 6, min_samples_leaf: int = 1,
                     l2_regularization: float = 1.0, random_state: int = 0) -> np.ndarray:
  """scikit-learn's `HistGradientBoostingRegressor` fit on each prefix, on the host: pred_BxT.

  Not JAX for the same reason as `predict_tree`. The defaults follow XGBoost's (Garg et al.'s
  boosting baseline: 100 rounds, rate 0.3, depth 6, L2 1, leaves down to one example) rather than
  sklearn's, whose 20-example minimum leaf would leave every prefix shorter than 40 a constant.
  Early stopping is off, so every fit is deterministic and uses all `max_iter` rounds. About
  0.1 s a fit at the defaults: for small evaluation sets only.
  """
  return _host_per_prefix(x_BxTxD, y_BxT, lambda: ensemble.HistGradientBoostingRegressor(
      max_iter=max_iter, learning_rate=learning_rate, max_depth=max_depth, max_leaf_nodes=None,
      min_samples_leaf=min_samples_leaf, l2_regularization=l2_regularization,
      early_stopping=False, random_state=random_state))


# Host-side (scikit-learn) learners. The trees are compared by default on the tree prior;
# boosting (~0.1 s a fit) only when asked for.
for _baseline in (
    Baseline('tree', 'decision tree', REGRESSION, predict_tree, host=True,
             default=lambda family: family == 'tree'),
    Baseline('tree_depth4', 'decision tree (depth 4)', REGRESSION,
             functools.partial(predict_tree, max_depth=4), host=True,
             default=lambda family: family == 'tree'),
    Baseline('boosting', 'gradient boosting', REGRESSION, predict_boosting, host=True,
             default=lambda family: False),
):
  register(_baseline)
