"""A sweep's plan: an experiment's `sweep(add, arg)` expanded into points, workdirs and groups.

An experiment file may define

    def sweep(add, arg=None):
      for width in (32, 64):
        for num_tasks in (2**4, 2**16):
          add(**{'model.width': width, 'task.num_tasks': num_tasks})

Each `add` call is one point: the experiment's config with those fields overridden (keys
are dotted config paths). A point's workdir is `<root>/<readable name>-<hash>`, where the
hash covers every field that a resumed run may not change, so relaunching a sweep finds
its points again, and changing what a point trains gives it a new directory instead of
clobbering the old one.

Points that share every static field (shapes, step counts, schedules) and differ only in
values (`fields.VALUE_FIELDS`: seed, task pool size, optimizer hyperparameters, ...) form a
group, which `train.train_group` trains as one vmapped program.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
import time
from typing import Any, Sequence

import ml_collections

from icl_jax import config as config_lib
from icl_jax import experiment
from icl_jax import fields as fields_lib
from icl_jax import files
from icl_jax import status as status_lib
from icl_jax.errors import UserError

SWEEP_FILE, POINT_FILE = status_lib.SWEEP_FILE, status_lib.POINT_FILE
LAUNCH_DIR = status_lib.LAUNCH_DIR
_MAX_NAME_CHARS = 96  # Readable part of a workdir name; the hash keeps it unique.


@dataclasses.dataclass(frozen=True)
class Point:
  name: str  # 'model.width=32,seed=0,task.num_tasks=16'
  overrides: dict[str, Any]
  config: ml_collections.ConfigDict
  workdir: str  # Absolute.


# ---------------------------------------------------------------------------------------
# Points
# ---------------------------------------------------------------------------------------
def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any],
                    where: str) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted-path overrides; unknown fields and wrong types raise."""
  config = copy.deepcopy(config)
  for path, value in overrides.items():
    *parents, leaf = path.split('.')
    node = config
    for key in parents:
      if not isinstance(node, ml_collections.ConfigDict) or key not in node:
        raise UserError(f'{where}: the config has no field {path!r}. Use dotted paths of the '
                        f'schema (docs/config.md), e.g. model.width or task.num_tasks.')
      node = node[key]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise UserError(f'{where}: the config has no field {path!r}. Use dotted paths of the '
                      f'schema (docs/config.md), e.g. model.width or task.num_tasks.')
    try:
      with node.unlocked():
        node[leaf] = value
    except TypeError as e:
      raise UserError(f'{where}: {path}={value!r} has the wrong type ({e}); the default is '
                      f'{node[leaf]!r}.') from None
  return config


def point_name(overrides: dict[str, Any]) -> str:
  return ','.join(f'{k}={_format(v)}' for k, v in overrides.items())


def _format(value: Any) -> str:
  if isinstance(value, float):
    return f'{value:g}'
  if isinstance(value, (tuple, list)):
    return 'x'.join(map(_format, value))
  return str(value)


def workdir_name(name: str, config: ml_collections.ConfigDict) -> str:
  """Readable name plus a hash of everything a resumed run may not change."""
  kept = fields_lib.workdir_fields(config)
  digest = hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:8]
  readable = re.sub(r'[^A-Za-z0-9.=,_+-]', '_', name.replace('task.', '').replace('model.', ''))
  readable = readable[:_MAX_NAME_CHARS] or 'point'
  return f'{readable}-{digest}'


def expand(config_arg: str, root: str,
           cmdline_config: ml_collections.ConfigDict | None = None) -> list[Point]:
  """Every point of the experiment's sweep, validated, with its workdir under `root`.

  `cmdline_config`: the experiment's config with --config.* overrides already applied
  (they apply to every point; a point's own overrides win).
  """
  path, arg = experiment.split_config_arg(config_arg)
  module = experiment.load_module(path)
  if not callable(getattr(module, 'sweep', None)):
    raise UserError(f'Config file {path!r} defines no sweep(add, arg=None). Add one that calls '
                    f'add(**overrides) once per point; see experiments/phase_transition_digits.py.')
  base = cmdline_config if cmdline_config is not None else module.get_config(arg)
  calls = experiment.collect(module.sweep, arg)
  if not calls:
    raise UserError(f'The sweep of {config_arg!r} expands to zero points: its sweep() never '
                    f'called add(). Check the loops and the experiment arguments.')
  points, seen = [], {}
  for i, overrides in enumerate(calls):
    name = point_name(overrides) or f'point{i}'
    config = apply_overrides(base, overrides, where=f'Sweep point {i} ({name})')
    try:
      config_lib.validate(config)
    except UserError as e:
      raise UserError(f'Sweep point {i} ({name}): {e}') from None
    workdir = os.path.join(os.path.abspath(root), workdir_name(name, config))
    if workdir in seen:
      raise UserError(f'Sweep points {seen[workdir]} and {i} ({name}) train the same config '
                      f'and would share workdir {workdir!r}. Remove the duplicate from '
                      f'sweep(), or make the points differ (e.g. in seed).')
    seen[workdir] = i
    points.append(Point(name, dict(overrides), config, workdir))
  return points


# ---------------------------------------------------------------------------------------
# Groups and status
# ---------------------------------------------------------------------------------------
def static_key(config: ml_collections.ConfigDict) -> str:
  """What the points of one vmapped group share: every field but fields.VALUE_FIELDS."""
  return json.dumps(fields_lib.static_fields(config), sort_keys=True, default=str)


latest_step = status_lib.latest_checkpoint_step


def make_groups(points: Sequence[Point], max_group_size: int | None = None) -> list[list[Point]]:
  """Points that can train as one vmapped program, in first-appearance order.

  A group shares every static field and also the step its runs resume from: a fresh
  point never holds back runs with progress (a group resumes from its members' common
  step). A point that failed before trains alone, so that a run that diverges again
  cannot stall the others. None: no grouping (size 1).
  """
  if max_group_size is not None and max_group_size < 1:
    raise UserError(f'--max_group_size must be >= 1, got {max_group_size}.')
  if max_group_size is None:
    return [[p] for p in points]
  by_key: dict[tuple, list[Point]] = {}
  for p in points:
    failed = point_status(p) == status_lib.FAILED
    key = (static_key(p.config), latest_step(p.workdir), p.workdir if failed else '')
    by_key.setdefault(key, []).append(p)
  groups = []
  for members in by_key.values():
    groups += [members[i:i + max_group_size] for i in range(0, len(members), max_group_size)]
  return groups


def point_status(point: Point) -> str:
  """One of status.STATES: done (trained to its steps), failed, running (has checkpoints) or
  pending; status.state_of has the rule."""
  return status_lib.run_state(point.workdir, point.config.train.steps)


def check_root_owner(root: str, config_arg: str) -> None:
  """UserError if `root` holds the sweep of another experiment or argument: a sweep root
  belongs to one, so a launch never replaces another sweep's manifest, summary or figures.
  Experiments compare by file name and argument (a shared root is read from hosts whose
  checkouts live at different paths)."""
  manifest = files.read_json(os.path.join(root, SWEEP_FILE))
  if not isinstance(manifest, dict):
    return
  path, arg = experiment.split_config_arg(config_arg)
  theirs_path, theirs_arg = str(manifest.get('experiment')), manifest.get('arg') or None
  if (os.path.basename(theirs_path), theirs_arg) == (os.path.basename(path), arg):
    return
  theirs = theirs_path + (f':{theirs_arg}' if theirs_arg else '')
  raise UserError(
      f'Sweep root {root} holds the sweep of {theirs} ({len(manifest.get("points", []))} '
      f'points); launching {config_arg} there would replace its manifest and report. Pass '
      f'another --root, or add --subroot to put this sweep in '
      f'{os.path.join(root, experiment.subroot_name(config_arg))}.')


def new_launch_id() -> str:
  return time.strftime('%Y%m%d-%H%M%S') + f'-{os.getpid()}'


def manifest_path(root: str, launch_id: str) -> str:
  return os.path.join(root, LAUNCH_DIR, f'{launch_id}.json')


def write_manifest(root: str, config_arg: str, points: Sequence[Point],
                   groups: Sequence[Sequence[Point]], backend: str,
                   launch_id: str | None = None) -> str:
  """Writes each `<workdir>/point.json` and this launch's manifest; returns the launch id
  (`launch_id`, or a new one).

  `<root>/launches/<id>.json` lists the points and this launch's groups; workers read
  their group from it, so a later launch (which regroups what is left) never changes
  what an already queued worker trains. `<root>/sweep.json` is a copy of the latest.
  """
  root = os.path.abspath(root)
  for p in points:
    files.write_json(os.path.join(p.workdir, POINT_FILE),
               {'name': p.name, 'overrides': p.overrides, 'config': p.config.to_dict()})
  launch_id = launch_id or new_launch_id()
  manifest = {
      'launch': launch_id, 'experiment': experiment.split_config_arg(config_arg)[0],
      'arg': experiment.split_config_arg(config_arg)[1], 'backend': backend,
      'points': [{'name': p.name, 'workdir': os.path.relpath(p.workdir, root),
                  'overrides': p.overrides} for p in points],
      'groups': [[os.path.relpath(p.workdir, root) for p in g] for g in groups],
  }
  files.write_json(manifest_path(root, launch_id), manifest)
  files.write_json(os.path.join(root, SWEEP_FILE), manifest)
  return launch_id


def _manifest_groups(root: str, launch_id: str) -> list[list[str]]:
  path = manifest_path(root, launch_id)
  try:
    with open(path) as f:
      return json.load(f)['groups']
  except (OSError, json.JSONDecodeError, KeyError) as e:
    raise UserError(f'Cannot read the launch manifest {path} ({e}). Start workers through '
                    f'python -m launch.sweep --config ... --root {root}.') from None


def read_launch(root: str, launch_id: str) -> list[list[Point]]:
  """Every group of launch `launch_id` under `root`, as its workers train them."""
  return [[_read_point(os.path.join(os.path.abspath(root), rel)) for rel in group]
          for group in _manifest_groups(root, launch_id)]


def read_group(root: str, launch_id: str, index: int) -> list[Point]:
  """The points of group `index` of launch `launch_id` under `root` (for worker processes)."""
  groups = _manifest_groups(root, launch_id)
  if not 0 <= index < len(groups):
    raise UserError(f'Group {index} does not exist: launch {launch_id} has groups '
                    f'0..{len(groups) - 1}.')
  return [_read_point(os.path.join(os.path.abspath(root), rel)) for rel in groups[index]]


def _read_point(workdir: str) -> Point:
  try:
    with open(os.path.join(workdir, POINT_FILE)) as f:
      p = json.load(f)
    return Point(p['name'], p['overrides'], config_lib.from_dict(p['config']), workdir)
  except (OSError, json.JSONDecodeError, KeyError) as e:
    raise UserError(f'Cannot read {os.path.join(workdir, POINT_FILE)} ({e}); relaunch the '
                    f'sweep to rewrite it.') from None
