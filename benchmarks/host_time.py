r"""Host time per steady-state step: the training loop of `icl_jax.main` against the
compiled step dispatched back to back.

  python benchmarks/host_time.py [--configs garg_tiny,gpicl_paper] [--steps 40]

Both sides call the very same compiled group step (`icl_jax.group.Group.step`, timed at
each call): "bare" calls it in a plain Python loop, "loop" runs `train.train_and_evaluate`
with logging, evaluation and checkpointing only at the last step, so every step before it
is a steady-state step. The figure of each is the median interval between two step
dispatches, as the calling thread's CPU time (`time.thread_time`: on a CPU, XLA computes
on its own threads, so this is the host's work alone) and as wall time. The loop's own
cost is the difference of the CPU times; the issue's target is at most 100 us. The wall
interval of a loop that waits on the device every step equals the step's compute time;
one that never waits dispatches ahead (until XLA's queue of computations in flight is
full). Prints one JSON line per config.
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


def _intervals(calls: list[tuple[float, float]]) -> tuple[float, float]:
  """Median (wall, thread CPU) seconds between consecutive calls."""
  calls = calls[_SKIP_FIRST:]
  wall = [b[0] - a[0] for a, b in zip(calls, calls[1:])]
  cpu = [b[1] - a[1] for a, b in zip(calls, calls[1:])]
  return statistics.median(wall), statistics.median(cpu)


class _Timed:
  """Records (wall, thread CPU) at every call of Group.step, whoever makes it."""

  def __init__(self):
    self.calls: list[tuple[float, float]] = []
    self._step = group_lib.Group.step

  def __enter__(self):
    timed = self

    def step(group, state):
      timed.calls.append((time.perf_counter(), time.thread_time()))
      return timed._step(group, state)

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
  loop_wall, loop_cpu = _intervals(loop_calls.calls[:-1])
  wl = workload.build(config)
  group = group_lib.Group(wl, sharding.make_mesh(config.mesh), [config])
  state = group.init()
  group.compile(state)
  with _Timed() as bare_calls:
    for _ in range(steps):
      state, _ = group.step(state)
    jax.block_until_ready(state)
  bare_wall, bare_cpu = _intervals(bare_calls.calls)
  record = common.header('host_time')
  record.update({
      'config': name, 'steps': steps,
      'loop_cpu_us_per_step': loop_cpu * 1e6, 'bare_cpu_us_per_step': bare_cpu * 1e6,
      'loop_overhead_cpu_us_per_step': (loop_cpu - bare_cpu) * 1e6,
      'loop_wall_us_per_step': loop_wall * 1e6, 'bare_wall_us_per_step': bare_wall * 1e6,
  })
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
