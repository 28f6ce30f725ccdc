"""What a training command is about to do, in a few lines, before anything is compiled."""

from __future__ import annotations

import functools
import os
from typing import Sequence

import ml_collections

from icl_jax import config as config_lib
from icl_jax import fields as fields_lib

# Fields every run sets from its own arguments: listed once, not as changes.
_UNINTERESTING = ('data.data_dir',)
_MAX_SHOWN = 24  # Changed fields listed by name; more are counted.


@functools.cache
def _defaults() -> dict[str, object]:
  return fields_lib.flatten(config_lib.base_config())


def changed_fields(config: ml_collections.ConfigDict) -> dict[str, object]:
  """{field: value} of the fields that differ from config.base_config()."""
  base = _defaults()  # Read only: built once, though every run of a group asks twice.
  return {k: v for k, v in fields_lib.flatten(config).items()
          if k not in _UNINTERESTING and (k not in base or base[k] != v)}


def lines(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str], *,
          model: str, num_params: int, state_size: int, devices: str, mesh: str,
          strategy: str, start: int) -> list[str]:
  """The banner: the runs, what differs from the defaults, the model, the devices and mesh,
  and where the outputs go."""
  config = configs[0]
  tb_root = (os.path.join(workdirs[0], 'tb') if len(workdirs) == 1 else
             os.path.commonpath(list(workdirs)))
  head = (f'icl_jax: training {workdirs[0]}' if len(workdirs) == 1 else
          f'icl_jax: training a group of {len(workdirs)} runs: {", ".join(workdirs)}')
  where = (f'resuming at step {start} of {config.train.steps}' if start else
           f'{config.train.steps} steps')
  flat = [changed_fields(c) for c in configs]
  changed = flat[0]
  differ = sorted(k for k in set().union(*flat)
                  if len({repr(f.get(k, '(default)')) for f in flat}) > 1)
  shown = [f'{k}={v!r}' for k, v in changed.items() if k not in differ][:_MAX_SHOWN]
  more = len([k for k in changed if k not in differ]) - len(shown)
  out = [f'{head} ({where})',
         '  config (changed from the defaults): ' + (', '.join(shown) or 'none') +
         (f' and {more} more' if more > 0 else '')]
  if differ:
    out.append(f'  runs differ in: {", ".join(differ)}')
  out += [
      f'  model: {model}, {num_params:,} parameters, state size {state_size:,}',
      f'  devices: {devices}; mesh {mesh}' + (f'; group strategy {strategy}'
                                              if len(workdirs) > 1 else ''),
      f'  writes: config.json, metrics.jsonl, tb/, checkpoints/ (every '
      f'{config.train.checkpoint_every_steps} steps), status.json in '
      f'{"the workdir" if len(workdirs) == 1 else "each workdir"}',
      f'  TensorBoard: tensorboard --logdir {tb_root}',
  ]
  return out
