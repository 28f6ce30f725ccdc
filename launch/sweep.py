r"""Launch a sweep: every point of an experiment's sweep(add, arg), each in its own workdir.

  python -m launch.sweep --config experiments/phase_transition_digits.py --root sweeps/digits
  python -m launch.sweep --config experiments/x.py:smoke --root DIR --dry_run   # list only
  python -m icl_jax.report --root sweeps/digits                                 # the figures

Relaunching the same command skips finished points and resumes the others from their
checkpoints. --config.path=value overrides apply to every point.

Backends (--backend):
  vmap    (default) points that differ only in values (seed, task.num_tasks, lr, ...; see
          icl_jax/fields.py VALUE_FIELDS) train as one program per group, each device
          holding whole runs (mesh axes run x data; config.mesh.group_strategy says how a
          device steps its runs); groups run one after another over all devices, or
          --parallel N at once, one per GPU. A group too large for device memory trains
          in chunks (--device_memory_gb overrides what the device reports).
  local   each point alone; --parallel N runs N at once (each sees one GPU via
          CUDA_VISIBLE_DEVICES on GPU hosts).
  slurm   one SLURM array task per group through submitit; without sbatch on this host it
          prints the sbatch script instead, and --slurm_local runs the same array here with
          submitit's local executor.
  tpu_vm  runs this command with --backend vmap on every worker of a Cloud TPU VM through
          launch/tpu_vm.sh (needs --tpu and --zone; prints the command if gcloud is absent).

Every backend runs each group with the worker command
  python -m launch.sweep --root DIR --launch ID --only_group I
(the launch's groups are in <root>/launches/ID.json; output in <root>/logs/ID/group-I.log).
Every point ends with a status.json; a failed point (with its log path) never stops the
others. Do not relaunch while a SLURM array of the same root is still queued or running:
both would train the unfinished points (--dry_run shows progress without launching).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

# Before icl_jax.train imports jax: the project's process settings (see icl_jax/runtime.py).
from icl_jax import runtime
runtime.configure()

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging

from icl_jax import files
from icl_jax import lease as lease_lib
from icl_jax import main as main_lib
from icl_jax import status as status_lib
from icl_jax import sweep as sweep_lib
from icl_jax import train
from icl_jax.errors import UserError

BACKENDS = ('vmap', 'local', 'slurm', 'tpu_vm')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_ROOT = flags.DEFINE_string('root', None, 'Directory holding one workdir per point.')
_BACKEND = flags.DEFINE_enum('backend', 'vmap', BACKENDS, 'How to run the points.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'List points, groups and status; run nothing.')
_PARALLEL = flags.DEFINE_integer(
    'parallel', 1, 'local: points run at once; vmap: groups run at once. Each worker then '
    'sees one GPU (CUDA_VISIBLE_DEVICES=slot): one group per local GPU.')
_MAX_GROUP = flags.DEFINE_integer('max_group_size', 64, 'vmap/slurm/tpu_vm: runs per group.')
_DEVICE_MEMORY = flags.DEFINE_float(
    'device_memory_gb', 0, 'Memory of one device, for the estimate that splits a group whose '
    'runs would not fit (icl_jax/packing.py); 0: what the device reports.')
_CPU_DEVICES = flags.DEFINE_integer(
    'cpu_devices', 0, 'On a CPU host, split it into this many XLA devices for each worker '
    '(the run axis spreads a group over them); 0: leave XLA_FLAGS alone.')
_ONLY_GROUP = flags.DEFINE_integer('only_group', None, 'Worker mode: train group I of a launch.')
_LAUNCH = flags.DEFINE_string('launch', None, 'Worker mode: the launch id (its manifest is '
                              '<root>/launches/<id>.json).')
_SLURM_LOCAL = flags.DEFINE_bool('slurm_local', False, 'slurm: run the array with submitit '
                                 'locally (for testing the path without a cluster).')
_SLURM_PARTITION = flags.DEFINE_string('slurm_partition', None, 'slurm: partition.')
_SLURM_GPUS = flags.DEFINE_integer('slurm_gpus_per_node', 1, 'slurm: GPUs per array task.')
_SLURM_NODES = flags.DEFINE_integer('slurm_nodes', 1, 'slurm: nodes per array task.')
_SLURM_TIMEOUT = flags.DEFINE_integer('slurm_timeout_min', 240, 'slurm: minutes per task.')
_SLURM_PARALLELISM = flags.DEFINE_integer('slurm_array_parallelism', 64,
                                          'slurm: array tasks running at once.')
_SUBROOT = flags.DEFINE_bool(
    'subroot', False, 'Put this sweep in <root>/<experiment>[-<arg>] (for a root that holds '
    'another experiment\'s sweep; a root belongs to one experiment).')
_TPU = flags.DEFINE_string('tpu', None, 'tpu_vm: TPU VM name.')
_ZONE = flags.DEFINE_string('zone', None, 'tpu_vm: its zone.')
_PROJECT = flags.DEFINE_string('project', None, 'tpu_vm: GCP project (default: gcloud\'s).')


# ---------------------------------------------------------------------------------------
# Worker: one group, in this process
# ---------------------------------------------------------------------------------------
def run_group(root: str, launch_id: str, index: int,
              device_memory_bytes: int | None = None) -> int:
  """Trains group `index` of a launch; returns an exit code.

  Every point ends with a status.json (done, failed or preempted): a point whose workdir
  is unusable fails alone, before the others train; a run that diverges fails without
  stopping them. Exit code 0 means every status is written, whatever it says;
  status.EXIT_PREEMPTED that a stop signal made the group save and stop.
  """
  points = sweep_lib.read_group(root, launch_id, index)
  usable = []
  for p in points:
    holder = lease_lib.live_holder(p.workdir)
    if holder is not None:
      print(f'skipping {p.name}: being trained by {lease_lib.describe(holder)}', file=sys.stderr)
      continue
    try:
      train.check_run(p.config, p.workdir).close()
      usable.append(p)
    except UserError as e:
      train.write_status(status_lib.RunResult(p.workdir, sweep_lib.latest_step(p.workdir), {},
                                              str(e)))
      print(f'error: {p.name}: {e}', file=sys.stderr)
  if not usable:
    return 0
  try:
    results = train.train_group([p.config for p in usable], [p.workdir for p in usable],
                                device_memory_bytes=device_memory_bytes)
  except lease_lib.LeaseHeld as e:  # Another trainer has a point: its status is its own.
    print(f'error: {e}', file=sys.stderr)
    return 0
  except UserError as e:  # Shared by the whole group (e.g. the dataset is not prepared).
    for p in usable:
      train.write_status(status_lib.RunResult(p.workdir, sweep_lib.latest_step(p.workdir), {},
                                              str(e)))
    print(f'error: {e}', file=sys.stderr)
    return 0
  for r in results:
    if r.error:
      print(f'error: {r.workdir}: {r.error}', file=sys.stderr)
  if any(r.preempted for r in results):
    print(f'preempted: group {index} saved step {results[0].step} of its runs; relaunch to '
          f'resume.', file=sys.stderr)
    return status_lib.EXIT_PREEMPTED
  return 0


# ---------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------
def device_memory_bytes() -> int | None:
  """--device_memory_gb in bytes; None: what the device reports."""
  return int(_DEVICE_MEMORY.value * 2**30) or None


def worker_command(root: str, launch_id: str, index: int) -> list[str]:
  return [sys.executable, '-m', 'launch.sweep', f'--root={root}', f'--launch={launch_id}',
          f'--only_group={index}', f'--device_memory_gb={_DEVICE_MEMORY.value}',
          f'--compilation_cache={main_lib.COMPILATION_CACHE.value}']


def worker_env(slot: int | None = None) -> dict[str, str]:
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [REPO, env.get('PYTHONPATH')]))
  if _CPU_DEVICES.value:
    flag = f'--xla_force_host_platform_device_count={_CPU_DEVICES.value}'
    env['XLA_FLAGS'] = f'{env.get("XLA_FLAGS", "")} {flag}'.strip()
  if slot is not None:
    env['CUDA_VISIBLE_DEVICES'] = str(slot)
  return env


def log_path(root: str, launch_id: str, index: int) -> str:
  return os.path.join(root, 'logs', launch_id, f'group-{index}.log')


def run_subprocesses(root: str, launch_id: str, groups: list[list[sweep_lib.Point]],
                     parallel: int) -> tuple[int, bool]:
  """Runs each group as a worker process, `parallel` at once; returns (the failed count,
  whether a stop signal ended the launch early).

  SIGTERM, SIGHUP (an ssh hang-up) and SIGINT to the launcher are passed on to the running
  workers as SIGTERM, which makes them save the step they reached and stop; the launcher
  starts no new group and waits for them, so no worker outlives it.
  """
  import tqdm  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.join(root, 'logs', launch_id), exist_ok=True)
  queue = list(enumerate(groups))
  running: dict[int, tuple[subprocess.Popen, int]] = {}  # slot -> (process, group index)
  failed = 0
  stopping: list[str] = []

  def stop(signum, frame):
    del frame
    if not stopping:
      print(f'{signal.Signals(signum).name}: asking {len(running)} worker(s) to save and '
            f'stop...', file=sys.stderr)
    stopping.append(signal.Signals(signum).name)
    for process, _ in running.values():
      if process.poll() is None:
        process.send_signal(signal.SIGTERM)

  previous = {sig: signal.signal(sig, stop)
              for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
  bar = tqdm.tqdm(total=sum(map(len, groups)), desc='points', unit='pt', dynamic_ncols=True)
  try:
    while (queue and not stopping) or running:
      for slot in range(parallel):
        if slot not in running and queue and not stopping:
          index, _ = queue.pop(0)
          with open(log_path(root, launch_id, index), 'ab') as log:
            # The launcher's process group: a signal to the whole group (a terminal's
            # Ctrl-C, SLURM, kill -9 of the group) reaches the workers too.
            process = subprocess.Popen(
                worker_command(root, launch_id, index), stdout=log, stderr=subprocess.STDOUT,
                cwd=REPO, env=worker_env(slot if parallel > 1 else None))
          running[slot] = (process, index)
      for slot, (process, index) in list(running.items()):
        if process.poll() is None:
          continue
        del running[slot]
        failed += report_group(groups[index], process.returncode,
                               log_path(root, launch_id, index))
        bar.update(len(groups[index]))
      time.sleep(0.5)
  finally:
    for process, _ in running.values():  # Only after an error of the launcher itself.
      process.kill()
    bar.close()
    for sig, handler in previous.items():
      signal.signal(sig, handler)
  return failed, bool(stopping)


def report_group(points: list[sweep_lib.Point], returncode: int | str, log: str) -> int:
  """Prints one line per failed point with its log; returns how many failed.

  The launcher removed these points' old status.json before starting them, so a missing
  one after a failed worker means it crashed (its status is written here); after a
  successful one it means another host's process 0 owns it.
  """
  failed = 0
  for p in points:
    status = status_lib.read(p.workdir)
    if status is None:
      if returncode in (0, status_lib.EXIT_PREEMPTED):
        continue
      status = {'status': status_lib.FAILED, 'step': sweep_lib.latest_step(p.workdir),
                'summary': {}, 'error': f'the worker crashed (exit {returncode}) before finishing'}
    if status['status'] != status_lib.FAILED:
      continue
    if status.get('log') != log:
      status['log'] = log
      files.write_json(os.path.join(p.workdir, status_lib.STATUS_FILE), status)
    print(f'FAILED {p.name}: {status["error"]} (log: {log})', file=sys.stderr)
    failed += 1
  return failed


def launch_slurm(root: str, launch_id: str, groups: list[list[sweep_lib.Point]]) -> int:
  """One array task per group, submitted (or run here, or printed) through submitit."""
  import submitit  # pylint: disable=g-import-not-at-top
  folder = os.path.join(root, 'slurm', '%j')
  indices = list(range(len(groups)))
  if _SLURM_LOCAL.value:
    executor = submitit.AutoExecutor(folder=folder, cluster='local')
    executor.update_parameters(timeout_min=_SLURM_TIMEOUT.value)
  elif shutil.which('sbatch') is None:
    from submitit.slurm import slurm  # pylint: disable=g-import-not-at-top
    print(slurm._make_sbatch_string(  # pylint: disable=protected-access
        f'python -u -m submitit.core._submit {shlex.quote(folder)}', folder, job_name='icl_jax',
        time=_SLURM_TIMEOUT.value, nodes=_SLURM_NODES.value, ntasks_per_node=1,
        gpus_per_node=_SLURM_GPUS.value, partition=_SLURM_PARTITION.value,
        array_parallelism=_SLURM_PARALLELISM.value, map_count=len(groups)))
    print(f'# sbatch is not on this host: above is the array script submitit submits from a '
          f'SLURM login node (one task per group, {len(groups)} groups). Run this command '
          f'there, or add --slurm_local to run the same array here.', file=sys.stderr)
    return 0
  else:
    executor = submitit.AutoExecutor(folder=folder, cluster='slurm')
    executor.update_parameters(
        name='icl_jax', timeout_min=_SLURM_TIMEOUT.value, nodes=_SLURM_NODES.value,
        tasks_per_node=1, gpus_per_node=_SLURM_GPUS.value,
        slurm_array_parallelism=_SLURM_PARALLELISM.value,
        **({'slurm_partition': _SLURM_PARTITION.value} if _SLURM_PARTITION.value else {}))
  n = len(indices)
  jobs = executor.map_array(slurm_task, [root] * n, [launch_id] * n, indices,
                            [device_memory_bytes()] * n, [main_lib.COMPILATION_CACHE.value] * n)
  print(f'submitted {len(jobs)} array tasks; their logs go to {os.path.join(root, "slurm")}',
        file=sys.stderr)
  if not _SLURM_LOCAL.value:
    return 0  # The cluster runs them; relaunch later to see what finished.
  failed = 0
  for index, job in zip(indices, jobs):
    try:
      code = job.result()
    except Exception as e:  # pylint: disable=broad-except
      code = f'{type(e).__name__}: {str(e).splitlines()[-1] if str(e) else ""}'
    failed += report_group(groups[index], code or 0, str(job.paths.stderr))
  return failed


def slurm_task(root: str, launch_id: str, index: int, device_memory_bytes: int | None = None,
               compilation_cache: str = '') -> int:
  """What one array task runs (pickled by submitit, so it takes plain values, never flags):
  the group, with jax.distributed on multi-node tasks (JAX reads the SLURM environment
  itself)."""
  if int(os.environ.get('SLURM_NTASKS', '1')) > 1:
    os.environ['ICL_JAX_DISTRIBUTED'] = '1'
  runtime.enable_compilation_cache(compilation_cache)
  main_lib.initialize_distributed()
  return run_group(root, launch_id, index, device_memory_bytes)


def tpu_vm_command(argv: list[str]) -> list[str]:
  """This launch, rerun with --backend vmap on every TPU VM worker by launch/tpu_vm.sh."""
  if not (_TPU.value and _ZONE.value):
    raise UserError('--backend tpu_vm needs --tpu NAME and --zone ZONE (and optionally '
                    '--project) of the TPU VM.')
  inner, skip_value = [], False
  for a in argv[1:]:
    if skip_value:
      skip_value = False
      continue
    name = a.split('=', 1)[0]
    if name in ('--backend', '--tpu', '--zone', '--project'):
      skip_value = '=' not in a  # `--tpu NAME`: its value is the next word.
      continue
    inner.append(a)
  command = ['python', '-m', 'launch.sweep', '--backend=vmap'] + inner
  script = os.path.join(REPO, 'launch', 'tpu_vm.sh')
  return (['bash', script, f'--tpu={_TPU.value}', f'--zone={_ZONE.value}'] +
          ([f'--project={_PROJECT.value}'] if _PROJECT.value else []) + ['--'] + command)


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------
def launch(argv: list[str]) -> int:
  root = os.path.abspath(_ROOT.value)
  config_arg = main_lib.config_arg(argv)
  if config_arg is None:
    raise UserError('--config is missing. Pass --config=path/to/experiment.py[:args], e.g. '
                    'experiments/phase_transition_digits.py.')
  if _SUBROOT.value:
    root = os.path.join(root, sweep_lib.subroot_name(config_arg))
    print(f'sweep root: {root}', file=sys.stderr)
  sweep_lib.check_root_owner(root, config_arg)
  if _BACKEND.value == 'tpu_vm':
    command = tpu_vm_command(argv)
    if _DRY_RUN.value or shutil.which('gcloud') is None:
      print(shlex.join(command))
      if not _DRY_RUN.value:
        print('# gcloud is not on this host: run the command above where it is.', file=sys.stderr)
      return 0
    return subprocess.call(command)

  points = sweep_lib.expand(config_arg, root, main_lib.CONFIG.value)
  status = {p.workdir: sweep_lib.point_status(p) for p in points}
  # Points another live process is training (an earlier launch's workers, a requeued job)
  # are left to it: training them here too would run them twice.
  busy = {p.workdir: h for p in points if (h := lease_lib.live_holder(p.workdir))}
  for p in points:
    if p.workdir in busy:
      print(f'skipping {p.name}: being trained by {lease_lib.describe(busy[p.workdir])}',
            file=sys.stderr)
  todo = [p for p in points if status[p.workdir] != status_lib.DONE and p.workdir not in busy]
  grouped = _BACKEND.value != 'local'
  groups = sweep_lib.make_groups(todo, _MAX_GROUP.value if grouped else None)
  counts = {s: list(status.values()).count(s) for s in status_lib.STATES}
  print(f'{len(points)} points in {root}: ' + ', '.join(f'{n} {s}' for s, n in counts.items()) +
        f'; {len(todo)} to run in {len(groups)} group(s) ({_BACKEND.value})', file=sys.stderr)
  if _DRY_RUN.value:
    for i, group in enumerate(groups):
      print(f'group {i} ({len(group)} runs):')
      for p in group:
        print(f'  [{status[p.workdir]}] {p.name}  ->  {p.workdir}')
    for p in points:
      if status[p.workdir] == status_lib.DONE:
        print(f'[{status_lib.DONE}] {p.name}  ->  {p.workdir}')
    return 0
  launch_id = sweep_lib.write_manifest(root, config_arg, points, groups, _BACKEND.value)
  for p in todo:  # Being (re)trained: an old status would mask a crash of this launch.
    status_lib.remove(p.workdir)
  if not groups:
    print('Nothing to run: every point is done. Draw the figures with '
          f'python -m icl_jax.report --root {root}', file=sys.stderr)
    return 0
  if _BACKEND.value == 'slurm':
    failed = launch_slurm(root, launch_id, groups)
    if not _SLURM_LOCAL.value:
      return 0  # Submitted or printed: the points finish later, elsewhere.
  else:
    failed, stopped = run_subprocesses(root, launch_id, groups, _PARALLEL.value)
    if stopped:
      done = sum(sweep_lib.point_status(p) == status_lib.DONE for p in points)
      print(f'Stopped by a signal: {done}/{len(points)} points done, the running ones saved. '
            f'Relaunch the same command to finish the sweep.', file=sys.stderr)
      return status_lib.EXIT_PREEMPTED
  done = sum(sweep_lib.point_status(p) == status_lib.DONE for p in points)
  print(f'{done}/{len(points)} points done, {failed} failed. Figures: '
        f'python -m icl_jax.report --root {root}', file=sys.stderr)
  return 1 if failed else 0


def main(argv):
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  try:
    if _ROOT.value is None:
      raise UserError('--root is missing: pass the directory for the sweep\'s workdirs.')
    if _ONLY_GROUP.value is not None:
      runtime.enable_compilation_cache(main_lib.COMPILATION_CACHE.value)
      main_lib.initialize_distributed()
      if _LAUNCH.value is None:
        raise UserError('--only_group needs --launch=<id> (the launcher passes both).')
      sys.exit(run_group(os.path.abspath(_ROOT.value), _LAUNCH.value, _ONLY_GROUP.value,
                         device_memory_bytes()))
    sys.exit(launch(sys.argv))
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=main_lib.parse_flags_optional_config)
