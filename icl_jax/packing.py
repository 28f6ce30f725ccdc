"""How many runs of a sweep group fit on a device: a memory estimate and the device's size.

`train.train_group` splits a group whose runs would not fit into consecutive chunks (each
device then holds at most `runs_per_device` runs), so a sweep's grouping never asks a
device for more memory than it has. The layout itself (run x data axes, padding) is
`sharding.mesh_shape` / `sharding.padded_runs`.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from icl_jax import tasks
from icl_jax.errors import UserError

# Share of a device's memory that a group's runs may take: XLA's own buffers, the datasets
# and the evaluator's programs need the rest.
MEMORY_FRACTION = 0.7
# Bytes of live activations per (episode, token, layer), as c_width * width + c_attention *
# heads * tokens float32 values: fitted to XLA:CPU's memory analysis of the training step
# of the GPICL paper's model, Garg et al.'s tiny and small and a width-64 digits model
# (within 10%; tests/test_packing.py checks two of them). Accelerators fuse more, so there
# it errs on the safe side.
_C_WIDTH, _C_ATTENTION = 30, 3


def run_bytes(wl, data_axis: int = 1) -> int:
  """Estimated device bytes of one run of a Workload during a training step: its state
  (parameters and Adam's moments), gradients and updates, and the step's activations
  (of the batch's share on one device of a `data_axis` of that many)."""
  return sum(run_parts(wl, data_axis).values())


def run_parts(wl, data_axis: int = 1) -> dict[str, int]:
  """run_bytes, by part: state, gradients and updates, activations."""
  params = _bytes(wl.abstract_state['params'])
  m = wl.config.model
  tokens = tasks.num_tokens(wl.spec.prompt, wl.spec.seq_len)
  activations = 4 * -(-wl.spec.batch_size // data_axis) * tokens * m.depth * (
      _C_WIDTH * m.width + _C_ATTENTION * m.num_heads * tokens)
  return {'state': _bytes(wl.abstract_state), 'gradients': 2 * params,
          'activations': activations}


def data_bytes(wl) -> int:
  """Device bytes of the training and held-out splits (each placed once per device)."""
  return sum(_bytes(ds.compact_x()) + ds.y_N.nbytes for ds in (wl.train_ds, wl.eval_ds))


def check_one_run_fits(wl, device: jax.Device, data_axis: int,
                       memory_bytes: int | None = None) -> None:
  """UserError, before anything is placed or compiled, if even one run of `wl` would not
  fit on a device: with the estimate, the limit and what to lower."""
  memory = memory_bytes or device_bytes(device)
  if not memory:
    return
  parts = run_parts(wl, data_axis)
  parts['data'] = data_bytes(wl)
  need, limit = sum(parts.values()), MEMORY_FRACTION * memory
  if need <= limit:
    return
  gb = lambda b: f'{b / 2**30:.1f} GB'
  raise UserError(
      f'One run of this config needs about {gb(need)} on a {device.platform} device ('
      + ', '.join(f'{k} {gb(v)}' for k, v in parts.items()) + f'), more than the {gb(limit)} '
      f'usable there ({MEMORY_FRACTION:.0%} of {gb(memory)}). Lower config.train.batch_size '
      f'or config.task.seq_len, a smaller model (config.model.width / depth), or split the '
      f'batch over more devices (config.mesh.data).')


def _bytes(tree) -> int:
  return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(tree))


def device_bytes(device: jax.Device) -> int | None:
  """The memory one device may use: the allocator's limit on an accelerator, the host's
  RAM shared by its CPU devices on a CPU; None where neither can be read."""
  stats = None
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    pass  # Backends without memory statistics.
  if stats and stats.get('bytes_limit'):
    return int(stats['bytes_limit'])
  if device.platform == 'cpu':
    try:
      ram = os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (ValueError, OSError, AttributeError):
      return None
    return ram // max(len(jax.local_devices(backend='cpu')), 1)
  return None


def runs_per_device(wl, device: jax.Device, memory_bytes: int | None = None) -> int | None:
  """The most runs of `wl` one device holds (at least 1); None: no limit is known.
  `memory_bytes` overrides what the device reports (launch.sweep --device_memory_gb)."""
  memory = memory_bytes or device_bytes(device)
  if not memory:
    return None
  return max(int(MEMORY_FRACTION * memory // run_bytes(wl)), 1)
