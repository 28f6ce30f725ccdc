r"""Launch a sweep: every point of an experiment's sweep(add, arg), each in its own workdir.

  python -m launch.sweep --config experiments/phase_transition_digits.py --root sweeps/digits
  python -m launch.sweep --config experiments/x.py:smoke --root DIR --dry_run   # list only
  python -m icl_jax.report --root sweeps/digits                                 # the figures

Relaunching the same command skips finished points and resumes the others from their
checkpoints. --config.path=value overrides apply to every point.

Backends (--backend; each is one file in launch/backends/, with its own flags):
  vmap    (default) points that differ only in values (seed, task.num_tasks, lr, ...; see
          icl_jax/fields.py VALUE_FIELDS) train as one program per group, each device
          holding whole runs (mesh axes run x data; config.mesh.group_strategy says how a
          device steps its runs); groups run one after another over all devices, or
          --parallel N at once, one per GPU. A group too large for device memory trains
          in chunks (--device_memory_gb overrides what the device reports).
  local   each point alone; --parallel N runs N at once (each sees one GPU via
          CUDA_VISIBLE_DEVICES on GPU hosts). Both: launch/backends/processes.py.
  slurm   one SLURM array task per group through submitit, one process per GPU, requeued
          after a time-out or preemption (launch/backends/slurm.py); --dry_run prints the
          sbatch script, as does a host without sbatch; --slurm_local runs the same array
          here with submitit's local executor.
  tpu_vm  runs this command with --backend vmap on every worker of a Cloud TPU VM through
          launch/tpu_vm.sh (needs --tpu and --zone; prints the command if gcloud is absent).
A new backend is one file that registers itself (launch/backends/base.py has the interface):
in launch/backends/, or anywhere, named in ICL_JAX_PLUGINS.

Every backend runs each group with the worker command
  python -m launch.sweep --root DIR --launch ID --only_group I
(the launch's groups are in <root>/launches/ID.json; output in <root>/logs/ID/group-I.log).
Every point ends with a status.json; a failed point (with its log path) never stops the
others. A relaunch leaves alone the points that a live trainer holds (its lease) and those
of SLURM array tasks still queued, held or running (it asks squeue); --dry_run shows
progress without launching.
"""

from __future__ import annotations

import os
import sys

# Before icl_jax.train imports jax: the project's process settings (see icl_jax/runtime.py).
from icl_jax import runtime
runtime.configure()

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging

from icl_jax import cli
from icl_jax import experiment
from icl_jax import files
from icl_jax import lease as lease_lib
from icl_jax import plan
from icl_jax import plugins
from icl_jax import status as status_lib
from icl_jax.errors import UserError
from . import backends  # noqa: F401  (importing it registers every backend)
from . import worker
from .backends import base
from .backends import registry

# A plugin may register a backend and define its flags: before --backend lists the backends
# and before any flag is parsed. A plugin that fails is one `error:` line.
with cli.user_errors_exit():
  plugins.load()

_CONFIG = cli.define_config_flag()
_COMPILATION_CACHE = cli.define_compilation_cache_flag()
_ROOT = flags.DEFINE_string('root', None, 'Directory holding one workdir per point.')
_BACKEND = flags.DEFINE_enum(
    'backend', 'vmap', registry.names(), 'How to run the points: ' +
    '; '.join(f'{b.name}: {b.help}' for b in registry.all_backends()) + '.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'List points, groups and status; run nothing.')
_MAX_GROUP = flags.DEFINE_integer('max_group_size', 64, 'vmap/slurm/tpu_vm: runs per group.',
                                  lower_bound=1, upper_bound=cli.INT32_MAX)
_DEVICE_MEMORY = cli.require_finite(flags.DEFINE_float(
    'device_memory_gb', 0, 'Memory of one device, for the estimate that splits a group whose '
    'runs would not fit (icl_jax/packing.py); 0: what the device reports.', lower_bound=0,
    upper_bound=2**20))
_ONLY_GROUP = flags.DEFINE_integer('only_group', None, 'Worker mode: train group I of a launch.',
                                   lower_bound=0, upper_bound=cli.INT32_MAX)
_LAUNCH = flags.DEFINE_string(
    'launch', None, 'The launch id (its manifest is <root>/launches/<id>.json): a worker\'s '
    'group comes from it; the tpu_vm backend gives every TPU VM worker the same one.')
_SUBROOT = flags.DEFINE_bool(
    'subroot', False, 'Put this sweep in <root>/<experiment>[-<arg>] (for a root that holds '
    'another experiment\'s sweep; a root belongs to one experiment).')


# ---------------------------------------------------------------------------------------
# A launch: plan here, then the backend runs it
# ---------------------------------------------------------------------------------------
def launch(argv: list[str]) -> int:
  backend = registry.get(_BACKEND.value)
  this = new_launch(argv)
  backend.check(this)
  if not this.dry_run:
    create_root(this)
  code = backend.delegate(this)
  if code is not None:
    return code
  status, held = plan_groups(this, backend)
  if this.dry_run:
    print_plan(this, status, backend)
    return 0
  if not this.groups:
    return nothing_to_run(this, held)
  this.write(backend.name)
  try:
    return backend.submit(this)
  except base.Refused:
    this.undo()  # Refused before any worker started: the sweep is left as it was.
    raise


def new_launch(argv: list[str]) -> base.Launch:
  """The launch's root and what every worker is passed."""
  root = os.path.abspath(files.local(_ROOT.value, 'Sweep root'))
  config_arg = cli.config_arg(argv)
  if config_arg is None:
    raise UserError('--config is missing. Pass --config=path/to/experiment.py[:args], e.g. '
                    'experiments/phase_transition_digits.py.')
  if _SUBROOT.value:
    root = os.path.join(root, experiment.subroot_name(config_arg))
    print(f'sweep root: {root}', file=sys.stderr)
  plan.check_root_owner(root, config_arg)
  return base.Launch(root, list(argv), config_arg, _DRY_RUN.value, _DEVICE_MEMORY.value,
                     _COMPILATION_CACHE.value, requested_id=_LAUNCH.value)


def create_root(this: base.Launch) -> None:
  this.created_root = not os.path.isdir(this.root)
  try:
    os.makedirs(this.root, exist_ok=True)
  except OSError as e:
    raise UserError(f'Cannot create sweep root {this.root!r} ({e.strerror}); pass a --root you '
                    'can write to.') from None


def plan_groups(this: base.Launch, backend: base.Backend
                ) -> tuple[dict[str, str], dict[str, str]]:
  """Expands the sweep into `this.points`, and groups the points to train now (not done, not
  held by a live trainer or a queued job) into `this.groups`; returns each point's state
  and {workdir: what holds it}."""
  this.points = plan.expand(this.config_arg, this.root, _CONFIG.value)
  status = {p.workdir: plan.point_status(p) for p in this.points}
  todo = [p for p in this.points if status[p.workdir] != status_lib.DONE]
  held = held_points(this.root, todo)
  todo = [p for p in todo if p.workdir not in held]
  this.groups = plan.make_groups(todo, _MAX_GROUP.value if backend.grouped else None)
  counts = {s: list(status.values()).count(s) for s in status_lib.STATES}
  print(f'{len(this.points)} points in {this.root}: ' +
        ', '.join(f'{n} {s}' for s, n in counts.items()) +
        f'; {len(todo)} to run in {len(this.groups)} group(s) ({backend.name})', file=sys.stderr)
  return status, held


def held_points(root: str, points: list[plan.Point]) -> dict[str, str]:
  """{workdir: what holds it} for the `points` (those not done) that another live process
  trains (an earlier launch's workers, a requeued job: their lease) or that a backend's job
  still has queued: training them here too would run them twice."""
  queued = {}
  for backend in registry.all_backends():
    queued.update(backend.queued(root))
  held = {}
  for p in points:
    if p.workdir in queued:
      held[p.workdir] = queued[p.workdir]
      print(f'skipping {p.name}: left to {held[p.workdir]}', file=sys.stderr)
    elif (holder := lease_lib.live_holder(p.workdir)) is not None:
      held[p.workdir] = lease_lib.describe(holder)
      print(f'skipping {p.name}: being trained by {held[p.workdir]}', file=sys.stderr)
  return held


def print_plan(this: base.Launch, status: dict[str, str], backend: base.Backend) -> None:
  for i, group in enumerate(this.groups):
    print(f'group {i} ({len(group)} runs):')
    for p in group:
      print(f'  [{status[p.workdir]}] {p.name}  ->  {p.workdir}')
  for p in this.points:
    if status[p.workdir] == status_lib.DONE:
      print(f'[{status_lib.DONE}] {p.name}  ->  {p.workdir}')
  text = backend.plan(this)
  if text:
    print(text)


def nothing_to_run(this: base.Launch, held: dict[str, str]) -> int:
  """Says why there is nothing to run: every point is done, or the rest are held (`held`
  has only points not done)."""
  if not held:
    print('Nothing to run: every point is done. Draw the figures with '
          f'python -m icl_jax.report --root {this.root}', file=sys.stderr)
  else:
    print(f'Nothing to run now: the {len(held)} point(s) not done are being trained or are '
          f'queued ({base.describe_holders(held)}). Follow them with --dry_run; relaunch once '
          f'they end to resume whatever they leave unfinished.', file=sys.stderr)
  return 0


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------
def main(argv):
  del argv
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  with cli.user_errors_exit():
    if _ROOT.value is None or not _ROOT.value.strip():
      raise UserError(f'--root is {"missing" if _ROOT.value is None else "empty"}: pass the '
                      'directory for the sweep\'s workdirs.')
    if os.path.exists(_ROOT.value) and not os.path.isdir(_ROOT.value):
      raise UserError(f'Sweep root {_ROOT.value!r} is a file, not a directory; pass a '
                      'directory for the sweep\'s workdirs as --root.')
    if _ONLY_GROUP.value is not None:
      if _LAUNCH.value is None:
        raise UserError('--only_group needs --launch=<id> (the launcher passes both).')
      sys.exit(worker.start(os.path.abspath(_ROOT.value), _LAUNCH.value, _ONLY_GROUP.value,
                            int(_DEVICE_MEMORY.value * 2**30) or None, _COMPILATION_CACHE.value))
    sys.exit(launch(sys.argv))


def run() -> None:
  """The `icl-sweep` command."""
  app.run(main, flags_parser=cli.config_parser(__doc__, require_config=False))


if __name__ == '__main__':
  run()
