"""What every benchmark shares: process settings, the record header, timed windows, peak.

Each benchmark prints one JSON line per figure. A record carries the host, the device kind,
the jax version, the config, and the median and spread (min, max) of several timed windows;
compile time is excluded (every program runs once before the first window).

Import this before jax: `setup()` applies the project's runtime settings (icl_jax.runtime)
exactly as the entry points that users run do, so the figures are the figures users get.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, NamedTuple, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from icl_jax import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position

RUNTIME = runtime.configure()  # Before jax starts its backend.

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position


def header(benchmark: str) -> dict[str, Any]:
  device = jax.devices()[0]
  return {
      'benchmark': benchmark, 'host': platform.node(), 'platform': device.platform,
      'device_kind': device.device_kind, 'num_devices': jax.device_count(),
      'cpu_count': os.cpu_count(), 'jax': jax.__version__,
      'runtime_malloc': bool(RUNTIME.get('malloc')),
      'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
  }


def emit(record: dict[str, Any]) -> None:
  print(json.dumps(record), flush=True)


def windows(run: Callable[[int], Any], items_per_call: float, calls: int, num_windows: int,
            budget_s: float | None = None) -> dict[str, float]:
  """Rate (items/s) of `run(i)` over `num_windows` windows of `calls` calls each.

  `run(i)` dispatches call i and returns something to block on; each window blocks once
  at its end, so dispatch overlaps compute as in a training loop. With `budget_s`, the
  calls per window shrink (to at least 1) so that all windows fit in about that time,
  judged from one untimed call. Also reports the process CPU time per item (user + system),
  which a busy shared machine disturbs less than the wall-clock rate.
  """
  jax.block_until_ready(run(0))  # Compile (excluded).
  start = time.perf_counter()
  jax.block_until_ready(run(1))
  one = time.perf_counter() - start
  if budget_s is not None:
    calls = max(1, min(calls, int(budget_s / max(num_windows * one, 1e-9))))
  rates, cpu = [], []
  i = 2
  for _ in range(num_windows):
    t0, c0 = time.perf_counter(), os.times()
    out = None
    for _ in range(calls):
      out = run(i)
      i += 1
    jax.block_until_ready(out)
    t1, c1 = time.perf_counter(), os.times()
    rates.append(calls * items_per_call / (t1 - t0))
    cpu.append((c1.user + c1.system - c0.user - c0.system) / (calls * items_per_call))
  return {'median': statistics.median(rates), 'min': min(rates), 'max': max(rates),
          'windows': num_windows, 'calls_per_window': calls,
          'cpu_s_per_item': statistics.median(cpu)}


def matmul_peak(n: int = 2048, dtype=jnp.float32, num_windows: int = 5) -> dict[str, float]:
  """The machine's measured matmul rate (FLOP/s) for an n x n x n product in `dtype`."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  matmul = jax.jit(lambda a, b: a @ b)
  rate = windows(lambda i: matmul(a, b), 2 * n**3, 3, num_windows)
  return {'flops_per_sec': rate['median'], 'min': rate['min'], 'max': rate['max'], 'n': n,
          'dtype': jnp.dtype(dtype).name}


def peak_dtype():
  """fp32 on a CPU, bf16 on an accelerator (what each is compared against)."""
  return jnp.float32 if jax.devices()[0].platform == 'cpu' else jnp.bfloat16


def rounded(d: dict[str, Any], digits: int = 4) -> dict[str, Any]:
  return {k: (float(f'{v:.{digits}g}') if isinstance(v, float) else v) for k, v in d.items()}


class GroupProgram(NamedTuple):
  """One vmapped group as `icl_jax.train.train_group` builds it: step(state, *inputs)."""
  step: Callable[..., Any]
  state: Any
  inputs: tuple[Any, ...]  # (runs, x_NxD, y_N)
  spec: Any
  mesh: Any


def group_program(configs: Sequence[Any], wl: Any = None) -> GroupProgram:
  """The jit-ed group step of `configs` (one run or a sweep group), its initial state and
  inputs, built from the framework's own pieces, so a benchmark times what users run.
  `wl`: the workload to use instead of workload.build(configs[0]) (e.g. random data)."""
  from icl_jax import group as group_lib, sharding, steps, workload  # pylint: disable=g-import-not-at-top
  wl = workload.build(configs[0]) if wl is None else wl
  mesh = sharding.make_mesh(wl.config.mesh, len(configs))
  num_slots = sharding.padded_runs(len(configs), mesh.shape[sharding.RUN])
  runs = sharding.put(steps.stack_runs(group_lib.pad([steps.run_values(c) for c in configs],
                                                 num_slots)), sharding.run_sharded(mesh))
  state = jax.jit(jax.vmap(wl.init), out_shardings=wl.group_shardings(mesh))(runs)
  inputs = (runs,) + wl.training_inputs(mesh)
  step = group_lib.make_group_step(wl, mesh, wl.config.mesh.group_strategy)
  return GroupProgram(step, state, inputs, wl.spec, mesh)
