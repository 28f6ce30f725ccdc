r"""Renders the latest benchmark records of a results file as markdown tables (for README).

  python benchmarks/table.py [benchmarks/results/<host>.jsonl]

For each figure (benchmark, config, method, ...) the newest record wins; the heading names
the machine, device and jax version the records came from.
"""

from __future__ import annotations

import json
import os
import platform
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
KEYS = ('benchmark', 'config', 'method', 'workload', 'runs', 'devices', 'dtype', 'strategy',
        'model')


def latest(path: str) -> list[dict]:
  newest = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line.startswith('{'):
        r = json.loads(line)
        newest[tuple(r.get(k) for k in KEYS)] = r  # Later lines are newer.
  return list(newest.values())


def fmt(x, digits: int = 3) -> str:
  if isinstance(x, float):
    if abs(x) >= 1000:
      return f'{x:,.0f}'
    return f'{x:.{digits}g}'
  return str(x)


def table(head: list[str], rows: list[list]) -> str:
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  lines += ['| ' + ' | '.join(fmt(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


def render(records: list[dict]) -> str:
  by = lambda name: [r for r in records if r.get('benchmark') == name]
  out = []
  any_record = next((r for r in records if 'jax' in r), records[0] if records else {})
  out.append(f'Machine `{any_record.get("host")}` ({any_record.get("cpu_count")} CPUs, '
             f'{any_record.get("platform")} / {any_record.get("device_kind")}), jax '
             f'{any_record.get("jax")}, {any_record.get("time")}. Medians of timed windows '
             f'[min-max]; compile excluded.')
  for peak in by('matmul_peak'):
    out.append(f'\nMeasured matmul peak ({peak["dtype"]}, {peak["n"]}^2): '
               f'{peak["flops_per_sec"] / 1e9:.0f} GFLOP/s.')
  if by('train_throughput'):
    out.append('\n' + table(
        ['config', 'dtype', 'model', 'batch x tokens', 'steps/s', 'examples/s', 'tokens/s',
         'GFLOP/s', 'MFU', 'CPU s/step'],
        [[r['config'], r.get('dtype', 'float32'), r['model'],
          f'{r["batch_size"]} x {r["seq_tokens"]}',
          f'{fmt(r["steps_per_sec"])} [{fmt(r["steps_per_sec_min"])}-'
          f'{fmt(r["steps_per_sec_max"])}]', r['examples_per_sec'], r['tokens_per_sec'],
          r['flops_per_sec'] / 1e9, f'{100 * r["mfu"]:.0f}%', r.get('cpu_s_per_step', '')]
         for r in by('train_throughput')]))
  if by('peer_compare'):
    # Every round is shown: on a shared machine the spread is part of the figure.
    rounds = lambda r, side: (f'{fmt(r[f"{side}_steps_per_sec"])} ('
                              + ', '.join(fmt(x) for x in r[f'{side}_rounds']) + ')')
    out.append('\n' + table(
        ['model', 'rounds', 'peer steps/s (each round)', 'icl_jax steps/s (each round)',
         'icl_jax / peer'],
        [[r['model'], r['rounds'], rounds(r, 'peer'), rounds(r, 'icl_jax'),
          f'{r["ratio"]:.2f}x'] for r in by('peer_compare')]))
  if by('sampler_throughput'):
    out.append('\n' + table(
        ['sampler', 'batch', 'on device (episodes/s)', 'numpy on host (episodes/s)',
         'device / host', 'ms per batch', 'share of a step'],
        [[r['config'], r['batch_size'], r['device_episodes_per_sec'],
          r['host_numpy_episodes_per_sec'], f'{r["device_vs_host"]:.2f}x',
          r['sampler_ms_per_batch'], f'{100 * r["sampler_share_of_step"]:.2f}%']
         for r in by('sampler_throughput')]))
  if by('host_time'):
    out.append('\n' + table(
        ['config', 'steps', 'loop: host us between steps (CPU / wall)',
         'bare dispatch loop (CPU / wall)', 'dispatch us (loop / bare)'],
        [[r['config'], r['steps'],
          f'{r["loop_between_cpu_us"]:.0f} / {r["loop_between_wall_us"]:.0f}',
          f'{r["bare_between_cpu_us"]:.0f} / {r["bare_between_wall_us"]:.0f}',
          f'{r["loop_dispatch_cpu_us"]:.0f} / {r["bare_dispatch_cpu_us"]:.0f}']
         for r in by('host_time')]))
  if by('eval_throughput'):
    out.append('\n' + table(
        ['eval config', 'method', 'episodes/s', 'min', 'max'],
        [[r['config'], r['method'], r['episodes_per_sec'], r['episodes_per_sec_min'],
          r['episodes_per_sec_max']] for r in by('eval_throughput')]))
  # Records from before group strategies existed were all vmap and are measured again.
  sweeps = [r for r in by('sweep_scaling') if 'strategy' in r]
  if sweeps:
    out.append('\n' + table(
        ['workload', 'devices', 'runs R', 'strategy', 'group run-steps/s',
         'sequential run-steps/s', 'speedup'],
        [[r['workload'], r['devices'], r['runs'], r.get('strategy', 'vmap'),
          r.get('group_run_steps_per_sec', r.get('vmapped_run_steps_per_sec')),
          r['sequential_run_steps_per_sec'], f'{r["speedup"]:.2f}x']
         for r in sweeps]))
  return '\n'.join(out)


def main():
  path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(RESULTS, f'{platform.node()}.jsonl')
  print(render(latest(path)))


if __name__ == '__main__':
  main()
