r"""Vmapped sweep groups vs. the same runs one by one: run-steps per second.

  python benchmarks/sweep_scaling.py [--workloads digits_w16,digits_w64,garg_tiny] [--runs 1,4,16] \
      [--steps 10] [--cpu_devices 1,2]

Prints one JSON line per (workload, devices, R, strategy): the steady-state run-steps/s of
one group of R runs (the program `launch.sweep --backend vmap` trains) and of one run
alone (what R sequential runs each do; compile time excluded from both), and their ratio.
The digits runs differ in seed and task.num_tasks, as in a phase-diagram sweep; the
garg_tiny runs (Garg et al.'s `tiny` linear regression) in seed and lr. `--cpu_devices`
re-runs itself with XLA_FLAGS=--xla_force_host_platform_device_count=N, so the run axis of
a group spreads over N CPU devices; on a GPU host it uses the GPUs there are.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Applies the project's runtime settings before jax starts, as the entry points do.
import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position


def _digits(width):
  """Phase-diagram points (experiments/phase_transition_digits.py) of one model width; the
  runs differ in seed and task.num_tasks."""
  def make(i):
    sys.path.insert(0, os.path.join(REPO, 'experiments'))
    import phase_transition_digits  # pylint: disable=g-import-not-at-top
    c = phase_transition_digits.get_config(f'widths={width}')
    c.seed, c.task.num_tasks = i, [16, 4096, -1, 1][i % 4]
    return c
  return make


def _garg_tiny(i):
  """Garg et al.'s `tiny` linear-regression workload (d = 20, 82 tokens, batch 64); the
  runs differ in seed and learning rate, as in an lr sweep."""
  from icl_jax import presets  # pylint: disable=g-import-not-at-top
  c = presets.garg('linear', 'size=tiny,curriculum=0')
  c.seed, c.train.lr = i, [1e-4, 3e-4, 1e-3, 3e-5][i % 4]
  return c


WORKLOADS = {
    'digits_w16': _digits(16),
    'digits_w64': _digits(64),
    'garg_tiny': _garg_tiny,
}


def measure(workload: str, num_runs: int, steps: int, strategy: str = 'auto') -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  def run_steps_per_sec(r, strategy):
    configs = [WORKLOADS[workload](i) for i in range(r)]
    for c in configs:
      c.mesh.group_strategy = strategy
    program = bench_common.group_program(configs)
    state = program.state
    for _ in range(2):  # Compile and warm up.
      state, metrics = program.step(state, *program.inputs)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = program.step(state, *program.inputs)
    jax.block_until_ready((state, metrics))
    return r * steps / (time.perf_counter() - start), dict(program.mesh.shape)

  from icl_jax import group as group_lib, sharding  # pylint: disable=g-import-not-at-top
  alone, _ = run_steps_per_sec(1, 'vmap')  # A group of one: what a run alone trains.
  grouped, mesh_shape = run_steps_per_sec(num_runs, strategy)
  mesh = sharding.make_mesh(WORKLOADS[workload](0).mesh, num_runs)
  return {
      'benchmark': 'sweep_scaling', 'workload': workload, 'runs': num_runs,
      'strategy': group_lib.strategy(strategy, mesh),
      'devices': jax.device_count(), 'platform': jax.devices()[0].platform, 'mesh': mesh_shape,
      'group_run_steps_per_sec': round(grouped, 3),
      'sequential_run_steps_per_sec': round(alone, 3),
      'speedup': round(grouped / alone, 3), 'steps': steps, 'host': platform.node(),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workloads', default='digits_w16,digits_w64')
  parser.add_argument('--runs', default='1,4,16')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--cpu_devices', default='1,2')
  parser.add_argument('--strategies', default='auto',
                      help='config.mesh.group_strategy values to measure: auto, vmap, map.')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    for workload in args.workloads.split(','):
      for r in map(int, args.runs.split(',')):
        for strategy in args.strategies.split(','):
          print(json.dumps(measure(workload, r, args.steps, strategy)), flush=True)
    return
  for n in map(int, args.cpu_devices.split(',')):
    env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={n}',
               PYTHONPATH=REPO)
    subprocess.run([sys.executable, __file__, '--child', f'--workloads={args.workloads}',
                    f'--runs={args.runs}', f'--steps={args.steps}',
                    f'--strategies={args.strategies}'], env=env, check=True)


if __name__ == '__main__':
  main()
