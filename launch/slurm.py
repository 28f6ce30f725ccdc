"""SLURM: one array task per sweep group, submitted through submitit.

Process layout: one process per GPU. A task gets `--slurm_nodes` nodes with
`--slurm_gpus_per_node` GPUs each and runs that many processes per node
(`--ntasks-per-node` = GPUs per node). This is the layout jax.distributed's SLURM detection
assumes: it reads the coordinator from SLURM_STEP_NODELIST, the rank from SLURM_PROCID, and
gives each process the one GPU `SLURM_LOCALID` (local_device_ids=[SLURM_LOCALID]). One
process per node would need that detection overridden, and a GPU lost to a crash would
take a whole node's processes with it. A task of one GPU runs one process, without
jax.distributed.

Preemption and time limits: submitit asks SLURM for SIGUSR2 `--slurm_signal_delay_s`
seconds before the limit (and a preemption sends it too). Training takes the signal, saves
the step it reached on every process and stops (icl_jax/stopping.py); then `GroupTask`
hands over to submitit's handler, which calls `GroupTask.checkpoint` (the same call again),
requeues the array task (`scontrol requeue`) and exits. The requeued task resumes the group
from that checkpoint. Up to `--slurm_max_num_timeout` time-outs are requeued; preemptions
always. A SIGTERM (scancel, or a preemption SLURM requeues itself) saves and stops without
asking for a requeue.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

# Before icl_jax imports jax (the unpickled GroupTask on a node starts here).
from icl_jax import runtime
runtime.configure()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import submitit

from icl_jax import cli
from icl_jax import status as status_lib
from icl_jax.errors import UserError
from . import worker

_LOCAL = flags.DEFINE_bool('slurm_local', False, 'slurm: run the array with submitit '
                           'locally (for testing the path without a cluster).')
_PARTITION = flags.DEFINE_string('slurm_partition', None, 'slurm: partition.')
_GPUS = flags.DEFINE_integer('slurm_gpus_per_node', 1, 'slurm: GPUs per node of an array '
                             'task; one process per GPU (0: a CPU task, one process per node).',
                             lower_bound=0, upper_bound=cli.INT32_MAX)
_NODES = flags.DEFINE_integer('slurm_nodes', 1, 'slurm: nodes per array task.', lower_bound=1,
                              upper_bound=cli.INT32_MAX)
_TIMEOUT = flags.DEFINE_integer('slurm_timeout_min', 240, 'slurm: minutes per task (a task '
                                'that reaches it is requeued and resumes).', lower_bound=1,
                                upper_bound=cli.INT32_MAX)
_PARALLELISM = flags.DEFINE_integer('slurm_array_parallelism', 64,
                                    'slurm: array tasks running at once.', lower_bound=1,
                                    upper_bound=cli.INT32_MAX)
_CPUS = flags.DEFINE_integer('slurm_cpus_per_task', 0, 'slurm: CPUs per process (0: the '
                             'site\'s default, often 1: XLA compiles on these).', lower_bound=0,
                             upper_bound=cli.INT32_MAX)
_MEM = cli.require_finite(flags.DEFINE_float(
    'slurm_mem_gb', 0, 'slurm: host memory per node in GB (0: the site\'s default).',
    lower_bound=0, upper_bound=2**30))
_ACCOUNT = flags.DEFINE_string('slurm_account', None, 'slurm: account to charge.')
_QOS = flags.DEFINE_string('slurm_qos', None, 'slurm: quality of service.')
_CONSTRAINT = flags.DEFINE_string('slurm_constraint', None, 'slurm: node features, e.g. h100.')
_EXTRA = flags.DEFINE_multi_string(
    'slurm_extra', [], 'slurm: any other sbatch option as name=value, or a name alone '
    '(repeatable), e.g. --slurm_extra=mail-type=END --slurm_extra=exclusive.')
_SETUP = flags.DEFINE_multi_string(
    'slurm_setup', [], 'slurm: a shell line run before the task (repeatable), e.g. '
    '"module load cuda/12.4" or "source ~/venv/bin/activate".')
_SIGNAL_DELAY = flags.DEFINE_integer(
    'slurm_signal_delay_s', 120, 'slurm: SIGUSR2 comes this long before the time limit, to '
    'save and requeue.', lower_bound=1, upper_bound=cli.INT32_MAX)
_MAX_TIMEOUTS = flags.DEFINE_integer('slurm_max_num_timeout', 3, 'slurm: time-outs a task '
                                     'is requeued after.', lower_bound=0,
                                     upper_bound=cli.INT32_MAX)

# What submitit sends before a time limit and on preemption (its default, USR2).
REQUEUE_SIGNAL = signal.SIGUSR2


def parameters() -> dict[str, Any]:
  """The array's sbatch parameters, in submitit's SlurmExecutor names, from the flags."""
  extra: dict[str, Any] = {}
  for item in _EXTRA.value:
    name, sep, value = item.partition('=')
    name = name.strip().lstrip('-')
    if not name or (sep and not value):
      raise UserError(f'--slurm_extra={item!r} is not an sbatch option: pass name=value (e.g. '
                      f'--slurm_extra=mail-type=END) or a name alone for an option without a '
                      f'value (e.g. --slurm_extra=exclusive).')
    extra[name] = value if sep else True
  if _SIGNAL_DELAY.value >= _TIMEOUT.value * 60:
    raise UserError(f'--slurm_signal_delay_s={_SIGNAL_DELAY.value} is not shorter than '
                    f'--slurm_timeout_min={_TIMEOUT.value}: the task would be warned before it '
                    f'starts. Lower it or raise the time limit.')
  params: dict[str, Any] = dict(
      job_name='icl_jax', time=_TIMEOUT.value, nodes=_NODES.value,
      ntasks_per_node=max(_GPUS.value, 1), array_parallelism=_PARALLELISM.value,
      signal_delay_s=_SIGNAL_DELAY.value)
  optional = dict(
      gpus_per_node=_GPUS.value or None, cpus_per_task=_CPUS.value or None,
      mem=(f'{int(_MEM.value)}GB' if _MEM.value == int(_MEM.value) else
           f'{int(_MEM.value * 1024)}MB') if _MEM.value else None,
      partition=_PARTITION.value, account=_ACCOUNT.value,
      qos=_QOS.value, constraint=_CONSTRAINT.value, additional_parameters=extra or None,
      setup=list(_SETUP.value) or None)
  params.update({k: v for k, v in optional.items() if v is not None})
  return params


class _Renderer(submitit.SlurmExecutor):
  """submitit's SLURM executor on a host without SLURM: it renders, never submits."""

  @classmethod
  def affinity(cls) -> int:
    return 1


def executor(folder: str, render_only: bool = False) -> submitit.SlurmExecutor:
  kind = _Renderer if render_only else submitit.SlurmExecutor
  ex = kind(folder=folder, max_num_timeout=_MAX_TIMEOUTS.value)
  ex.update_parameters(**parameters())
  return ex


def sbatch_script(folder: str, num_tasks: int) -> str:
  """The array script exactly as `submit` hands it to sbatch (submitit's own renderer)."""
  ex = executor(folder, render_only=True)
  ex.parameters['map_count'] = num_tasks  # As submitit's map_array sets it.
  # pylint: disable-next=protected-access
  return ex._make_submission_file_text(ex._submitit_command_str, 'array')


def submit(folder: str, root: str, launch_id: str, num_groups: int,
           device_memory_bytes: int | None, compilation_cache: str) -> list[submitit.Job]:
  """Submits (or with --slurm_local runs here) one array task per group."""
  if _LOCAL.value:
    ex = submitit.LocalExecutor(folder=folder, max_num_timeout=_MAX_TIMEOUTS.value)
    ex.update_parameters(timeout_min=_TIMEOUT.value, signal_delay_s=_SIGNAL_DELAY.value)
  else:
    ex = executor(folder)
  n = num_groups
  return ex.map_array(GroupTask(), [root] * n, [launch_id] * n, list(range(n)),
                      [device_memory_bytes] * n, [compilation_cache] * n)


def local() -> bool:
  return _LOCAL.value


class GroupTask(submitit.helpers.Checkpointable):
  """What one array task runs. submitit pickles it with its arguments, so both are plain
  values (flags cannot be pickled). `checkpoint` (inherited) resubmits the same call."""

  def __call__(self, root: str, launch_id: str, index: int,
               device_memory_bytes: int | None = None, compilation_cache: str = '') -> int:
    # submitit's own handler for its signal: checkpoint, requeue, exit. Training replaces
    # it while it runs, so it can save first.
    requeue = signal.getsignal(REQUEUE_SIGNAL)
    if int(os.environ.get('SLURM_NTASKS', '1')) > 1:
      os.environ['ICL_JAX_DISTRIBUTED'] = '1'  # jax.distributed reads the rest from SLURM.
    code = worker.start(root, launch_id, index, device_memory_bytes, compilation_cache)
    if (code == status_lib.EXIT_PREEMPTED and callable(requeue) and
        signal.Signals(REQUEUE_SIGNAL).name in worker.stop_signals(root, launch_id, index)):
      print(f'requeueing group {index}: it resumes from the step it saved.', file=sys.stderr)
      requeue(REQUEUE_SIGNAL, None)  # On rank 0: checkpoint() and requeue; then it exits.
    return code
