r"""The speed a GPU or TPU should reach, from a program's FLOPs, bytes and kernel count.

  python benchmarks/roofline.py [--workloads gpicl_paper_784,garg_small,sweep16] \
      [--dtype bfloat16]

For each workload, the training step is compiled for this host's CPU (nothing runs) and
XLA's cost analysis of the compiled program gives its FLOPs and bytes accessed; its
kernels are counted in the optimised HLO (`kernel_count`: every instruction that does work
in the entry computation, loop bodies times their trip count). From these and the stated
peaks of each device (`DEVICES`: dense bf16 FLOP/s and HBM bandwidth, from the vendors'
data sheets), an efficiency band for each, and a cost per kernel launch, `predict` gives a
band of steps/s: the optimistic end overlaps compute and memory at the high efficiencies
with the cheaper launches; the pessimistic end adds them at the low efficiencies with the
dearer launches. Prints one JSON line per workload, with every assumption in it.
  gpicl_paper_784  the GPICL paper's model and batch (width 256, 4 layers, 8 heads of 32,
                   T = 100, batch 128) at MNIST's 784 inputs (the embedded digits resized
                   to 28x28, as benchmarks/train_throughput.py's gpicl_paper config does)
  garg_small       Garg et al.'s linear regression, `small` model (width 256, 4 layers,
                   4 heads), d = 20, 82 tokens, batch 64 (train_throughput.py's)
  sweep16          a vmapped group of 16 width-64 digits runs (sweep_scaling.py's
                   digits_w64, the device check's sweep part): steps/s of the group, each
                   a step of all 16 runs
The CPU-compiled program stands in for the accelerator's: XLA fuses somewhat differently
there (and compute in bfloat16 may be widened to float32 on a CPU, which the byte count
then shows), and cuDNN's fused attention on CUDA does the attention's FLOPs in one kernel.
So the band is an estimate to compare a measurement with, not a promise:
benchmarks/device_check.py prints it beside the steps/s it measures on a GPU, from the
GPU-compiled program's own FLOPs, bytes and kernels.

The prediction itself (`predict`, `kernel_count`, `DEVICES`) uses the standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
# Vendor data-sheet peaks: dense (not sparse) bf16 matrix FLOP/s, and HBM bandwidth in B/s.
DEVICES = {
    'h100': {'name': 'NVIDIA H100 SXM5 80GB', 'bf16_flops': 989e12, 'hbm_bytes_per_s': 3.35e12,
             'kind': 'gpu'},
    'h200': {'name': 'NVIDIA H200 SXM 141GB', 'bf16_flops': 989e12, 'hbm_bytes_per_s': 4.8e12,
             'kind': 'gpu'},
    'tpu_v5e': {'name': 'Google TPU v5e (one chip)', 'bf16_flops': 197e12,
                'hbm_bytes_per_s': 0.819e12, 'kind': 'tpu'},
}
# Fractions of the peaks a small-model training step reaches: its matmuls are narrow
# (width 256, K = 32 per head) and its elementwise work is memory-bound.
FLOPS_EFFICIENCY = (0.3, 0.6)
MEMORY_EFFICIENCY = (0.5, 0.8)
# Seconds a kernel costs beyond its work (launch, the gap to the next, a tail of idle
# units): on a GPU about 1 us where XLA replays its kernels as CUDA graphs (command
# buffers), 4 us where the host issues each one; a TPU runs one program, with a smaller
# cost per op.
LAUNCH_S = {'gpu': (1e-6, 4e-6), 'tpu': (0.5e-6, 2e-6)}
# HLO instructions that launch nothing: values, views and bookkeeping.
_FREE = frozenset(('parameter', 'constant', 'get-tuple-element', 'tuple', 'bitcast',
                   'after-all', 'partition-id', 'replica-id', 'opt-barrier', 'add-dependency'))


def assumptions() -> dict[str, Any]:
  return {'devices': DEVICES, 'flops_efficiency': FLOPS_EFFICIENCY,
          'memory_efficiency': MEMORY_EFFICIENCY, 'launch_s_per_kernel': LAUNCH_S,
          'optimistic': 'max(compute, memory) at the high efficiencies + kernels x the '
                        'low launch cost',
          'pessimistic': 'compute + memory at the low efficiencies + kernels x the high '
                         'launch cost'}


def predict(flops: float, bytes_accessed: float, kernels: int, device: str) -> dict[str, Any]:
  """Steps/s band on `device` (a key of DEVICES) for a step of these costs, and what
  bounds it (the largest term at the optimistic end)."""
  d = DEVICES[device]
  launch_lo, launch_hi = LAUNCH_S[d['kind']]
  compute = [flops / (d['bf16_flops'] * e) for e in FLOPS_EFFICIENCY]  # [slow, fast]
  memory = [bytes_accessed / (d['hbm_bytes_per_s'] * e) for e in MEMORY_EFFICIENCY]
  optimistic = max(compute[1], memory[1]) + kernels * launch_lo
  pessimistic = compute[0] + memory[0] + kernels * launch_hi
  terms = {'compute': compute[1], 'memory': memory[1], 'launches': kernels * launch_lo}
  return {'steps_per_sec_low': 1 / pessimistic, 'steps_per_sec_high': 1 / optimistic,
          'bound': max(terms, key=terms.get),
          'ms_compute': 1e3 * compute[1], 'ms_memory': 1e3 * memory[1],
          'ms_launches': 1e3 * kernels * launch_lo}


def device_for(device_kind: str) -> str | None:
  """The DEVICES key for a jax device_kind ('NVIDIA H100 80GB HBM3', 'TPU v5 lite')."""
  kind = device_kind.lower()
  for key, needle in (('h200', 'h200'), ('h100', 'h100'), ('tpu_v5e', 'v5 lite'),
                      ('tpu_v5e', 'v5e')):
    if needle in kind:
      return key
  return None


def kernel_count(hlo_text: str) -> int:
  """Kernels one run of a compiled HLO module launches: the working instructions of its
  entry computation, where a while loop counts its body and condition times its known trip
  count (once if unknown), a conditional its largest branch and a call its callee."""
  computations: dict[str, list[str]] = {}
  entry, name = None, None
  for line in hlo_text.splitlines():
    head = re.match(r'^(ENTRY )?%?([\w.\-]+) .*\{$', line)
    if head:
      name = head.group(2)
      computations[name] = []
      entry = name if head.group(1) else entry
    elif line.startswith('}'):
      name = None
    elif name is not None and ' = ' in line:
      computations[name].append(line)

  def count(comp: str, depth: int = 0) -> int:
    total = 0
    for line in computations.get(comp, ()):
      op = re.search(r' = .*?[\s)]([a-z][a-z0-9\-]*)\(', line)
      opcode = op.group(1) if op else ''
      if opcode in _FREE or depth > 20:
        continue
      if opcode == 'while':
        trips = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', line)
        inner = sum(count(c, depth + 1) for c in re.findall(r'(?:condition|body)=%?([\w.\-]+)',
                                                               line))
        total += inner * (int(trips.group(1)) if trips else 1)
      elif opcode == 'conditional':
        branches = re.findall(r'%([\w.\-]+)', line.split('branch_computations=')[-1]
                              .split('}')[0]) if 'branch_computations=' in line else re.findall(
                                  r'(?:true|false)_computation=%?([\w.\-]+)', line)
        total += max((count(b, depth + 1) for b in branches), default=1)
      elif opcode == 'call':
        callee = re.search(r'to_apply=%?([\w.\-]+)', line)
        total += count(callee.group(1), depth + 1) if callee else 1
      else:
        total += 1
    return total

  return count(entry) if entry else 0


# =======================================================================================
# Measuring a program (these import jax)
# =======================================================================================
def compiled_costs(compiled: Any) -> dict[str, Any]:
  """FLOPs, bytes accessed and kernels of a jax Compiled program."""
  cost = compiled.cost_analysis() or {}
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per partition.
    cost = cost[0] if cost else {}
  return {'flops': cost.get('flops'), 'bytes_accessed': cost.get('bytes accessed'),
          'kernels': kernel_count(compiled.as_text())}


def program_costs(step: Any, *args: Any) -> dict[str, Any]:
  """compiled_costs of a jit-ed `step` for these arguments (compiled again: a cache hit
  where the persistent compilation cache holds it)."""
  return compiled_costs(step.lower(*args).compile())


def workload_configs(name: str, dtype: str) -> list:
  """The configs of one workload (one run, or a group's runs), in the GPU's group strategy."""
  sys.path.insert(0, HERE)
  import sweep_scaling  # pylint: disable=g-import-not-at-top
  import train_throughput as tt  # pylint: disable=g-import-not-at-top
  if name == 'gpicl_paper_784':
    config = tt.gpicl_paper_config()
    config.data.image_shape = (28, 28)
    configs = [config]
  elif name == 'garg_small':
    configs = [tt.garg_config('garg_small')]
  elif name == 'sweep16':
    configs = [sweep_scaling.WORKLOADS['digits_w64'](i) for i in range(16)]
  else:
    raise SystemExit(f'Unknown workload {name!r}.')
  for c in configs:
    c.model.dtype = dtype
    c.mesh.group_strategy = 'vmap'  # What 'auto' picks on an accelerator.
  return configs


def measure(name: str, dtype: str) -> dict[str, Any]:
  import bench_common as common  # pylint: disable=g-import-not-at-top
  configs = workload_configs(name, dtype)
  program = common.group_program(configs)
  costs = program_costs(program.step, program.state, *program.inputs)
  return {**common.header('roofline'), 'workload': name, 'dtype': dtype,
          'runs': len(configs), 'source': 'XLA cost analysis of the CPU-compiled step',
          **costs, 'predicted': {d: common.rounded(predict(costs['flops'],
                                                           costs['bytes_accessed'],
                                                           costs['kernels'], d))
                                 for d in DEVICES},
          'assumptions': assumptions()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workloads', default='gpicl_paper_784,garg_small,sweep16')
  parser.add_argument('--dtype', default='bfloat16')
  args = parser.parse_args()
  sys.path.insert(0, HERE)
  import bench_common  # noqa: F401  (its import applies the runtime settings)
  for name in args.workloads.split(','):
    print(json.dumps(measure(name, args.dtype)), flush=True)


if __name__ == '__main__':
  main()
