"""The slurm backend: one SLURM array task per sweep group, submitted through submitit.

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
always; past that the task says so in one `error:` line and in its points' status.json. A
SIGTERM (scancel, or a preemption SLURM requeues itself) saves and stops without asking for
a requeue.

Each submission leaves `<root>/slurm/launch-<id>.json` naming its array job: a relaunch asks
squeue which of those tasks are still queued, held (a requeued task waits about 2 minutes,
Reason=BeginTime) or running, and leaves their groups' points to them.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import shutil
import signal
import subprocess
import sys
from typing import Any

# Before icl_jax imports jax (the unpickled GroupTask on a node starts here).
from icl_jax import runtime
runtime.configure()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import submitit

from icl_jax import cli
from icl_jax import files
from icl_jax import plan
from icl_jax import status as status_lib
from icl_jax.errors import UserError
from .. import worker
from . import base
from . import registry

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
    '"module load cuda/12.4". The task runs this launcher\'s Python (by its absolute path), '
    'not one a setup line activates.')
_SIGNAL_DELAY = flags.DEFINE_integer(
    'slurm_signal_delay_s', 120, 'slurm: SIGUSR2 comes this long before the time limit, to '
    'save and requeue.', lower_bound=1, upper_bound=cli.INT32_MAX)
_MAX_TIMEOUTS = flags.DEFINE_integer('slurm_max_num_timeout', 3, 'slurm: time-outs a task '
                                     'is requeued after.', lower_bound=0,
                                     upper_bound=cli.INT32_MAX)

# What submitit sends before a time limit and on preemption (its default, USR2).
REQUEUE_SIGNAL = signal.SIGUSR2
JOB_RECORD = 'launch-{}.json'  # In <root>/slurm/: the array job a launch submitted.
# squeue's states of a job that holds, or waits for, an allocation (everything before its end).
_ACTIVE = ('PENDING', 'RUNNING', 'CONFIGURING', 'COMPLETING', 'REQUEUED', 'REQUEUE_HOLD',
           'REQUEUE_FED', 'RESIZING', 'SUSPENDED', 'STOPPED', 'SIGNALING', 'STAGE_OUT')


class Slurm(base.Backend):
  name = 'slurm'
  help = 'one SLURM array task per group, through submitit, requeued after a preemption'

  def check(self, launch: base.Launch) -> None:
    parameters()  # A bad --slurm_* value: one line, before anything is written.
    check_path(launch.root, '--root')

  def queued(self, root: str) -> dict[str, str]:
    return queued_points(root)

  def plan(self, launch: base.Launch) -> str:
    return ('# The array script this launch would submit (sbatch, through submitit):\n' +
            sbatch_script(folder(launch.root), len(launch.groups))) if launch.groups else ''

  def submit(self, launch: base.Launch) -> int:
    if _LOCAL.value:
      return run_here(launch)
    if shutil.which('sbatch') is None:
      print(sbatch_script(folder(launch.root), len(launch.groups)))
      print(f'# sbatch is not on this host: above is the array script submitit submits from '
            f'a SLURM login node (one task per group, {len(launch.groups)} groups). Run this '
            f'command there, or add --slurm_local to run the same array here.', file=sys.stderr)
      return 0
    job = submit_array(launch)
    launch.begin()
    # submitit submits a single group as a plain job, several as an array (task I: group I).
    what, logs = ((f'array job {job}: {len(launch.groups)} tasks, task I trains group I',
                   f'{job}_<I>') if len(launch.groups) > 1 else (f'job {job}', job))
    print(f'submitted SLURM {what}. Follow it: squeue -j {job}; stop it (each task saves '
          f'first): scancel {job}; task logs: {os.path.join(launch.root, "slurm", logs)}/. '
          f'Relaunch the same command later to see what finished and resume the rest.',
          file=sys.stderr)
    return 0  # The points finish later, on the cluster.


registry.register(Slurm())


# ---------------------------------------------------------------------------------------
# The sbatch parameters, from the flags, validated
# ---------------------------------------------------------------------------------------
# sbatch options the launcher sets itself: --slurm_extra may not replace them.
_OWN_OPTIONS = {'array': '--slurm_array_parallelism', 'output': None, 'error': None,
                'signal': '--slurm_signal_delay_s', 'time': '--slurm_timeout_min',
                'nodes': '--slurm_nodes', 'ntasks-per-node': '--slurm_gpus_per_node',
                'gpus-per-node': '--slurm_gpus_per_node', 'job-name': None, 'open-mode': None,
                'partition': '--slurm_partition', 'account': '--slurm_account',
                'qos': '--slurm_qos', 'constraint': '--slurm_constraint',
                'cpus-per-task': '--slurm_cpus_per_task', 'mem': '--slurm_mem_gb',
                'wrap': None}
_OPTION_NAME = re.compile(r'[A-Za-z][A-Za-z0-9-]*')
_CONTROL = re.compile(r'[\x00-\x1f\x7f]')


def check_path(path: str, flag: str) -> None:
  """UserError for a path sbatch would misread in the script: SLURM expands % in log paths
  (%j, %A) and a line break would end an #SBATCH line."""
  if '%' in path or _CONTROL.search(path):
    raise UserError(f'{flag}={path!r} holds a "%" or a control character, which SLURM would '
                    f'read as part of its log file patterns or the script; choose a path '
                    f'without them.')


def _word(flag: flags.FlagHolder) -> str | None:
  """A name-like flag value (partition, account, ...): no spaces, no control characters."""
  value = flag.value
  if value is not None and (not value.strip() or re.search(r'[\s\x00-\x1f\x7f]', value)):
    raise UserError(f'--{flag.name}={value!r} is not a SLURM name: it is empty or holds spaces '
                    f'or control characters. Pass the name as `sinfo` or `sacctmgr` shows it.')
  return value


def _extra() -> dict[str, Any]:
  extra: dict[str, Any] = {}
  for item in _EXTRA.value:
    name, sep, value = item.partition('=')
    name = name.strip().lstrip('-')
    if not _OPTION_NAME.fullmatch(name) or (sep and not value) or _CONTROL.search(value):
      raise UserError(f'--slurm_extra={item!r} is not an sbatch option: pass name=value (e.g. '
                      f'--slurm_extra=mail-type=END) or a name alone for an option without a '
                      f'value (e.g. --slurm_extra=exclusive), on one line.')
    if name.replace('_', '-') in _OWN_OPTIONS:
      instead = _OWN_OPTIONS[name.replace('_', '-')]
      raise UserError(f'--slurm_extra={item!r} sets --{name}, which the launcher sets itself'
                      + (f'; use {instead} instead.' if instead else '; leave it out.'))
    extra[name] = value if sep else True
  return extra


def parameters() -> dict[str, Any]:
  """The array's sbatch parameters, in submitit's SlurmExecutor names, from the flags."""
  if _SIGNAL_DELAY.value >= _TIMEOUT.value * 60:
    raise UserError(f'--slurm_signal_delay_s={_SIGNAL_DELAY.value} is not shorter than '
                    f'--slurm_timeout_min={_TIMEOUT.value}: the task would be warned before it '
                    f'starts. Lower it or raise the time limit.')
  for line in _SETUP.value:
    if _CONTROL.search(line):
      raise UserError(f'--slurm_setup={line!r} holds a line break or another control '
                      f'character; pass each shell line as its own --slurm_setup.')
  params: dict[str, Any] = dict(
      job_name='icl_jax', time=_TIMEOUT.value, nodes=_NODES.value,
      ntasks_per_node=max(_GPUS.value, 1), array_parallelism=_PARALLELISM.value,
      signal_delay_s=_SIGNAL_DELAY.value)
  optional = dict(
      gpus_per_node=_GPUS.value or None, cpus_per_task=_CPUS.value or None,
      mem=(f'{int(_MEM.value)}GB' if _MEM.value == int(_MEM.value) else
           f'{int(_MEM.value * 1024)}MB') if _MEM.value else None,
      partition=_word(_PARTITION), account=_word(_ACCOUNT), qos=_word(_QOS),
      constraint=_word(_CONSTRAINT), additional_parameters=_extra() or None,
      setup=list(_SETUP.value) or None)
  params.update({k: v for k, v in optional.items() if v is not None})
  return params


class _Renderer(submitit.SlurmExecutor):
  """submitit's SLURM executor on a host without SLURM: it renders, never submits."""

  @classmethod
  def affinity(cls) -> int:
    return 1


def executor(path: str, render_only: bool = False) -> submitit.SlurmExecutor:
  kind = _Renderer if render_only else submitit.SlurmExecutor
  ex = kind(folder=path, max_num_timeout=_MAX_TIMEOUTS.value)
  ex.update_parameters(**parameters())
  return ex


def folder(root: str) -> str:
  return os.path.join(root, 'slurm', '%j')


def sbatch_script(path: str, num_tasks: int) -> str:
  """The array script exactly as `submit_array` hands it to sbatch (submitit's renderer)."""
  ex = executor(path, render_only=True)
  ex.parameters['map_count'] = num_tasks  # As submitit's map_array sets it.
  # pylint: disable-next=protected-access
  return ex._make_submission_file_text(ex._submitit_command_str, 'array')


# ---------------------------------------------------------------------------------------
# Submitting, and asking SLURM what is still queued
# ---------------------------------------------------------------------------------------
def _task_args(launch: base.Launch) -> list[list[Any]]:
  """GroupTask's arguments for each array task (plain values: they are pickled)."""
  n = len(launch.groups)
  return [[launch.root] * n, [launch.id] * n, list(range(n)), [launch.device_memory_bytes] * n,
          [launch.compilation_cache] * n]


def submit_array(launch: base.Launch) -> str:
  """Submits one array task per group; returns the array job id. Refused (one line, and
  submitit's files of this submission removed) if sbatch says no."""
  slurm_dir = os.path.join(launch.root, 'slurm')
  before = set(os.listdir(slurm_dir)) if os.path.isdir(slurm_dir) else None
  ex = executor(folder(launch.root))
  said = io.StringIO()
  try:
    with contextlib.redirect_stderr(said):  # submitit prints sbatch's refusal, then raises.
      jobs = ex.map_array(GroupTask(_MAX_TIMEOUTS.value), *_task_args(launch))
  except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedSubmissionError,
          OSError, subprocess.SubprocessError) as e:
    _remove_new(slurm_dir, before)
    why = ' '.join((str(e) or said.getvalue()).replace('sbatch: error: ', '').split())
    why = why or type(e).__name__
    raise base.Refused(
        f'sbatch refused the array ({why}). Nothing was submitted and the sweep is as it was. '
        f'Check the --slurm_* flags against the cluster (sinfo -o "%P %D %c %G %m" lists each '
        f'partition\'s nodes, CPUs, GPUs and memory) and that its controller answers '
        f'(scontrol ping).') from None
  job = jobs[0].job_id.split('_')[0]
  files.write_json(os.path.join(slurm_dir, JOB_RECORD.format(launch.id)),
                   {'launch': launch.id, 'job': job, 'groups': len(launch.groups)})
  return job


def _remove_new(directory: str, before: set[str] | None) -> None:
  """Removes what submitit wrote for a refused submission: its pickles and script."""
  if not os.path.isdir(directory):
    return
  for name in set(os.listdir(directory)) - (before or set()):
    if name.endswith('.pkl') or name.startswith('.submission_file_'):
      os.remove(os.path.join(directory, name))
  if before is None and not os.listdir(directory):
    os.rmdir(directory)


def queued_points(root: str) -> dict[str, str]:
  """{workdir: 'SLURM job J_I (STATE, reason)'} for the points of every array task that an
  earlier launch under `root` submitted and that SLURM still has queued, held or running."""
  records = [files.read_json(p) for p in
             sorted(glob.glob(os.path.join(root, 'slurm', JOB_RECORD.format('*'))))]
  jobs = {str(r['job']): r['launch'] for r in records if isinstance(r, dict) and 'job' in r}
  if not jobs:
    return {}
  if shutil.which('squeue') is None:
    print(f'warning: cannot ask SLURM whether array jobs {", ".join(jobs)} of earlier launches '
          f'are still queued (no squeue on this host); if they are, they train their points '
          f'too.', file=sys.stderr)
    return {}
  held = {}
  for task, state, reason in _squeue(list(jobs)):
    job, _, index = task.partition('_')
    index = index or '0'  # A launch of one group is a plain job.
    if job in jobs and index.isdigit() and state in _ACTIVE:
      for p in plan.read_group(root, jobs[job], int(index)):
        held[p.workdir] = f'SLURM job {task} ({state}' + (
            f', {reason})' if reason not in ('None', '') else ')')
  return held


def _squeue(jobs: list[str]) -> list[tuple[str, str, str]]:
  """(task id, state, reason) of every task of `jobs` that SLURM still knows."""
  out = subprocess.run(['squeue', '-h', '-r', '-o', '%i %T %r', '-j', ','.join(jobs)],
                       capture_output=True, text=True, timeout=60, check=False)
  if out.returncode and 'Invalid job id' not in out.stderr:
    raise UserError(f'Cannot ask SLURM whether array jobs {", ".join(jobs)} of earlier '
                    f'launches are still queued: squeue failed ({" ".join(out.stderr.split())}). '
                    f'Relaunch where squeue answers (a login node), so that no group is '
                    f'submitted twice.')
  return [tuple(f[:3]) for line in out.stdout.splitlines() if len(f := line.split(None, 2)) == 3]


def run_here(launch: base.Launch) -> int:
  """--slurm_local: the same array, run on this host by submitit's local executor."""
  ex = submitit.LocalExecutor(folder=folder(launch.root), max_num_timeout=_MAX_TIMEOUTS.value)
  ex.update_parameters(timeout_min=_TIMEOUT.value, signal_delay_s=_SIGNAL_DELAY.value)
  launch.begin()
  jobs = ex.map_array(GroupTask(_MAX_TIMEOUTS.value), *_task_args(launch))
  print(f'submitted {len(jobs)} array tasks; their logs go to '
        f'{os.path.join(launch.root, "slurm")}', file=sys.stderr)
  failed = 0
  for index, job in enumerate(jobs):
    try:
      code = job.result()
    except Exception as e:  # pylint: disable=broad-except
      code = f'{type(e).__name__}: {str(e).splitlines()[-1] if str(e) else ""}'
    failed += base.report_group(launch.groups[index], code or 0, str(job.paths.stderr))
  return launch.summary(failed)


# ---------------------------------------------------------------------------------------
# On the node
# ---------------------------------------------------------------------------------------
class GroupTask(submitit.helpers.Checkpointable):
  """What one array task runs. submitit pickles it with its arguments, so both are plain
  values (flags cannot be pickled). `checkpoint` (inherited) resubmits the same call."""

  def __init__(self, max_timeouts: int = 3):
    self.max_timeouts = max_timeouts

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
      if os.environ.get('SLURM_PROCID', '0') == '0':
        print(f'requeueing group {index}: it resumes from the step it saved.', file=sys.stderr)
      try:
        requeue(REQUEUE_SIGNAL, None)  # On rank 0: checkpoint() and requeue; then it exits.
      except submitit.core.utils.UncompletedJobError:  # Its time-outs are used up.
        self.not_requeued(root, launch_id, index)
    return code

  def not_requeued(self, root: str, launch_id: str, index: int) -> None:
    """The time-outs are used up: one line, and the points' status says why they stopped
    (they stay resumable: a relaunch picks them up)."""
    why = (f'SLURM stopped it at its time limit more than --slurm_max_num_timeout='
           f'{self.max_timeouts} times, so it was not requeued; relaunch the sweep to resume '
           f'it (a longer --slurm_timeout_min needs fewer relaunches)')
    step = None
    for p in plan.read_group(root, launch_id, index):
      status = status_lib.read(p.workdir)
      if status and status.get('status') == status_lib.PREEMPTED:
        step = status.get('step')
        files.write_json(os.path.join(p.workdir, status_lib.STATUS_FILE),
                         dict(status, reason=why))
    print(f'error: group {index} saved step {step} and stopped: {why}.', file=sys.stderr)
