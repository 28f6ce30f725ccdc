"""The tpu_vm backend: this launch, rerun with --backend vmap on every worker of a Cloud TPU
VM through launch/tpu_vm.sh (needs --tpu and --zone; prints the command if gcloud is absent).

The workers run it in a copy of this checkout, so the config file is named relative to it;
and under one launch id chosen here, so that worker 0 alone writes the launch's manifest
and the others train the very groups it lists (their views of a shared disk may differ for
a moment, and different groups would mean mismatched collectives).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

from absl import flags

from icl_jax import experiment
from icl_jax import plan
from icl_jax.errors import UserError
from . import base
from . import registry

_TPU = flags.DEFINE_string('tpu', None, 'tpu_vm: TPU VM name.')
_ZONE = flags.DEFINE_string('zone', None, 'tpu_vm: its zone.')
_PROJECT = flags.DEFINE_string('project', None, 'tpu_vm: GCP project (default: gcloud\'s).')
# The launcher's flags that name this launch's backend and TPU: the workers get their own.
_NOT_PASSED_ON = ('--backend', '--tpu', '--zone', '--project', '--launch')


class TpuVm(base.Backend):
  name = 'tpu_vm'
  help = 'this same launch with --backend vmap on every worker of a Cloud TPU VM'

  def delegate(self, launch: base.Launch) -> int:
    command = tpu_vm_command(launch)
    if launch.dry_run or shutil.which('gcloud') is None:
      print(shlex.join(command))
      if not launch.dry_run:
        print('# gcloud is not on this host: run the command above where it is.', file=sys.stderr)
      return 0
    return subprocess.call(command)


registry.register(TpuVm())


def tpu_vm_command(launch: base.Launch) -> list[str]:
  """The launcher's command line, rerun with --backend vmap by launch/tpu_vm.sh."""
  if not (_TPU.value and _ZONE.value):
    raise UserError('--backend tpu_vm needs --tpu NAME and --zone ZONE (and optionally '
                    '--project) of the TPU VM.')
  root_arg = next((a for a in _flag_values(launch.argv, '--root')), launch.root)
  if not os.path.isabs(root_arg):
    raise UserError(f'--root={root_arg} is relative: on the TPU VM workers it would name a '
                    f'folder of each worker\'s own disk. Pass the absolute path of a filesystem '
                    f'every worker mounts at the same place (e.g. /mnt/shared/sweeps/x).')
  inner = []
  words = iter(launch.argv[1:])
  for a in words:
    name = a.split('=', 1)[0]
    if name in _NOT_PASSED_ON:
      if '=' not in a:
        next(words, None)  # `--tpu NAME`: its value is the next word.
      continue
    if name == '--config':
      value = a.split('=', 1)[1] if '=' in a else next(words, '')
      inner.append(f'--config={_in_checkout(value)}')
      continue
    inner.append(a)
  command = (['python', '-m', 'launch.sweep', '--backend=vmap',
              f'--launch={plan.new_launch_id()}'] + inner)
  script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tpu_vm.sh')
  return (['bash', script, f'--tpu={_TPU.value}', f'--zone={_ZONE.value}'] +
          ([f'--project={_PROJECT.value}'] if _PROJECT.value else []) + ['--'] + command)


def _flag_values(argv: list[str], name: str) -> list[str]:
  """The values given to flag `name` on `argv` (`--name=v` or `--name v`)."""
  values = []
  for i, a in enumerate(argv):
    if a.startswith(name + '='):
      values.append(a.split('=', 1)[1])
    elif a == name and i + 1 < len(argv):
      values.append(argv[i + 1])
  return values


def _in_checkout(config_arg: str) -> str:
  """`path[:arg]` with the path relative to this checkout (what tpu_vm.sh ships)."""
  path, arg = experiment.split_config_arg(config_arg)
  if not os.path.exists(os.path.join(base.IMPORT_ROOT, '.git')):
    raise UserError(f'--backend tpu_vm ships a git checkout of icl_jax to the workers, and '
                    f'this one is installed in {base.IMPORT_ROOT}. Run it from a checkout '
                    f'(git clone, then python -m launch.sweep ...).')
  relative = os.path.relpath(os.path.abspath(path), base.IMPORT_ROOT)
  if relative.startswith(os.pardir + os.sep):
    raise UserError(f'--config={path} is outside this checkout ({base.IMPORT_ROOT}), which is '
                    f'all that launch/tpu_vm.sh copies to the TPU VM workers. Copy the '
                    f'experiment file into the checkout (e.g. experiments/) and pass that path.')
  return relative + (f':{arg}' if arg is not None else '')
