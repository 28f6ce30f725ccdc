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
  slurm   one SLURM array task per group through submitit, one process per GPU, requeued
          after a time-out or preemption (launch/slurm.py); --dry_run prints the sbatch
          script, as does a host without sbatch; --slurm_local runs the same array here
          with submitit's local executor.
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
import pathlib
import re
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

from icl_jax import cli
from icl_jax import files
from icl_jax import lease as lease_lib
from icl_jax import progress
from icl_jax import status as status_lib
from icl_jax import experiment
from icl_jax import plan
from icl_jax.errors import UserError
from . import slurm
from . import worker

BACKENDS = ('vmap', 'local', 'slurm', 'tpu_vm')
# `launch` in a checkout (python -m launch.sweep), `icl_jax.launch` when installed.
PACKAGE = __package__ or 'launch'
# The directory holding the top-level package: a checkout's root, or site-packages.
IMPORT_ROOT = str(pathlib.Path(__file__).resolve().parents[len(PACKAGE.split('.'))])
# How long TPU VM workers 1..n-1 wait for worker 0's launch manifest.
MANIFEST_WAIT_S = 600.0

_CONFIG = cli.define_config_flag()
_COMPILATION_CACHE = cli.define_compilation_cache_flag()
_ROOT = flags.DEFINE_string('root', None, 'Directory holding one workdir per point.')
_BACKEND = flags.DEFINE_enum('backend', 'vmap', BACKENDS, 'How to run the points.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'List points, groups and status; run nothing.')
_PARALLEL = flags.DEFINE_integer(
    'parallel', 1, 'local: points run at once; vmap: groups run at once. Each worker then '
    'sees one GPU (CUDA_VISIBLE_DEVICES=slot): one group per local GPU.', lower_bound=1,
    upper_bound=1024)
_MAX_GROUP = flags.DEFINE_integer('max_group_size', 64, 'vmap/slurm/tpu_vm: runs per group.',
                                  lower_bound=1, upper_bound=cli.INT32_MAX)
_DEVICE_MEMORY = cli.require_finite(flags.DEFINE_float(
    'device_memory_gb', 0, 'Memory of one device, for the estimate that splits a group whose '
    'runs would not fit (icl_jax/packing.py); 0: what the device reports.', lower_bound=0,
    upper_bound=2**20))
_CPU_DEVICES = flags.DEFINE_integer(
    'cpu_devices', 0, 'On a CPU host, split it into this many XLA devices for each worker '
    '(the run axis spreads a group over them); 0: leave XLA_FLAGS alone.', lower_bound=0,
    upper_bound=4096)
_ONLY_GROUP = flags.DEFINE_integer('only_group', None, 'Worker mode: train group I of a launch.',
                                   lower_bound=0, upper_bound=cli.INT32_MAX)
_LAUNCH = flags.DEFINE_string(
    'launch', None, 'The launch id (its manifest is <root>/launches/<id>.json): a worker\'s '
    'group comes from it; the tpu_vm backend gives every TPU VM worker the same one.')
_SUBROOT = flags.DEFINE_bool(
    'subroot', False, 'Put this sweep in <root>/<experiment>[-<arg>] (for a root that holds '
    'another experiment\'s sweep; a root belongs to one experiment).')
_TPU = flags.DEFINE_string('tpu', None, 'tpu_vm: TPU VM name.')
_ZONE = flags.DEFINE_string('zone', None, 'tpu_vm: its zone.')
_PROJECT = flags.DEFINE_string('project', None, 'tpu_vm: GCP project (default: gcloud\'s).')


# ---------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------
def device_memory_bytes() -> int | None:
  """--device_memory_gb in bytes; None: what the device reports."""
  return int(_DEVICE_MEMORY.value * 2**30) or None


def worker_command(root: str, launch_id: str, index: int) -> list[str]:
  return [sys.executable, '-m', f'{PACKAGE}.sweep', f'--root={root}', f'--launch={launch_id}',
          f'--only_group={index}', f'--device_memory_gb={_DEVICE_MEMORY.value}',
          f'--compilation_cache={_COMPILATION_CACHE.value}']


def worker_env(slot: int | None = None) -> dict[str, str]:
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [IMPORT_ROOT, env.get('PYTHONPATH')]))
  if _CPU_DEVICES.value:
    flag = f'--xla_force_host_platform_device_count={_CPU_DEVICES.value}'
    env['XLA_FLAGS'] = f'{env.get("XLA_FLAGS", "")} {flag}'.strip()
  if slot is not None:
    env['CUDA_VISIBLE_DEVICES'] = str(slot)
  return env


def log_path(root: str, launch_id: str, index: int) -> str:
  return os.path.join(root, 'logs', launch_id, f'group-{index}.log')


def run_subprocesses(root: str, launch_id: str, groups: list[list[plan.Point]],
                     parallel: int) -> tuple[int, bool]:
  """Runs each group as a worker process, `parallel` at once; returns (the failed count,
  whether a stop signal ended the launch early).

  SIGTERM, SIGHUP (an ssh hang-up) and SIGINT to the launcher are passed on to the running
  workers as SIGTERM, which makes them save the step they reached and stop; the launcher
  starts no new group and waits for them, so no worker outlives it.
  """
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
  bar = progress.Progress(sum(map(len, groups)), 'points', unit='point')
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
                cwd=IMPORT_ROOT, env=worker_env(slot if parallel > 1 else None))
          running[slot] = (process, index)
          progress.say(f'group {index} ({len(groups[index])} points) started; its log: '
                       f'{log_path(root, launch_id, index)}')
      bar.set_postfix(**{f'group {index}': step
                         for _, index in running.values()
                         if (step := group_step(log_path(root, launch_id, index)))})
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


_STEP_LINE = re.compile(r': (\d+)/(\d+) steps \(')


def group_step(log: str) -> str | None:
  """'step/total' of a running group, from the last progress line of its log (the worker
  writes one every progress.LINE_INTERVAL_S); None before the first."""
  try:
    with open(log, 'rb') as f:
      f.seek(max(f.seek(0, os.SEEK_END) - 4096, 0))
      tail = f.read().decode(errors='replace')
  except OSError:
    return None
  found = _STEP_LINE.findall(tail)
  return f'step {found[-1][0]}/{found[-1][1]}' if found else None


def report_group(points: list[plan.Point], returncode: int | str, log: str) -> int:
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
      status = {'status': status_lib.FAILED, 'step': plan.latest_step(p.workdir),
                'summary': {}, 'error': f'the worker crashed (exit {returncode}) before finishing'}
    if status['status'] != status_lib.FAILED:
      continue
    if status.get('log') != log:
      status['log'] = log
      files.write_json(os.path.join(p.workdir, status_lib.STATUS_FILE), status)
    print(f'FAILED {p.name}: {status["error"]} (log: {log})', file=sys.stderr)
    failed += 1
  return failed


def launch_slurm(root: str, launch_id: str, groups: list[list[plan.Point]]) -> int:
  """One array task per group, submitted (or run here, or printed) through submitit;
  returns how many points failed (known only when run here)."""
  folder = slurm_folder(root)
  if not slurm.local() and shutil.which('sbatch') is None:
    print(slurm.sbatch_script(folder, len(groups)))
    print(f'# sbatch is not on this host: above is the array script submitit submits from a '
          f'SLURM login node (one task per group, {len(groups)} groups). Run this command '
          f'there, or add --slurm_local to run the same array here.', file=sys.stderr)
    return 0
  jobs = slurm.submit(folder, root, launch_id, len(groups), device_memory_bytes(),
                      _COMPILATION_CACHE.value)
  print(f'submitted {len(jobs)} array tasks; their logs go to {os.path.join(root, "slurm")}',
        file=sys.stderr)
  if not slurm.local():
    return 0  # The cluster runs them; relaunch later to see what finished.
  failed = 0
  for index, job in enumerate(jobs):
    try:
      code = job.result()
    except Exception as e:  # pylint: disable=broad-except
      code = f'{type(e).__name__}: {str(e).splitlines()[-1] if str(e) else ""}'
    failed += report_group(groups[index], code or 0, str(job.paths.stderr))
  return failed


def slurm_folder(root: str) -> str:
  return os.path.join(root, 'slurm', '%j')


def tpu_vm_command(argv: list[str]) -> list[str]:
  """This launch, rerun with --backend vmap on every TPU VM worker by launch/tpu_vm.sh.

  The workers run it in a copy of this checkout, so the config file is named relative to
  it; and under one launch id chosen here, so that worker 0 alone writes the launch's
  manifest and the others train the very groups it lists (their views of a shared disk
  may differ for a moment, and different groups would mean mismatched collectives).
  """
  if not (_TPU.value and _ZONE.value):
    raise UserError('--backend tpu_vm needs --tpu NAME and --zone ZONE (and optionally '
                    '--project) of the TPU VM.')
  if not os.path.isabs(_ROOT.value):
    raise UserError(f'--root={_ROOT.value} is relative: on the TPU VM workers it would name a '
                    f'folder of each worker\'s own disk. Pass the absolute path of a filesystem '
                    f'every worker mounts at the same place (e.g. /mnt/shared/sweeps/x).')
  inner = []
  words = iter(argv[1:])
  for a in words:
    name = a.split('=', 1)[0]
    if name in ('--backend', '--tpu', '--zone', '--project', '--launch'):
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
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'tpu_vm.sh')
  return (['bash', script, f'--tpu={_TPU.value}', f'--zone={_ZONE.value}'] +
          ([f'--project={_PROJECT.value}'] if _PROJECT.value else []) + ['--'] + command)


def _in_checkout(config_arg: str) -> str:
  """`path[:arg]` with the path relative to this checkout (what tpu_vm.sh ships)."""
  path, arg = experiment.split_config_arg(config_arg)
  if not os.path.exists(os.path.join(IMPORT_ROOT, '.git')):
    raise UserError(f'--backend tpu_vm ships a git checkout of icl_jax to the workers, and '
                    f'this one is installed in {IMPORT_ROOT}. Run it from a checkout '
                    f'(git clone, then python -m launch.sweep ...).')
  relative = os.path.relpath(os.path.abspath(path), IMPORT_ROOT)
  if relative.startswith(os.pardir + os.sep):
    raise UserError(f'--config={path} is outside this checkout ({IMPORT_ROOT}), which is all that '
                    f'launch/tpu_vm.sh copies to the TPU VM workers. Copy the experiment file '
                    f'into the checkout (e.g. experiments/) and pass that path.')
  return relative + (f':{arg}' if arg is not None else '')


def follow_launch(root: str, launch_id: str) -> list[list[plan.Point]]:
  """The groups of a launch another worker writes (tpu_vm workers 1..n-1), once it is there."""
  path = plan.manifest_path(root, launch_id)
  deadline = time.monotonic() + MANIFEST_WAIT_S
  while not os.path.exists(path):
    if time.monotonic() > deadline:
      raise UserError(f'Worker 0 wrote no launch manifest {path} in {MANIFEST_WAIT_S:.0f} s. '
                      f'Is --root on a filesystem every worker sees? Check worker 0\'s output.')
    time.sleep(1.0)
  return plan.read_launch(root, launch_id)


def worker_index() -> int:
  """This host's index among the TPU VM workers (launch/tpu_vm.sh sets ICL_JAX_WORKER from
  the metadata server); 0 elsewhere."""
  try:
    return int(os.environ.get('ICL_JAX_WORKER', '0'))
  except ValueError:
    return 0


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------
def launch(argv: list[str]) -> int:
  root = os.path.abspath(files.local(_ROOT.value, 'Sweep root'))
  config_arg = cli.config_arg(argv)
  if config_arg is None:
    raise UserError('--config is missing. Pass --config=path/to/experiment.py[:args], e.g. '
                    'experiments/phase_transition_digits.py.')
  if _SUBROOT.value:
    root = os.path.join(root, experiment.subroot_name(config_arg))
    print(f'sweep root: {root}', file=sys.stderr)
  plan.check_root_owner(root, config_arg)
  if not _DRY_RUN.value:
    try:
      os.makedirs(root, exist_ok=True)
    except OSError as e:
      raise UserError(f'Cannot create sweep root {root!r} ({e.strerror}); pass a --root you '
                      'can write to.') from None
  if _BACKEND.value == 'tpu_vm':
    command = tpu_vm_command(argv)
    if _DRY_RUN.value or shutil.which('gcloud') is None:
      print(shlex.join(command))
      if not _DRY_RUN.value:
        print('# gcloud is not on this host: run the command above where it is.', file=sys.stderr)
      return 0
    return subprocess.call(command)

  if _LAUNCH.value and worker_index() > 0:  # Worker 0 chose the groups.
    groups = follow_launch(root, _LAUNCH.value)
    print(f'worker {worker_index()}: launch {_LAUNCH.value}, {len(groups)} group(s) written by '
          f'worker 0', file=sys.stderr)
    failed, stopped = run_subprocesses(root, _LAUNCH.value, groups, _PARALLEL.value)
    return status_lib.EXIT_PREEMPTED if stopped else 1 if failed else 0

  points = plan.expand(config_arg, root, _CONFIG.value)
  status = {p.workdir: plan.point_status(p) for p in points}
  # Points another live process is training (an earlier launch's workers, a requeued job)
  # are left to it: training them here too would run them twice.
  busy = {p.workdir: h for p in points if (h := lease_lib.live_holder(p.workdir))}
  for p in points:
    if p.workdir in busy:
      print(f'skipping {p.name}: being trained by {lease_lib.describe(busy[p.workdir])}',
            file=sys.stderr)
  todo = [p for p in points if status[p.workdir] != status_lib.DONE and p.workdir not in busy]
  grouped = _BACKEND.value != 'local'
  groups = plan.make_groups(todo, _MAX_GROUP.value if grouped else None)
  counts = {s: list(status.values()).count(s) for s in status_lib.STATES}
  print(f'{len(points)} points in {root}: ' + ', '.join(f'{n} {s}' for s, n in counts.items()) +
        f'; {len(todo)} to run in {len(groups)} group(s) ({_BACKEND.value})', file=sys.stderr)
  if _BACKEND.value == 'slurm':
    slurm.parameters()  # A bad --slurm_* value: one line, before anything is written.
  if _DRY_RUN.value:
    for i, group in enumerate(groups):
      print(f'group {i} ({len(group)} runs):')
      for p in group:
        print(f'  [{status[p.workdir]}] {p.name}  ->  {p.workdir}')
    for p in points:
      if status[p.workdir] == status_lib.DONE:
        print(f'[{status_lib.DONE}] {p.name}  ->  {p.workdir}')
    if _BACKEND.value == 'slurm' and groups:
      print(f'# The array script this launch would submit (sbatch, through submitit):\n'
            f'{slurm.sbatch_script(slurm_folder(root), len(groups))}')
    return 0
  launch_id = plan.write_manifest(root, config_arg, points, groups, _BACKEND.value,
                                       _LAUNCH.value)
  for p in todo:  # Being (re)trained: an old status would mask a crash of this launch.
    status_lib.remove(p.workdir)
  if not groups:
    print('Nothing to run: every point is done. Draw the figures with '
          f'python -m icl_jax.report --root {root}', file=sys.stderr)
    return 0
  if _BACKEND.value == 'slurm':
    failed = launch_slurm(root, launch_id, groups)
    if not slurm.local():
      return 0  # Submitted or printed: the points finish later, elsewhere.
  else:
    failed, stopped = run_subprocesses(root, launch_id, groups, _PARALLEL.value)
    if stopped:
      done = sum(plan.point_status(p) == status_lib.DONE for p in points)
      print(f'Stopped by a signal: {done}/{len(points)} points done, the running ones saved. '
            f'Relaunch the same command to finish the sweep.', file=sys.stderr)
      return status_lib.EXIT_PREEMPTED
  done = sum(plan.point_status(p) == status_lib.DONE for p in points)
  print(f'{done}/{len(points)} points done, {failed} failed. Figures: '
        f'python -m icl_jax.report --root {root}', file=sys.stderr)
  return 1 if failed else 0


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
                            device_memory_bytes(), _COMPILATION_CACHE.value))
    sys.exit(launch(sys.argv))


def run() -> None:
  """The `icl-sweep` command."""
  app.run(main, flags_parser=cli.config_parser(__doc__, require_config=False))


if __name__ == '__main__':
  run()
