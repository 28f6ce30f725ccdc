"""Sweeps on a real SLURM (tests/slurm_cluster.py: slurmctld, 2 slurmd with 2 fake GPUs each):
submitted, preempted, requeued, timed out, cancelled, refused and trained by several
processes, as a cluster user would. Marked `slurm` (`pytest -m slurm` runs just these);
skipped with one reason where SLURM is not installed (.ci/run installs it).

The two requeue cases start first and wait in the background: SLURM holds a requeued job
about 2 minutes (Reason=BeginTime) before it runs again, so the preemption case waits that
hold out (a relaunch meanwhile must leave it alone) while the other cases run; the time
limit case releases its holds at once (`scontrol update StartTime=now`), since its subject
is the time limit, not the hold.
"""

import dataclasses
import glob
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from icl_jax import metrics as metrics_lib
from icl_jax import plan
from icl_jax import report
from icl_jax import status as status_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'scripts'))
import fault_check  # pylint: disable=g-import-not-at-top,wrong-import-position
import slurm_cluster  # pylint: disable=g-import-not-at-top,wrong-import-position

if slurm_cluster.why_not():  # One line in the summary, not one per test.
  pytest.skip(slurm_cluster.why_not(), allow_module_level=True)

pytestmark = pytest.mark.slurm
EXPERIMENT = os.path.join(REPO, 'tests', 'experiments', 'tiny_sweep.py')
# Long runs log and save often enough that a signal never waits for much.
LONG = ['--config.train.log_every_steps=50', '--config.train.checkpoint_every_steps=500']


@dataclasses.dataclass
class Sweep:
  root: str
  arg: str
  job: str
  out: str  # The launcher's stderr.
  points: list

  def logs(self) -> str:
    """Every task's stderr (submitit's logs: <root>/slurm/<job>[_<task>]/*.err)."""
    paths = sorted(glob.glob(os.path.join(self.root, 'slurm', f'{self.job}*', '*.err')))
    return ''.join(open(p, errors='replace').read() for p in paths)

  def logged_steps(self, point) -> list[int]:
    return [r['step'] for r in metrics_lib.read(point.workdir) if 'train/loss' in r]


@pytest.fixture(scope='module')
def env(slurm_cluster, data_dir):
  """The launcher's environment (its jobs inherit it): the cluster, one CPU device a process,
  and the digits prepared once, before concurrent jobs would all prepare them."""
  from icl_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
  tfds_source.prepared_builder('digits', data_dir)
  return dict(slurm_cluster.env, XLA_FLAGS=fault_check.one_device_xla_flags())


def launch(env, data_dir, root, arg, *flags):
  return subprocess.run(
      [sys.executable, '-m', 'launch.sweep', f'--config={EXPERIMENT}:{arg}', f'--root={root}',
       f'--config.data.data_dir={data_dir}', '--backend=slurm', '--slurm_gpus_per_node=0',
       *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def submit(env, data_dir, root, arg, *flags) -> Sweep:
  out = launch(env, data_dir, root, arg, *flags)
  assert out.returncode == 0, out.stderr[-3000:]
  job = re.search(r'submitted SLURM (?:array )?job (\d+)', out.stderr)
  assert job, out.stderr
  return Sweep(root, arg, job.group(1), out.stderr, plan.expand(f'{EXPERIMENT}:{arg}', root))


def wait_for(what, condition, timeout_s, explain=lambda: ''):
  deadline = time.monotonic() + timeout_s
  while not (value := condition()):
    assert time.monotonic() < deadline, f'{what} not within {timeout_s} s. {explain()}'
    time.sleep(0.5)
  return value


def wait_training(cluster, sweep, timeout_s=300):
  """Until a point of the sweep has logged a step (its task is past compiling)."""
  wait_for(f'training of job {sweep.job}', lambda: any(sweep.logged_steps(p) for p in sweep.points),
           timeout_s, lambda: f'{cluster.queue(sweep.job)}\n{sweep.logs()[-3000:]}')


def speed(sweep) -> float:
  """Steps a second of the sweep's training so far (what its runs logged)."""
  rates = [r['train/steps_per_sec'] for p in sweep.points for r in metrics_lib.read(p.workdir)
           if 'train/steps_per_sec' in r]
  return float(np.median(rates))


def final_states(cluster, sweep, timeout_s) -> dict[str, list[str]]:
  cluster.wait_done(sweep.job, timeout_s)
  return cluster.final_states(sweep.job)


# ---------------------------------------------------------------------------------------
# The requeue cases, started first
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def preempted(slurm_cluster, env, data_dir, tmp_path_factory):
  """A task sent SIGUSR2 (what a preemption, or submitit before a time limit, sends) while
  it trains: it saves, submitit requeues it, and SLURM holds it before it runs again."""
  sweep = submit(env, data_dir, str(tmp_path_factory.mktemp('preempted')),
                 'widths=8,steps=1500', *LONG, '--config.train.eval_every_steps=1500')
  wait_training(slurm_cluster, sweep)
  sweep.speed = speed(sweep)
  slurm_cluster.run(['scancel', '--signal=USR2', sweep.job])
  return sweep


@pytest.fixture(scope='module')
def timed_out(slurm_cluster, env, data_dir, preempted, tmp_path_factory):
  """A group about twice as long as its task's first allocation (2 minutes; from the speed
  measured on the preempted case): SLURM's warning (SIGUSR2 45 s before the limit, or up to
  30 s earlier at this controller's pace) makes it save and requeue. SLURM's own time limit
  is what stops it, every time; the test then keeps the case short: it releases the
  requeued task's hold at once and raises its limit, so that the second run finishes."""
  steps = max(1000, int(preempted.speed * 120 / 100) * 100)
  sweep = submit(env, data_dir, str(tmp_path_factory.mktemp('timed_out')),
                 f'widths=8,steps={steps}', *LONG, f'--config.train.eval_every_steps={steps}',
                 '--slurm_timeout_min=2', '--slurm_signal_delay_s=45')
  sweep.released, stop = [], threading.Event()

  def release():
    while not stop.wait(1.0):
      for task, (state, reason) in slurm_cluster.queue(sweep.job).items():
        if state == 'PENDING' and reason == 'BeginTime':
          slurm_cluster.run(['scontrol', 'update', f'JobId={task}', 'TimeLimit=20',
                             'StartTime=now'], check=False)
          sweep.released.append(time.monotonic())

  thread = threading.Thread(target=release, daemon=True)
  thread.start()
  yield sweep
  stop.set()
  thread.join()


def test_a_requeued_task_is_held_and_a_relaunch_leaves_it_alone(slurm_cluster, env, data_dir,
                                                                 preempted, timed_out):
  """The preempted task waits in SLURM's queue (PENDING, BeginTime) holding no lease: the
  relaunch asks SLURM, submits nothing and says what holds the points."""
  del timed_out  # Started now, so that it runs while the others do.
  sweep = preempted
  wait_for('the requeue', lambda: slurm_cluster.queue(sweep.job).get(sweep.job, ('',))[0] ==
           'PENDING', 120, lambda: f'{slurm_cluster.queue(sweep.job)}\n{sweep.logs()[-3000:]}')
  assert slurm_cluster.queue(sweep.job)[sweep.job] == ('PENDING', 'BeginTime')
  for p in sweep.points:
    status = status_lib.read(p.workdir)
    assert status['status'] == 'preempted' and status['signal'] == 'SIGUSR2', status
  again = launch(env, data_dir, sweep.root, sweep.arg, *LONG,
                 '--config.train.eval_every_steps=1500')
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'submitted SLURM' not in again.stderr, again.stderr
  assert (f'Nothing to run now: the 2 point(s) not done are being trained or are queued (2 by '
          f'SLURM job {sweep.job} (PENDING, BeginTime))') in again.stderr, again.stderr
  assert len(glob.glob(os.path.join(sweep.root, 'slurm', 'launch-*.json'))) == 1


# ---------------------------------------------------------------------------------------
# Meanwhile
# ---------------------------------------------------------------------------------------
def test_a_sweep_is_submitted_finished_and_reported(slurm_cluster, env, data_dir, tmp_path):
  """Two groups, an array of two tasks: the job id is printed with the commands that use
  it; a relaunch while they train submits nothing and says what holds the points; then
  both finish and the report reads them. The root has a space and a quote (quoting)."""
  sweep = submit(env, data_dir, str(tmp_path / "smoke sweep's root"), 'steps=2000', *LONG)
  job = sweep.job
  assert (f'submitted SLURM array job {job}: 2 tasks, task I trains group I. Follow it: '
          f'squeue -j {job}; stop it (each task saves first): scancel {job}') in sweep.out
  wait_training(slurm_cluster, sweep)
  again = launch(env, data_dir, sweep.root, sweep.arg, *LONG)
  assert again.returncode == 0 and 'submitted SLURM' not in again.stderr, again.stderr[-3000:]
  assert 'Nothing to run now: the 4 point(s) not done are being trained or are queued' in (
      again.stderr), again.stderr
  assert f'by SLURM job {job}_0 (' in again.stderr and f'by SLURM job {job}_1 (' in again.stderr
  states = final_states(slurm_cluster, sweep, 300)
  print(f'\nsmoke: {states}')
  assert states == {f'{job}_0': ['COMPLETED'], f'{job}_1': ['COMPLETED']}, (
      states, sweep.logs()[-3000:])
  assert all(plan.point_status(p) == 'done' for p in sweep.points)
  shown = report.report(sweep.root)
  assert shown['counts'] == {'done': 4, 'failed': 0, 'running': 0, 'pending': 0}
  done = launch(env, data_dir, sweep.root, sweep.arg, *LONG)
  assert done.returncode == 0 and 'Nothing to run: every point is done' in done.stderr
  assert 'skipping' not in done.stderr, done.stderr  # Done points are not "held".


@pytest.fixture(scope='module')
def stopped(slurm_cluster, env, data_dir, tmp_path_factory):
  """Two tasks stopped while they train: one by scancel (SIGTERM), one by a SIGUSR2 that
  submitit counts as a time-out when it has none left (--slurm_max_num_timeout=0; under a
  10-minute limit submitit takes any SIGUSR2 for the time limit coming)."""
  cancelled = submit(env, data_dir, str(tmp_path_factory.mktemp('cancelled')),
                     'widths=8,steps=100000', *LONG)
  exhausted = submit(env, data_dir, str(tmp_path_factory.mktemp('exhausted')),
                     'widths=8,steps=100000', *LONG, '--slurm_timeout_min=10',
                     '--slurm_max_num_timeout=0')
  wait_training(slurm_cluster, cancelled)
  slurm_cluster.run(['scancel', cancelled.job])
  wait_training(slurm_cluster, exhausted)
  slurm_cluster.run(['scancel', '--signal=USR2', exhausted.job])
  cancelled.states = final_states(slurm_cluster, cancelled, 120)
  exhausted.states = final_states(slurm_cluster, exhausted, 120)
  return cancelled, exhausted


def test_scancel_saves_and_stops(stopped):
  sweep = stopped[0]
  print(f'\nscancel: {sweep.states}')
  assert sweep.states == {sweep.job: ['CANCELLED']}, sweep.logs()[-3000:]
  for p in sweep.points:
    status = status_lib.read(p.workdir)
    assert status['status'] == 'preempted' and status['signal'] == 'SIGTERM', status
    assert status_lib.latest_checkpoint_step(p.workdir) == status['step'] > 0
  assert 'requeueing' not in sweep.logs()


def test_used_up_time_outs_end_in_one_line_and_a_resumable_status(stopped):
  """submitit refuses the requeue: the task says so in one `error:` line (no traceback),
  the job completes, and each point's status says why it stopped and stays resumable."""
  sweep = stopped[1]
  logs = sweep.logs()
  print(f'\ntime-outs used up: {sweep.states}\n' + _story(logs))
  assert sweep.states == {sweep.job: ['COMPLETED']}, logs[-3000:]
  assert 'Traceback' not in logs, logs[-3000:]
  errors = [line for line in logs.splitlines() if line.startswith('error:')]
  assert len(errors) == 1, logs[-3000:]
  assert re.fullmatch(r'error: group 0 saved step \d+ and stopped: SLURM stopped it at its time '
                      r'limit more than --slurm_max_num_timeout=0 times, so it was not requeued; '
                      r'relaunch the sweep to resume it \(a longer --slurm_timeout_min needs fewer '
                      r'relaunches\)\.', errors[0]), errors
  for p in sweep.points:
    status = status_lib.read(p.workdir)
    assert status['status'] == 'preempted' and 'not requeued' in status['reason'], status
    assert status_lib.latest_checkpoint_step(p.workdir) == status['step'] > 0
    assert plan.point_status(p) == 'running'  # Resumable: a relaunch trains it on.


def _files(root):
  """Every file under `root` (but the checkpoints) with its content."""
  found = {}
  for where, dirs, names in os.walk(root):
    dirs[:] = [d for d in dirs if d != 'checkpoints']
    for name in names:
      with open(os.path.join(where, name), 'rb') as f:
        found[os.path.relpath(os.path.join(where, name), root)] = f.read()
  return found


def test_a_refused_submission_is_one_line_and_changes_nothing(stopped, env, data_dir, tmp_path):
  """sbatch refuses 3 GPUs a node (the nodes have 2): one `error:` line, and the sweep as it
  was: the manifest, the launches and every point's status (here: preempted) untouched."""
  sweep = stopped[0]
  before = _files(sweep.root)
  out = launch(env, data_dir, sweep.root, sweep.arg, *LONG, '--slurm_gpus_per_node=3')
  assert out.returncode == 2 and 'Traceback' not in out.stderr, out.stderr[-3000:]
  errors = [line for line in out.stderr.splitlines() if 'error' in line.lower()]
  assert len(errors) == 1 and errors[0].startswith('error: sbatch refused the array ('), out.stderr
  assert 'Requested node configuration is not available' in errors[0]
  assert 'Nothing was submitted and the sweep is as it was' in errors[0]
  assert _files(sweep.root) == before
  fresh = str(tmp_path / 'fresh')
  out = launch(env, data_dir, fresh, 'steps=8', '--slurm_gpus_per_node=3')
  assert out.returncode == 2 and out.stderr.count('error:') == 1, out.stderr
  assert not os.path.exists(fresh)  # Only what this launch created, and it is gone again.


@pytest.mark.parametrize('flag,message', [
    ('--slurm_partition=debug\nhostname', "--slurm_partition='debug\\nhostname' is not a SLURM "
                                          'name'),
    ('--slurm_extra=comment=a\nhostname', "--slurm_extra='comment=a\\nhostname' is not an "
                                          'sbatch option'),
    ('--slurm_setup=true\nhostname', '--slurm_setup=\'true\\nhostname\' holds a line break'),
    ('--slurm_extra=array=0-9', "--slurm_extra='array=0-9' sets --array, which the launcher "
                                'sets itself; use --slurm_array_parallelism instead.'),
    ('--root=ROOT%j', "holds a \"%\" or a control character"),
])
def test_values_for_the_sbatch_script_are_checked(env, data_dir, tmp_path, flag, message):
  """A value that would break the script sbatch reads (a line break ends an #SBATCH line and
  starts a shell command; % is a SLURM file name pattern) is refused before anything is
  written or submitted."""
  root = str(tmp_path / 'r')
  flag = flag.replace('ROOT', root)
  args = [flag] if not flag.startswith('--root') else []
  out = launch(env, data_dir, root if args else flag.split('=', 1)[1], 'steps=8', *args)
  assert out.returncode == 2 and 'Traceback' not in out.stderr, out.stderr[-3000:]
  lines = out.stderr.strip().splitlines()
  assert lines[-1].startswith('error: ') and message in lines[-1], out.stderr
  assert not glob.glob(str(tmp_path / 'r*' / plan.SWEEP_FILE))
  assert not glob.glob(str(tmp_path / 'r*' / 'slurm'))  # Nothing submitted.


# ---------------------------------------------------------------------------------------
# Several processes per task
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def distributed(slurm_cluster, env, data_dir, tmp_path_factory):
  """One group trained by 2 tasks on one node (2 fake GPUs), one by 2 nodes x 2 fake GPUs,
  and the same group by one process here, all at once."""
  base = tmp_path_factory.mktemp('distributed')
  arg = 'widths=8,steps=24'
  two = submit(env, data_dir, str(base / 'two'), arg, '--slurm_gpus_per_node=2')
  four = submit(env, data_dir, str(base / 'four'), arg, '--slurm_gpus_per_node=2',
                '--slurm_nodes=2', '--config.mesh.data=2')
  one = subprocess.run(
      [sys.executable, '-m', 'launch.sweep', f'--config={EXPERIMENT}:{arg}',
       f'--root={base / "one"}', f'--config.data.data_dir={data_dir}'], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=600)
  assert one.returncode == 0, one.stderr[-3000:]
  two.states = final_states(slurm_cluster, two, 300)
  four.states = final_states(slurm_cluster, four, 300)
  return plan.expand(f'{EXPERIMENT}:{arg}', str(base / 'one')), two, four


def _process_lines(sweep):
  """What each process said it is and sees (launch/worker.py), by SLURM_PROCID."""
  lines = re.findall(r'^process (\d+) of (\d+) on \S+ \((.*)\): local devices (.*); (\d+) in all$',
                     sweep.logs(), re.M)
  return {int(f[0]): (int(f[1]), dict(kv.split('=', 1) for kv in f[2].split()), f[3], int(f[4]))
          for f in lines}


def test_two_tasks_under_jax_distributed_train_what_one_process_does(distributed):
  one, two, _ = distributed
  assert two.states == {two.job: ['COMPLETED']}, two.logs()[-3000:]
  seen = _process_lines(two)
  assert sorted(seen) == [0, 1], two.logs()[-3000:]
  for rank, (count, env, _, devices) in seen.items():
    assert (count, devices, env['SLURM_PROCID'], env['SLURM_LOCALID']) == (2, 2, str(rank),
                                                                          str(rank))
  for mine, theirs in zip(one, two.points):
    assert plan.point_status(theirs) == 'done'
    losses = [(r['step'], r['train/loss']) for r in metrics_lib.read(theirs.workdir)
              if 'train/loss' in r]
    expected = [(r['step'], r['train/loss']) for r in metrics_lib.read(mine.workdir)
                if 'train/loss' in r]
    assert losses and np.allclose(losses, expected, rtol=1e-6, atol=0), (losses, expected)


def test_two_nodes_of_two_gpus_each_process_sees_what_the_readme_says(distributed):
  """launch/README.md: srun starts GPUs-per-node processes on each node; process id =
  SLURM_PROCID; each process is given the GPU numbered SLURM_LOCALID of its node's GPUs; the
  coordinator is the first node of SLURM_STEP_NODELIST."""
  _, _, four = distributed
  assert four.states == {four.job: ['COMPLETED']}, four.logs()[-3000:]
  seen = _process_lines(four)
  assert sorted(seen) == [0, 1, 2, 3], four.logs()[-3000:]
  nodes = {}
  for rank, (count, env, _, devices) in seen.items():
    assert (count, devices, env['SLURM_PROCID']) == (4, 4, str(rank))
    assert env['CUDA_VISIBLE_DEVICES'] == '0,1'  # The node's 2 GPUs; JAX takes SLURM_LOCALID's.
    assert len(env['SLURM_STEP_NODELIST'].split(',')) == 2
    nodes.setdefault(env['SLURMD_NODENAME'], []).append(int(env['SLURM_LOCALID']))
  assert sorted(map(sorted, nodes.values())) == [[0, 1], [0, 1]]  # 2 processes a node.
  assert all(plan.point_status(p) == 'done' for p in four.points)


# ---------------------------------------------------------------------------------------
# The requeue cases, at their end
# ---------------------------------------------------------------------------------------
def test_a_time_limit_shorter_than_the_run_requeues_until_done(slurm_cluster, timed_out):
  sweep = timed_out
  states = final_states(slurm_cluster, sweep, 900)
  logs = sweep.logs()
  runs = states[sweep.job]
  assert len(runs) == 2 and runs[-1] == 'COMPLETED', (runs, logs[-3000:])
  assert 'this job is timed-out' in logs, logs[-3000:]  # submitit: the limit, no preemption.
  _resumed_once(sweep, logs)
  print(f'\ntime limit: {sweep.points[0].config.train.steps} steps; runs {runs}\n' +
        _story(logs))


def _resumed_once(sweep, logs):
  """It saved once, was requeued once and went on from the step it saved, logging each
  step once."""
  assert logs.count('requeueing group 0: it resumes from the step it saved.') == 1, logs[-3000:]
  saved = int(logs.split('preempted: group 0 saved step ')[1].split()[0])
  steps = sweep.points[0].config.train.steps
  assert 0 < saved < steps
  resumed = logs.split('Requeued job')[1]  # The requeued run's log, after submitit's line.
  assert re.search(rf': {saved}/{steps} steps \(\d+%\), starting', resumed), logs[-3000:]
  for p in sweep.points:
    assert plan.point_status(p) == 'done'
    assert sweep.logged_steps(p) == list(range(50, steps + 1, 50)), p.name  # Each step once.


def _story(logs):
  """The lines of a requeued task's log that tell what happened (for the output)."""
  keep = ('Caught signal', 'preempted: group', 'requeueing group', 'Requeued job',
          'CANCELLED AT', 'steps (', 'Job completed', 'not requeued')
  return '\n'.join(line for line in logs.splitlines() if any(k in line for k in keep))


def test_the_preempted_task_resumes_exactly_after_its_hold(slurm_cluster, preempted):
  sweep = preempted
  states = final_states(slurm_cluster, sweep, 600)
  logs = sweep.logs()
  assert states[sweep.job][-1] == 'COMPLETED', (states, logs[-3000:])
  assert 'this job is preempted' in logs, logs[-3000:]  # submitit's word for it.
  _resumed_once(sweep, logs)
  print(f'\npreemption: runs {states[sweep.job]}\n' + _story(logs))
