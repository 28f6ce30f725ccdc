r"""Host time per steady-state step: the training loop of `icl_jax.main` against the
compiled step dispatched back to back.

  python benchmarks/host_time.py [--configs garg_tiny,gpicl_paper] [--steps 40]

Both sides call the very same compiled group step (`icl_jax.group.Group.step`, timed on
entry and exit of every call): "bare" calls it in a plain Python loop, "loop" runs
`train.train_and_evaluate` with logging, evaluation and checkpointing only at the last
step, so every step before it is a steady-state step. The loop's host time per step is
what happens between the return of one step's dispatch and the call of the next (the
median over the steady-state steps), as wall time and as the calling thread's CPU time
(`time.thread_time`); a loop that reads from the device waits there for the step to
finish. The target is at most 100 us. The dispatch itself (the call of the compiled
step: argument handling, and on a CPU part of XLA's own work) is reported beside it, the
same for both. Prints one JSON line per config.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import bench_common as common  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from icl_jax import group as group_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import workload  # pylint: disable=g-import-not-at-top,wrong-import-position
import train_throughput  # pylint: disable=g-import-not-at-top,wrong-import-position

CONFIGS = {'garg_tiny': lambda: train_throughput.garg_config('garg_tiny'),
           'gpicl_paper': train_throughput.gpicl_paper_config}
# Left out of the medians: the first dispatches (caches warming) and the last (the hooks).
_SKIP_FIRST = 2


def _between(calls: list[tuple[float, float, float, float]]) -> dict[str, float]:
  """Medians, in microseconds, of the time between one call's return and the next call
  (wall and thread CPU), and of the calls themselves."""
  calls = calls[_SKIP_FIRST:]
  median = lambda xs: statistics.median(xs) * 1e6
  return {
      'between_wall_us': median([b[0] - a[2] for a, b in zip(calls, calls[1:])]),
      'between_cpu_us': median([b[1] - a[3] for a, b in zip(calls, calls[1:])]),
      'dispatch_wall_us': median([c[2] - c[0] for c in calls]),
      'dispatch_cpu_us': median([c[3] - c[1] for c in calls]),
  }


class _Timed:
  """Records (wall, thread CPU) on entry and exit of every call of Group.step."""

  def __init__(self):
    self.calls: list[tuple[float, float, float, float]] = []
    self._step = group_lib.Group.step

  def __enter__(self):
    timed = self

    def step(group, state):
      wall, cpu = time.perf_counter(), time.thread_time()
      out = timed._step(group, state)
      timed.calls.append((wall, cpu, time.perf_counter(), time.thread_time()))
      return out

    group_lib.Group.step = step
    return self

  def __exit__(self, *exc):
    group_lib.Group.step = self._step


def measure(name: str, steps: int) -> dict:
  config = CONFIGS[name]()
  config.train.steps = steps
  tc = config.train
  tc.log_every_steps = tc.eval_every_steps = tc.checkpoint_every_steps = steps
  config.eval.num_episodes = 8
  with _Timed() as loop_calls, tempfile.TemporaryDirectory() as workdir:
    train.train_and_evaluate(config, workdir)
  loop = _between(loop_calls.calls[:-1])
  wl = workload.build(config)
  group = group_lib.Group(wl, sharding.make_mesh(config.mesh), [config])
  state = group.init()
  group.compile(state)
  with _Timed() as bare_calls:
    for _ in range(steps):
      state, _ = group.step(state)
    jax.block_until_ready(state)
  bare = _between(bare_calls.calls)
  record = common.header('host_time')
  record.update({'config': name, 'steps': steps})
  record.update({f'loop_{k}': v for k, v in loop.items()})
  record.update({f'bare_{k}': v for k, v in bare.items()})
  return record


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--configs', default='garg_tiny,gpicl_paper')
  parser.add_argument('--steps', type=int, default=40)
  args = parser.parse_args()
  for name in args.configs.split(','):
    if name not in CONFIGS:
      raise SystemExit(f'Unknown config {name!r}; choose from {", ".join(CONFIGS)}.')
    common.emit(measure(name, args.steps))


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  sys.exit(main())
