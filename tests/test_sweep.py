"""Sweeps: points and workdirs, groups, a vmapped group equal to its runs one by one, and the
launcher killed mid-way and relaunched (through the SLURM path's local executor)."""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import icl_jax
from icl_jax import recovery
from icl_jax import metrics as metrics_lib
from icl_jax import report
from icl_jax import status as status_lib
from icl_jax import store as store_lib
from icl_jax import experiment
from icl_jax import plan
from icl_jax import train
from icl_jax import workload
from icl_jax.errors import UserError
from helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'scripts'))
import fault_check  # pylint: disable=g-import-not-at-top,wrong-import-position
EXPERIMENT = os.path.join(REPO, 'tests', 'experiments', 'tiny_sweep.py')
NAMES = ['model.width=8,task.num_tasks=2', 'model.width=8,task.num_tasks=-1',
         'model.width=16,task.num_tasks=2', 'model.width=16,task.num_tasks=-1']


# ---------------------------------------------------------------------------------------
# Points, workdirs, groups
# ---------------------------------------------------------------------------------------
def test_points_have_stable_workdirs_and_group_by_shape(tmp_path):
  points = plan.expand(EXPERIMENT, str(tmp_path))
  assert [p.name for p in points] == NAMES
  assert [p.config.model.width for p in points] == [8, 8, 16, 16]
  assert [p.config.task.num_tasks for p in points] == [2, -1, 2, -1]
  assert len({p.workdir for p in points}) == 4
  assert all(os.path.dirname(p.workdir) == str(tmp_path) for p in points)
  assert os.path.basename(points[0].workdir).startswith('width=8,num_tasks=2-')
  # Relaunching finds the same workdirs; so does a longer run (resumable), not a new shape.
  assert [p.workdir for p in plan.expand(EXPERIMENT, str(tmp_path))] == [
      p.workdir for p in points]
  longer = plan.expand(EXPERIMENT + ':steps=50', str(tmp_path))
  assert [p.workdir for p in longer] == [p.workdir for p in points]
  other = plan.expand(EXPERIMENT + ':widths=8+32', str(tmp_path))
  assert other[0].workdir == points[0].workdir and other[2].workdir != points[2].workdir

  groups = plan.make_groups(points, max_group_size=64)
  assert [[p.name for p in g] for g in groups] == [NAMES[:2], NAMES[2:]]
  assert [len(g) for g in plan.make_groups(points, max_group_size=1)] == [1, 1, 1, 1]
  assert [len(g) for g in plan.make_groups(points, None)] == [1, 1, 1, 1]


def _experiment(tmp_path, body):
  path = tmp_path / 'exp.py'
  path.write_text('from icl_jax import config as config_lib\n'
                  'def get_config(arg=None):\n  return config_lib.base_config()\n'
                  f'def sweep(add, arg=None):\n  {body}\n')
  return str(path)


@pytest.mark.parametrize('name', experiment.experiment_names())
def test_every_shipped_experiment_builds_a_valid_smoke_config_and_sweep(name, tmp_path):
  """An experiment file is read only when someone launches it: each one's `:smoke` config
  must validate, and its `:smoke` sweep (where it has one) expand to valid points."""
  path = os.path.join(experiment.experiments_dir(), f'{name}.py')
  module = experiment.load_module(path)
  from icl_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  config_lib.validate(module.get_config('smoke'))
  if hasattr(module, 'sweep'):
    points = plan.expand(f'{path}:smoke', str(tmp_path))
    assert points and all(p.workdir.startswith(str(tmp_path)) for p in points)


@pytest.mark.parametrize('config_arg, match', [
    (EXPERIMENT + ':empty', r'expands to zero points: its sweep\(\) never called add\(\)'),
    (EXPERIMENT + ':duplicate', r'Sweep points 0 and 4 .* would share workdir .* Remove the '
                                r'duplicate'),
    ('no/such/experiment.py', r"'no/such/experiment.py' does not exist"),
    (os.path.join(REPO, 'experiments', 'gpicl_digits.py'), r'defines no sweep\(add, arg=None\)'),
    ('BODY:add(**{"model.widht": 3})', r"Sweep point 0 .*no field 'model.widht'"),
    ('BODY:add(**{"model.width": "wide"})', r'Sweep point 0 .*model.width=.wide. has the wrong '
                                            r'type'),
    ('BODY:add(**{"task.num_tasks": 0})', r'Sweep point 0 \(task.num_tasks=0\): config.task.'
                                          r'num_tasks must be an integer >= 1'),
])
def test_bad_sweeps_are_refused_clearly(tmp_path, config_arg, match):
  if config_arg.startswith('BODY:'):
    config_arg = _experiment(tmp_path, config_arg[len('BODY:'):])
  with pytest.raises(UserError, match=match):
    plan.expand(config_arg, str(tmp_path / 'root'))
  assert not os.path.exists(tmp_path / 'root')  # Nothing written.


def test_runs_that_differ_in_shape_cannot_share_a_group(data_dir, tmp_path):
  a, b = tiny_config(data_dir), tiny_config(data_dir, model__width=32)
  with pytest.raises(UserError, match=r'differ in model.width; only seed, task.num_tasks'):
    train.train_group([a, b], [str(tmp_path / 'a'), str(tmp_path / 'b')])


# ---------------------------------------------------------------------------------------
# A vmapped group equals its runs one by one
# ---------------------------------------------------------------------------------------
VARIANTS = [  # Values a group may vary; the last run diverges on purpose.
    dict(seed=0),
    dict(seed=1, task__num_tasks=-1),
    dict(seed=0, train__lr=1e-3, task__bias_fraction=0.5, train__eps=1e-6),
    dict(seed=2, train__lr=1e30),
]


def _config(data_dir, variant):
  seed = variant.get('seed', 0)
  config = tiny_config(data_dir, train__steps=12, train__checkpoint_every_steps=6,
                       train__log_every_steps=1,
                       **{k: v for k, v in variant.items() if k != 'seed'})
  config.seed = seed
  config.mesh.data = 2  # The same data axis alone and in the group: only vmap differs.
  return config


def _params(workdir, config):
  ckpt = store_lib.Store(workdir, read_only=True)
  mesh = jax.make_mesh((1,), ('data',))
  _, state, _ = recovery.Recovery(ckpt).restore_latest(workload.build(config).abstract_on(mesh))
  ckpt.close()
  return jax.device_get(state['params'])


def _losses(workdir):
  return [r['train/loss'] for r in metrics_lib.read(workdir) if 'train/loss' in r]


def test_vmapped_group_equals_runs_one_by_one(data_dir, tmp_path):
  if jax.device_count() < 2:  # ICL_JAX_TEST_PLATFORM=gpu on a one-GPU host.
    # With one device the group really batches its runs' matmuls, and Adam turns the
    # rounding of near-zero gradients into parameter differences beyond the tolerances
    # below (seen on one CPU device; the losses still agree).
    pytest.skip('needs 2 devices for its data axis of 2')
  configs = [_config(data_dir, v) for v in VARIANTS]
  group_dirs = [str(tmp_path / f'group{i}') for i in range(len(configs))]
  results = train.train_group(configs, group_dirs)  # 4 runs: mesh run=4 x data=2.

  diverged = results[-1]
  assert diverged.error and f'Training diverged at step {diverged.step}:' in diverged.error
  assert diverged.step < 6  # lr 1e30: it blows up within a few steps, before any save.
  status = status_lib.read(group_dirs[-1])
  assert status['status'] == 'failed' and 'diverged' in status['error']
  assert store_lib.Store(group_dirs[-1], read_only=True).latest_step() is None

  for i, (config, group_dir) in enumerate(zip(configs[:-1], group_dirs[:-1])):
    assert results[i].error is None and results[i].step == 12
    assert status_lib.read(group_dir)['status'] == 'done'
    alone_dir = str(tmp_path / f'alone{i}')
    summary = train.train_and_evaluate(config, alone_dir)
    # vmap batches each matmul over the run axis; XLA may then sum in another order, so
    # equality is up to float32 rounding, not bitwise.
    np.testing.assert_allclose(_losses(group_dir), _losses(alone_dir), rtol=1e-5)
    assert len(_losses(group_dir)) == 12
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 _params(group_dir, config), _params(alone_dir, config))
    # Same evaluation episodes (the run's own keys and pool), same params up to rounding:
    # the accuracies agree up to one flipped prediction among the 16 x 5 first positions.
    for key, value in summary.items():
      assert results[i].summary[key] == pytest.approx(value, abs=1 / 80 + 1e-9), key
  # The runs really differ (different seeds, pools and learning rates).
  assert _losses(group_dirs[0])[-1] != _losses(group_dirs[1])[-1]
  # A group member's workdir is an ordinary run (_params restored it as the evaluation
  # CLI does), with its own config.
  reader, step, config = recovery.open_run(group_dirs[1])
  reader.store.close()
  assert step == 12 and config.task.num_tasks == -1 and config.seed == 1
  # ... and the public API loads it like any run: its own parameters, its own config.
  trained = icl_jax.load(group_dirs[1])
  assert trained.step == 12 and trained.config.seed == 1
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(trained.params),
               _params(group_dirs[1], configs[1]))


# ---------------------------------------------------------------------------------------
# The launcher end to end: kill it mid-sweep, relaunch, report
# ---------------------------------------------------------------------------------------
def _launch(root, data_dir, *args, env=None):
  return [sys.executable, '-m', 'launch.sweep', f'--config={EXPERIMENT}', f'--root={root}',
          f'--config.data.data_dir={data_dir}', *args]


def _env(tmp_path):
  env = dict(os.environ)
  env['JAX_COMPILATION_CACHE_DIR'] = str(tmp_path / 'jax_cache')  # Restarts reuse compiles.
  env['XLA_FLAGS'] = fault_check.one_device_xla_flags()  # As on a plain host.
  return env


@pytest.mark.slow
def test_killed_sweep_relaunches_without_redoing_finished_points(data_dir, tmp_path):
  root, env = str(tmp_path / 'sweep'), _env(tmp_path)
  points = plan.expand(EXPERIMENT, root)
  first_group = [p for p in points if p.config.model.width == 8]

  launcher = subprocess.Popen(_launch(root, data_dir), cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
  deadline = time.time() + 240
  while not all(plan.point_status(p) == 'done' for p in first_group):
    assert launcher.poll() is None, launcher.stdout.read().decode()[-3000:]
    assert time.time() < deadline, 'the first group did not finish in time'
    time.sleep(0.2)
  os.killpg(launcher.pid, signal.SIGKILL)  # The launcher and its worker, mid-sweep.
  launcher.wait()
  finished = {p.workdir: _fingerprint(p.workdir) for p in first_group}

  # Relaunch through the SLURM backend's array (submitit's local executor here).
  out = subprocess.run(_launch(root, data_dir, '--backend=slurm', '--slurm_local'), cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert '4 points in' in out.stderr and '2 done' in out.stderr, out.stderr
  assert '2 to run in 1 group(s)' in out.stderr, out.stderr
  assert all(plan.point_status(p) == 'done' for p in points)
  for p in first_group:  # Not retrained: untouched logs and checkpoints.
    assert _fingerprint(p.workdir) == finished[p.workdir], p.name

  again = subprocess.run(_launch(root, data_dir), cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
  assert again.returncode == 0 and 'Nothing to run: every point is done' in again.stderr

  shown = report.report(root)
  assert shown['counts'] == {'done': 4, 'failed': 0, 'running': 0, 'pending': 0}
  with open(os.path.join(root, 'summary.csv')) as f:
    rows = list(csv.DictReader(f))
  assert sorted(r['name'] for r in rows) == sorted(NAMES)
  assert {r['status'] for r in rows} == {'done'}
  assert os.path.exists(os.path.join(root, 'phase_diagram.png'))


def _session_processes(session_id):
  """Pids of the live processes of a session (the launcher's and its workers')."""
  pids = []
  for name in os.listdir('/proc'):
    if name.isdigit():
      try:
        if os.getsid(int(name)) == session_id:
          with open(f'/proc/{name}/stat') as f:
            if f.read().rsplit(')', 1)[1].split()[0] != 'Z':  # Not a zombie.
              pids.append(int(name))
      except (OSError, IndexError):
        pass
  return pids


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_its_workers_and_a_relaunch_finishes(data_dir, tmp_path):
  """`kill <launcher>` (what an ssh hang-up or a scheduler does to the launcher alone): the
  workers save and stop, none outlives the launcher, and the relaunch trains every point to
  the end exactly once."""
  root, env = str(tmp_path / 'sweep'), _env(tmp_path)
  long = f'{EXPERIMENT}:steps=400'
  points = plan.expand(long, root)
  command = [sys.executable, '-m', 'launch.sweep', f'--config={long}', f'--root={root}',
             f'--config.data.data_dir={data_dir}']
  launcher = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
  deadline = time.time() + 240
  while not any(status_lib.latest_checkpoint_step(p.workdir) > 0 for p in points):
    assert launcher.poll() is None, launcher.stdout.read().decode()[-3000:]
    assert time.time() < deadline, 'no worker started training in time'
    time.sleep(0.05)
  launcher.send_signal(signal.SIGTERM)
  out = launcher.communicate(timeout=240)[0].decode()
  assert launcher.returncode == status_lib.EXIT_PREEMPTED, out[-3000:]
  assert 'SIGTERM: asking 1 worker(s) to save and stop' in out and 'Traceback' not in out
  assert _session_processes(launcher.pid) == []  # No orphan keeps training.
  stopped = [p for p in points if (status_lib.read(p.workdir) or {}).get('status') == 'preempted']
  assert stopped, [status_lib.read(p.workdir) for p in points]
  for p in stopped:
    assert status_lib.latest_checkpoint_step(p.workdir) == status_lib.read(p.workdir)['step']

  again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert all(plan.point_status(p) == 'done' for p in points)
  for p in points:  # Each step logged once: nothing was trained twice.
    logged = [r['step'] for r in metrics_lib.read(p.workdir) if 'train/loss' in r]
    assert logged == sorted(set(logged)) and logged[-1] == 400, (p.name, logged)


def _fingerprint(workdir):
  """What retraining would change: the metrics log and the checkpoint steps."""
  with open(os.path.join(workdir, metrics_lib.METRICS_FILE)) as f:
    metrics = f.read()
  return metrics, sorted(os.listdir(store_lib.directory(workdir))), os.path.getmtime(
      os.path.join(workdir, status_lib.STATUS_FILE))


def test_slurm_without_sbatch_prints_the_array_script(data_dir, tmp_path):
  env = _env(tmp_path)  # A host without SLURM's commands, even where this one has them.
  env['PATH'] = os.pathsep.join(d for d in env['PATH'].split(os.pathsep)
                                if not os.path.exists(os.path.join(d, 'sbatch')))
  out = subprocess.run(_launch(str(tmp_path / 'r'), data_dir, '--backend=slurm'), cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  assert '#SBATCH --array=0-1%2' in out.stdout  # One task per group of the 2 widths.
  assert 'submitit.core._submit' in out.stdout and 'sbatch is not on this host' in out.stderr
  with open(os.path.join(tmp_path, 'r', plan.SWEEP_FILE)) as f:
    assert len(json.load(f)['groups']) == 2


_FAKE_GCLOUD = r"""#!{python}
# gcloud compute tpus tpu-vm scp|ssh, for a TPU VM of {workers} workers on this host: each
# worker is a HOME of its own, and ssh runs the command in each at once with a login's
# bare environment (plus what the VM image and JAX's TPU detection would provide).
import os, subprocess, sys, shutil
args = sys.argv[1:]
homes = os.environ['FAKE_TPU_HOMES'].split(os.pathsep)
if args[3] == 'scp':
  for home in homes:
    shutil.copy(args[-2], os.path.join(home, 'icl_jax.tar.gz'))
  sys.exit(0)
command = next(a.split('=', 1)[1] for a in args if a.startswith('--command='))
procs = []
for i, home in enumerate(homes):
  env = dict(PATH=os.environ['FAKE_TPU_PATH'], HOME=home, FAKE_WORKER=str(i),
             JAX_PLATFORMS='cpu', XLA_FLAGS=os.environ['FAKE_TPU_XLA_FLAGS'],
             TF_CPP_MIN_LOG_LEVEL='3', JAX_COORDINATOR_ADDRESS=os.environ['FAKE_TPU_COORDINATOR'],
             JAX_NUM_PROCESSES=str(len(homes)), JAX_PROCESS_ID=str(i))
  with open(os.path.join(home, 'out'), 'w') as out:
    procs.append(subprocess.Popen(['bash', '-c', command], env=env, cwd=home, stdout=out,
                                  stderr=subprocess.STDOUT))
sys.exit(max(p.wait() for p in procs))
"""


def _fake_venv(checkout):
  """A .venv in `checkout` that is this test's venv, stamped as installed (no network)."""
  venv = checkout / '.venv'
  (venv / 'bin').mkdir(parents=True)
  (venv / 'bin' / 'python').symlink_to(os.path.realpath(sys.executable))
  shutil.copy(os.path.join(sys.prefix, 'pyvenv.cfg'), venv / 'pyvenv.cfg')
  (venv / 'lib').symlink_to(os.path.join(sys.prefix, 'lib'))
  shutil.copy(os.path.join(REPO, 'pyproject.toml'), venv / '.installed')


@pytest.mark.slow
def test_tpu_vm_workers_train_the_groups_worker_0_wrote(data_dir, tmp_path):
  """--backend tpu_vm through launch/tpu_vm.sh, with a stand-in gcloud that runs the remote
  command on 2 "workers" here (2 processes of 4 CPU devices, one jax.distributed job): the
  config path is made relative to the shipped checkout, the environment is forwarded,
  worker 0 alone writes the launch manifest and worker 1 trains the groups it lists."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'gcloud').write_text(_FAKE_GCLOUD.format(python=sys.executable, workers=2))
  (bin_dir / 'curl').write_text('#!/bin/bash\necho "$FAKE_WORKER"\n')  # The metadata server.
  for name in ('gcloud', 'curl'):
    (bin_dir / name).chmod(0o755)
  homes = [tmp_path / f'worker{i}' for i in range(2)]
  for home in homes:
    _fake_venv(home / 'icl_jax')
  root = str(tmp_path / 'shared' / 'sweep')
  env = _env(tmp_path)
  env.update(PATH=f'{bin_dir}{os.pathsep}{env["PATH"]}', TFDS_DATA_DIR=data_dir,
             FAKE_TPU_HOMES=os.pathsep.join(map(str, homes)),
             FAKE_TPU_PATH=f'{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin',
             FAKE_TPU_XLA_FLAGS=('--xla_force_host_platform_device_count=4 '
                                 '--xla_backend_optimization_level=0'),
             FAKE_TPU_COORDINATOR=f'127.0.0.1:{_free_port()}')
  config = os.path.relpath(EXPERIMENT, REPO) + ':widths=8'
  out = subprocess.run(
      [sys.executable, '-m', 'launch.sweep', f'--config={EXPERIMENT}:widths=8', f'--root={root}',
       '--config.mesh.data=4', '--backend=tpu_vm', '--tpu', 'my-tpu', '--zone=us-central2-b'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  worker_out = [(home / 'out').read_text() for home in homes]
  report = out.stderr[-2000:] + '\n'.join(w[-3000:] for w in worker_out)
  assert out.returncode == 0, report
  launches = os.listdir(os.path.join(root, 'launches'))
  assert len(launches) == 1, report  # Worker 0's, and only it.
  assert 'worker 1: launch ' in worker_out[1] and 'written by worker 0' in worker_out[1], report
  for out in worker_out:  # The console names each group's log, in lines (not a bar).
    assert 'group 0 (2 points) started; its log: ' in out and '\r' not in out, report
  points = plan.expand(f'{EXPERIMENT}:widths=8', root)
  assert all(plan.point_status(p) == 'done' for p in points), report
  with open(os.path.join(root, 'launches', launches[0])) as f:
    assert json.load(f)['experiment'] == config.split(':')[0]  # Relative to the checkout.
  for home in homes:  # TFDS_DATA_DIR came along: nothing prepared in the workers' homes.
    assert not (home / 'tensorflow_datasets').exists()


def test_tpu_vm_refuses_what_the_workers_could_not_see(data_dir, tmp_path):
  outside = tmp_path / 'mine.py'
  shutil.copy(EXPERIMENT, outside)
  for args, message in [
      ([f'--config={outside}', f'--root={tmp_path}/r'], 'is outside this checkout'),
      ([f'--config={EXPERIMENT}', '--root=relative/r'], 'is relative'),
  ]:
    out = subprocess.run([sys.executable, '-m', 'launch.sweep', *args, '--backend=tpu_vm',
                          '--tpu=t', '--zone=z', '--dry_run'],
                         cwd=REPO, env=_env(tmp_path), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and message in out.stderr and 'Traceback' not in out.stderr, (
        out.stderr)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_a_root_belongs_to_one_experiment(data_dir, tmp_path):
  """Another experiment (or argument) launched on a used root is refused, the root left as
  it was; --subroot puts it in a sub-root instead."""
  root, env = str(tmp_path / 'sweep'), _env(tmp_path)
  points = plan.expand(EXPERIMENT, root)
  plan.write_manifest(root, EXPERIMENT, points, [points], 'vmap')
  with open(os.path.join(root, plan.SWEEP_FILE)) as f:
    before = f.read()
  other = f'{EXPERIMENT}:widths=8'
  out = subprocess.run([sys.executable, '-m', 'launch.sweep', f'--config={other}',
                        f'--root={root}', f'--config.data.data_dir={data_dir}'],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2, out.stderr[-2000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f'error: Sweep root {root} holds the sweep '
                                                 f'of {EXPERIMENT} (4 points)'), out.stderr
  assert f'add --subroot to put this sweep in {root}/tiny_sweep-widths=8' in lines[0]
  with open(os.path.join(root, plan.SWEEP_FILE)) as f:
    assert f.read() == before
  # The same experiment again is its own sweep: allowed.
  same = subprocess.run(_launch(root, data_dir, '--dry_run'), cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)
  assert same.returncode == 0, same.stderr[-2000:]
  sub = subprocess.run([sys.executable, '-m', 'launch.sweep', f'--config={other}',
                        f'--root={root}', f'--config.data.data_dir={data_dir}', '--subroot',
                        '--dry_run'], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120)
  assert sub.returncode == 0, sub.stderr[-2000:]
  assert f'sweep root: {root}/tiny_sweep-widths=8' in sub.stderr
  assert f'{root}/tiny_sweep-widths=8/' in sub.stdout


def test_the_console_reads_the_running_groups_step_from_its_lease(tmp_path):
  """A running group's progress comes from the lease its trainer holds, which notes the last
  logged step (icl_jax/lease.py), not from the text of its log."""
  from launch.backends import base  # pylint: disable=g-import-not-at-top
  [point] = plan.expand(f'{EXPERIMENT}:widths=8,steps=300', str(tmp_path))[:1]
  assert base.group_progress([point]) is None  # Not started.
  trainer = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    os.makedirs(point.workdir)
    holder = dict(host=socket.gethostname(), pid=trainer.pid, pid_start=None,
                  started=time.time(), heartbeat=time.time())
    with open(os.path.join(point.workdir, 'lease.json'), 'w') as f:
      json.dump(holder, f)
    assert base.group_progress([point]) is None  # Compiling: nothing logged yet.
    with open(os.path.join(point.workdir, 'lease.json'), 'w') as f:
      json.dump(dict(holder, step=120), f)
    assert base.group_progress([point]) == 'step 120/300'
  finally:
    trainer.kill()
    trainer.wait()
  assert base.group_progress([point]) is None  # The holder is gone.
