r"""How far above 1-NN a tuned classical learner gets on a run's unseen-task episodes.

  .venv/bin/python scripts/classical_ceiling.py --workdir DIR [--num_tasks_eval 1024]

Samples the run's unseen-task evaluation episodes exactly as `icl_jax.evaluate` does (the
very episodes of its table, drawn the run's own way), and at each of the last
`eval.last_positions` positions fits scikit-learn learners to the query's context: 1-NN
(the evaluator's best learner on digits), support-vector machines with an RBF and a linear
kernel, and linear discriminant analysis with Ledoit-Wolf shrinkage. Prints one JSON line:
each learner's accuracy over those positions and its paired difference to 1-NN with a 95%
interval (the evaluator's statistic). It tells how much room a meta-learned model has
above 1-NN on these episodes; the README's large-model section quotes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np
from sklearn import discriminant_analysis
from sklearn import neighbors
from sklearn import svm

from episode_repeats import run_config
from episode_repeats import unseen_episodes
from icl_jax import learning_curves
from icl_jax.errors import UserError

LEARNERS = {
    'knn': lambda: neighbors.KNeighborsClassifier(1),
    'svm_rbf': lambda: svm.SVC(C=10.0, gamma='scale'),
    'svm_linear': lambda: svm.SVC(C=1.0, kernel='linear'),
    'lda_shrinkage': lambda: discriminant_analysis.LinearDiscriminantAnalysis(
        solver='lsqr', shrinkage='auto'),
}


def correct(x_BxTxD: np.ndarray, y_BxT: np.ndarray, positions: int) -> dict[str, np.ndarray]:
  """learner -> correct_BxK over the last `positions` queries (each fit on its context)."""
  b, t, _ = x_BxTxD.shape
  out = {name: np.zeros((b, positions), bool) for name in LEARNERS}
  for i in range(b):
    for j, q in enumerate(range(t - positions, t)):
      x_KxD, y_K = x_BxTxD[i, :q], y_BxT[i, :q]
      classes = np.unique(y_K)
      for name, make in LEARNERS.items():
        if len(classes) < 2:  # One class seen: every learner can only answer it.
          guess = y_K[0]
        elif name == 'lda_shrinkage' and len(y_K) <= len(classes):
          # LDA needs more examples than classes; with one of each it is nearest centroid.
          mean_CxD = np.stack([x_KxD[y_K == c].mean(0) for c in classes])
          guess = classes[((mean_CxD - x_BxTxD[i, q])**2).sum(-1).argmin()]
        else:
          with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # LDA's collinearity warnings at D > K.
            guess = make().fit(x_KxD, y_K).predict(x_BxTxD[i, q:q + 1])[0]
        out[name][i, j] = guess == y_BxT[i, q]
  return out


def measure(workdir: str, num_episodes: int) -> dict:
  config = run_config(workdir)
  if config.task.family != 'projected':
    raise UserError(f'{workdir} trained the {config.task.family!r} family; this compares '
                    'classifiers on dataset episodes (family "projected").')
  x_BxTxD, y_BxT = unseen_episodes(config, num_episodes)
  positions = min(config.eval.last_positions, x_BxTxD.shape[1] - 1)
  scores = correct(x_BxTxD, y_BxT, positions)
  return {
      'workdir': workdir, 'episodes': len(y_BxT), 'last_positions': positions,
      'examples': 'distinct' if config.task.distinct_examples else 'replacement',
      'accuracy': {name: float(c.mean()) for name, c in scores.items()},
      'vs_knn': {name: learning_curves.paired(c, scores['knn'], positions)
                 for name, c in scores.items() if name != 'knn'},
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--num_tasks_eval', type=int, default=1024)
  a = parser.parse_args()
  try:
    if not 1 <= a.num_tasks_eval < 2**31:
      raise UserError(f'--num_tasks_eval must lie in [1, 2**31), got {a.num_tasks_eval}.')
    print(json.dumps(measure(a.workdir, a.num_tasks_eval)))
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  main()
