"""Configs: the defaults, argument parsing for experiment files, validation, stored configs.

Every experiment file starts from `base_config()` so that the names researchers type on
command lines and in sweeps are the same everywhere. Each field is declared once, in
icl_jax/schema.py; this module builds configs from those declarations and checks them.
Validation runs before any data is loaded or anything compiles, and raises `UserError`
with the fix in the message.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from icl_jax import schema
from icl_jax.errors import UserError


def base_config() -> ml_collections.ConfigDict:
  """Defaults for every field (icl_jax/schema.py); experiment files override what they need."""
  c = ml_collections.ConfigDict()
  for field in schema.FIELDS:
    *sections, name = field.path.split('.')
    node = c
    for section in sections:
      if section not in node:
        node[section] = ml_collections.ConfigDict()
      node = node[section]
    node[name] = (ml_collections.config_dict.placeholder(field.type) if field.default is None
                  else field.default)
  return c


def shrink_for_smoke(c: ml_collections.ConfigDict, steps: int = 30) -> ml_collections.ConfigDict:
  """Shrinks an experiment to seconds on a CPU, to check its pipeline end to end."""
  c.task.seq_len = 20
  c.model.width, c.model.depth, c.model.num_heads, c.model.qkv_size = 16, 1, 2, 8
  c.train.steps = steps
  c.train.batch_size = 16
  c.train.warmup_steps = 0
  c.train.log_every_steps = 10
  c.train.eval_every_steps = steps
  c.train.checkpoint_every_steps = 10
  c.eval.num_episodes = 32
  return c


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses an experiment file's `:a=1,b` argument into typed options (big_vision style).

  Each option's type is its default's; a bare name sets a boolean option to True.
  """
  # `a.keys` would be ConfigDict's method, not the option: refuse such names up front.
  shadowed = sorted(n for n in defaults if hasattr(ml_collections.ConfigDict, n))
  if shadowed:
    raise ValueError(f'Experiment options {shadowed} are names of ConfigDict methods, which '
                     f'attribute access would return instead; rename them '
                     f'(e.g. num_{shadowed[0]}).')
  out = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    name, has_value, value = item.partition('=')
    name = name.strip()
    if name not in defaults:
      raise UserError(f'Unknown experiment argument {name!r} in {arg!r}. '
                      f'Known arguments: {", ".join(sorted(defaults))}.')
    default = defaults[name]
    if not has_value:
      if not isinstance(default, bool):
        raise UserError(f'Experiment argument {name!r} needs a value, e.g. {name}={default!r}.')
      out[name] = True
      continue
    out[name] = _parse_value(name, value.strip(), default)
  return ml_collections.ConfigDict(out)


def _parse_value(name: str, value: str, default: Any) -> Any:
  try:
    if isinstance(default, bool):
      if value.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(value)
      return value.lower() in ('true', '1')
    if isinstance(default, int):
      return int(float(value)) if float(value).is_integer() else int(value)
    if isinstance(default, float):
      return float(value)
  except ValueError:
    raise UserError(f'Experiment argument {name}={value!r} is not a valid '
                    f'{type(default).__name__} (default {default!r}).') from None
  return value


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise UserError(message)


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None,
             num_runs: int = 1) -> None:
  """Checks every field a run depends on; raises UserError naming the field and the fix.

  First each field's own check (schema.FIELDS), then the rules that relate fields, then
  what the task family's and the model's registry entries ask of the config. With
  `num_devices`, also that the mesh fits them for a group of `num_runs` runs. Checks that
  need the dataset (sequence length vs. dataset size) live in the data layer.
  """
  # Imported here, not at the top: they bring in JAX and Flax, and light tools (the
  # report) import this module for its schema alone.
  from icl_jax import models  # pylint: disable=g-import-not-at-top
  from icl_jax.tasks import families  # pylint: disable=g-import-not-at-top
  synthetic = None  # Known once task.family is checked.
  for field in schema.FIELDS:
    if field.check is None:
      continue
    if field.when == 'synthetic':
      if synthetic is None:
        synthetic = not families.FAMILIES[config.task.family].reads_dataset
      if not synthetic:
        continue
    problem = field.check(field.path, _get(config, field.path))
    _require(problem is None, problem)
  for rule in _RULES:
    _require(*rule(config))
  family = families.FAMILIES[config.task.family]
  if family.check is not None:
    problem = family.check(config.task)
    _require(problem is None, problem)
  if not family.reads_dataset:
    for rule in _SYNTHETIC_RULES:
      _require(*rule(config, family.kind == 'regression'))
  model = models.MODELS[config.model.name]
  problem = model.check(config) if model.check is not None else None
  _require(problem is None, problem)
  if num_devices is not None:
    _validate_mesh(config, num_devices, num_runs)


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
  node = config
  for part in path.split('.'):
    node = node[part]
  return node


def _positions(c) -> tuple[bool, str]:
  bad = next((f for f in ('first_positions', 'last_positions')
              if not (schema.is_int(c.eval[f]) and 1 <= c.eval[f] <= c.task.seq_len)), None)
  return bad is None, (f'config.eval.{bad} must be an integer in [1, config.task.seq_len='
                       f'{c.task.seq_len}], got {c.eval[bad]!r}.' if bad else '')


def _curriculum(c) -> tuple[bool, str]:
  from icl_jax.tasks import families  # pylint: disable=g-import-not-at-top
  family = c.task.family
  return (not c.task.curriculum.enabled or families.FAMILIES[family].uses_curriculum,
          f'config.task.curriculum is Garg et al.\'s schedule for the regression families; '
          f'the {family!r} family does not use it. Set config.task.curriculum.enabled=False.')


# Rules that relate fields, each (config) -> (ok, the message if not).
_RULES = (_positions, _curriculum)


def _input_range(c, regression: bool) -> tuple[bool, str]:
  del regression
  t = c.task
  return t.x_low < t.x_high, (f'config.task.x_low={t.x_low} must be below '
                              f'config.task.x_high={t.x_high}.')


def _curriculum_ends(c, regression: bool) -> tuple[bool, str]:
  del regression
  t, cur = c.task, c.task.curriculum
  return (not cur.enabled or (cur.dim_start <= t.dim and cur.points_start <= t.seq_len),
          f'config.task.curriculum starts at dim {cur.dim_start} and {cur.points_start} '
          f'points, beyond config.task.dim={t.dim} / seq_len={t.seq_len} where it ends; '
          f'lower the start values.')


def _shifted_inputs(c, regression: bool) -> tuple[bool, str]:
  e = c.eval
  if not regression and (tuple(e.x_scales) or tuple(e.x_shifts)):
    return False, (f'config.eval.x_scales / x_shifts shift the inputs of regression families; '
                   f'the {c.task.family!r} family has none. Leave them empty.')
  return all(v > 0 for v in e.x_scales), (
      f'config.eval.x_scales must be numbers > 0 and x_shifts finite numbers, got '
      f'{tuple(e.x_scales)} and {tuple(e.x_shifts)}.')


# Rules of the families that draw their own inputs, each (config, regression) -> (ok, message).
_SYNTHETIC_RULES = (_input_range, _curriculum_ends, _shifted_inputs)


def _validate_mesh(config: ml_collections.ConfigDict, num_devices: int, num_runs: int) -> None:
  for axis in ('data', 'run'):
    value = config.mesh.get(axis, -1)
    _require(value <= num_devices,
             f'config.mesh.{axis}={value} asks for more devices than the {num_devices} '
             f'available; use -1 for all of them.')
  from icl_jax import sharding  # pylint: disable=g-import-not-at-top
  run, data = sharding.mesh_shape(config.mesh, num_devices, num_runs)
  _require(run * data <= num_devices,
           f'config.mesh asks for run={run} x data={data} devices but {num_devices} are '
           f'available; use -1 to fill an axis with what is left.')
  batch_size = config.train.batch_size
  # The advice that a resumed run accepts: the mesh may change on resume, the batch not.
  fits = max(k for k in range(1, data + 1) if batch_size % k == 0)
  _require(batch_size % data == 0,
           f'config.train.batch_size={batch_size} is not divisible by the {data} devices of '
           f'the data axis: split it over {fits} of them with --config.mesh.data={fits} (a '
           f'resumed run may change the mesh), or, for a new run, use a multiple of {data}.')


def from_dict(d: dict[str, Any]) -> ml_collections.ConfigDict:
  """Rebuilds a stored config on top of the current defaults.

  Fields this version does not know are kept; fields added since get the value that
  reproduces what ran before them (schema.Field.legacy), else their defaults; JSON lists
  come back as tuples where the default is a tuple.
  """
  config = base_config()
  for field in schema.FIELDS:
    if field.added:
      *sections, name = field.path.split('.')
      node = config
      for section in sections:
        node = node[section]
      node[name] = field.legacy
  _merge(config, d)
  return config


def _merge(target: ml_collections.ConfigDict, d: dict[str, Any]) -> None:
  for key, value in d.items():
    if isinstance(value, dict):
      if key not in target:
        target[key] = ml_collections.ConfigDict()
      _merge(target[key], value)
      continue
    if isinstance(value, list) and isinstance(target.get(key), tuple):
      value = tuple(value)
    with target.ignore_type():
      target[key] = value
