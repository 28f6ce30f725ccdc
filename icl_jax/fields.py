"""Field policies: what each config field means to grouping, resuming and naming workdirs.

One source for training (`train.train_group`, `runs.RunDir.open`), the sweep expander
(`sweep.workdir_name`, `sweep.static_key`) and the Workload (`workload.Workload`).
No JAX here: light tools (the launcher's dry run, the report) read these too.

  value fields      may differ between the runs of one vmapped group: they reach the step
                    as arrays (`steps.Run`), never as compiled-in constants;
  static fields     every other field: runs share a compiled program only if these agree;
  resumable fields  a resumed run may change them: they alter how long a run trains and
                    what it reports, not what it learns from step to step;
  workdir fields    every field that is not resumable: a sweep point's workdir name hashes
                    them, so a change that alters the training gets a new directory.
                    A field added after sweeps were named (ADDED_FIELDS) is hashed only
                    away from its default, so relaunching those sweeps finds their points.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from icl_jax import schema
from icl_jax.schema import INFINITE_TASKS  # noqa: F401  (read as fields.INFINITE_TASKS)
from icl_jax.schema import is_number  # noqa: F401  (read as fields.is_number)

# Everything below is read off the one declaration of each field (icl_jax/schema.py).
# Hyperparameters that are values, not shapes: name in `steps.Run.hparams` -> config field.
HPARAM_FIELDS = {f.hparam: f.path for f in schema.FIELDS if f.hparam}
VALUE_FIELDS = tuple(f.path for f in schema.FIELDS if f.policy == schema.VALUE)
# Fields added after sweeps began naming workdirs by hash, with the value that reproduces
# what ran before they existed (see schema.Field.legacy).
ADDED_FIELDS = {f.path: f.legacy for f in schema.FIELDS if f.added}


def flatten(config: ml_collections.ConfigDict | dict, prefix: str = '') -> dict[str, Any]:
  """{'model.width': 64, ...}; tuples become lists, so stored (JSON) and live configs compare."""
  out = {}
  items = config.items() if isinstance(config, dict) else config.to_dict().items()
  for k, v in items:
    if isinstance(v, dict):
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = list(v) if isinstance(v, tuple) else v
  return out


def get(config: ml_collections.ConfigDict, field: str) -> Any:
  """The value of a dotted field, 'task.num_tasks', of a config."""
  node = config
  for part in field.split('.'):
    node = node[part]
  return node


def is_resumable(field: str) -> bool:
  """Whether a resumed run may change this dotted config field (schema.RESUMABLE)."""
  return schema.policy(field) == schema.RESUMABLE


def incompatible_fields(stored: ml_collections.ConfigDict,
                        current: ml_collections.ConfigDict) -> list[str]:
  """Dotted names of fields that differ and that a resumed run may not change."""
  return [k for k in _differing(flatten(stored), flatten(current)) if not is_resumable(k)]


def static_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Every field but VALUE_FIELDS: runs equal in these share one compiled program."""
  return {k: v for k, v in flatten(config).items() if schema.policy(k) != schema.VALUE}


def static_differences(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict) -> list[str]:
  """The static fields in which `a` and `b` differ: why they cannot share a group."""
  return _differing(static_fields(a), static_fields(b))


def workdir_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The fields a workdir stands for: every one a resumed run may not change (ADDED_FIELDS
  only where they differ from the behaviour that came before them)."""
  return {k: v for k, v in flatten(config).items()
          if not is_resumable(k) and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}


def _differing(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
  return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
