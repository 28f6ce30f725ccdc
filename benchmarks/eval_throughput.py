r"""Meta-test throughput: episodes/s of the model and of each classical baseline.

  python benchmarks/eval_throughput.py [--config gpicl_digits] [--episodes 256] \
      [--calls 5] [--windows 5] [--budget 10]

One JSON line per method: episodes/s through `evaluator.Evaluator`, the very programs
`icl_jax.evaluate` runs (the model's compiled prediction and each baseline's, on one chunk
of unseen-task episodes), with the median and spread over timed windows (compile
excluded). The model is freshly initialised: its speed does not depend on its weights.
  gpicl_digits  experiments/gpicl_digits.py (width 64, 2 layers, T = 50, context/query).
  gpicl_paper   width 256, 4 layers, 8 heads, T = 100, the paper's prompt, on digits.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from icl_jax.baselines import registry  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import steps as steps_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import workload  # pylint: disable=g-import-not-at-top,wrong-import-position
import sampler_throughput  # pylint: disable=g-import-not-at-top,wrong-import-position
import train_throughput  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='gpicl_digits')
  parser.add_argument('--episodes', type=int, default=256, help='Episodes per call (a chunk).')
  parser.add_argument('--calls', type=int, default=5, help='Calls per timed window (at most).')
  parser.add_argument('--windows', type=int, default=5)
  parser.add_argument('--budget', type=float, default=None, help='Seconds per method.')
  parser.add_argument('--baselines', default=','.join(registry.available(regression=False)))
  args = parser.parse_args()

  config = (sampler_throughput.gpicl_digits_config() if args.config == 'gpicl_digits' else
            train_throughput.gpicl_paper_config())
  wl = workload.build(config)
  mesh = sharding.make_mesh(config.mesh)
  run = sharding.put(steps_lib.run_values(config), sharding.replicated(mesh))
  params = jax.jit(wl.init)(run)['params']
  names = [n for n in args.baselines.split(',') if n]
  fns = {n: registry.available(regression=False)[n].predict for n in names}
  sets = evaluator_lib.make_eval_sets(wl, mesh)
  evaluator = evaluator_lib.Evaluator(wl, mesh, sets[1:2], args.episodes, fns)
  [episode] = evaluator.episodes(sets[1], run)[:1]
  episodes = episode.y_BxT.shape[0]
  methods = {config.model.name: lambda i: evaluator._model(params, episode)}  # pylint: disable=protected-access
  for name in names:
    methods[name] = lambda i, fn=evaluator._baselines[name]: fn(episode)  # pylint: disable=protected-access
  for name, call in methods.items():
    rate = common.windows(call, episodes, args.calls, args.windows, args.budget)
    record = common.header('eval_throughput')
    record.update({
        'config': args.config, 'method': name, 'episodes_per_call': episodes,
        'seq_len': config.task.seq_len, 'episodes_per_sec': rate['median'],
        'episodes_per_sec_min': rate['min'], 'episodes_per_sec_max': rate['max'],
        'windows': rate['windows'], 'calls_per_window': rate['calls_per_window'],
    })
    common.emit(common.rounded(record))


if __name__ == '__main__':
  main()
