r"""How often a query repeats an earlier example of its episode, and what that gives 1-NN.

  .venv/bin/python scripts/episode_repeats.py --workdir DIR [--num_tasks_eval 1024] [--position 49]

Samples a run's unseen-task evaluation episodes exactly as `icl_jax.evaluate` does (the
same keys, so the very episodes of its table), once with examples drawn distinct and once
with replacement, and prints one JSON line per way: the share of queries at `--position`
that are an exact repeat of an earlier example of their episode, and 1-NN's accuracy there
on all queries, on the repeats and on the others. The README's comparison of the two ways
of drawing comes from it.
"""

from __future__ import annotations

import argparse
import json
import sys

import ml_collections
import numpy as np

from icl_jax import recovery
from icl_jax import evaluator
from icl_jax import sharding
from icl_jax import steps
from icl_jax import workload
from icl_jax.errors import UserError


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's stored config, set to evaluate on every device as `icl_jax.evaluate` does."""
  reader, _, config = recovery.open_run(workdir, None)
  reader.store.close()
  config.mesh.data = config.mesh.run = -1
  return config


def unseen_episodes(config: ml_collections.ConfigDict,
                    num_episodes: int) -> tuple[np.ndarray, np.ndarray]:
  """(x_BxTxD, y_BxT): the run's unseen-task evaluation episodes as `icl_jax.evaluate`
  samples them (the same keys, the config's way of drawing examples)."""
  wl = workload.build(config)
  mesh = sharding.make_mesh(config.mesh)
  unseen = evaluator.make_eval_sets(wl, mesh)[1]
  run = sharding.put(steps.run_values(config), sharding.replicated(mesh))
  episodes = evaluator.Evaluator(wl, mesh, [unseen], num_episodes).episodes(unseen, run)
  return (np.concatenate([np.asarray(e.x_BxTxD) for e in episodes]),
          np.concatenate([np.asarray(e.y_BxT) for e in episodes]))


def measure(workdir: str, num_episodes: int,
            position: int | None = None) -> list[dict[str, float]]:
  """One dict per way of drawing (distinct, then with replacement); `position`: default
  the last."""
  config = run_config(workdir)
  if position is None:
    position = config.task.seq_len - 1
  if not 1 <= position < config.task.seq_len:
    raise UserError(f'--position must lie in [1, {config.task.seq_len - 1}], got {position}.')
  out = []
  for distinct in (True, False):
    config.task.distinct_examples = distinct
    x_BxTxD, y_BxT = unseen_episodes(config, num_episodes)
    dist_BxK = ((x_BxTxD[:, :position] - x_BxTxD[:, position:position + 1])**2).sum(-1)
    repeat_B = dist_BxK.min(1) == 0.0
    nn_B = dist_BxK.argmin(1)
    correct_B = y_BxT[np.arange(len(y_BxT)), nn_B] == y_BxT[:, position]
    out.append({
        'examples': 'distinct' if distinct else 'replacement', 'position': position,
        'episodes': int(len(repeat_B)), 'repeats': float(repeat_B.mean()),
        'knn_accuracy': float(correct_B.mean()),
        'knn_accuracy_on_repeats': float(correct_B[repeat_B].mean()) if repeat_B.any() else None,
        'knn_accuracy_on_others': float(correct_B[~repeat_B].mean()),
    })
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--num_tasks_eval', type=int, default=1024)
  parser.add_argument('--position', type=int, default=None, help='default: the last')
  a = parser.parse_args()
  try:
    if not 1 <= a.num_tasks_eval < 2**31:
      raise UserError(f'--num_tasks_eval must lie in [1, 2**31), got {a.num_tasks_eval}.')
    lines = measure(a.workdir, a.num_tasks_eval, a.position)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  for line in lines:
    print(json.dumps(line))


if __name__ == '__main__':
  main()
