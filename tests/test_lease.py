"""Workdir leases: one trainer per workdir; a dead holder's lease is taken over."""

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

import pytest

from icl_jax import lease as lease_lib
from icl_jax import train
from helpers import contend_for_lease
from helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(workdir, **holder):
  os.makedirs(workdir, exist_ok=True)
  now = time.time()
  record = dict(host=socket.gethostname(), pid=os.getpid(), pid_start=None, started=now,
                heartbeat=now)
  record.update(holder)
  with open(os.path.join(workdir, lease_lib.LEASE_FILE), 'w') as f:
    json.dump(record, f)
  return record


@pytest.fixture
def live_pid():
  process = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
  yield process.pid
  process.kill()
  process.wait()


@pytest.fixture
def dead_pid():
  process = subprocess.Popen([sys.executable, '-c', 'pass'])
  process.wait()  # Reaped: the pid names no process now.
  return process.pid


def test_a_second_trainer_is_refused_and_changes_nothing(data_dir, tmp_path, live_pid):
  workdir = str(tmp_path / 'run')
  holder = _write(workdir, pid=live_pid, pid_start=lease_lib._pid_start(live_pid))
  before = sorted(os.listdir(workdir))
  with pytest.raises(lease_lib.LeaseHeld, match=rf'being trained by another process \(host '
                     rf'{socket.gethostname()}, pid {live_pid}, since .*\)\. Wait for it'):
    train.train_and_evaluate(tiny_config(data_dir, train__steps=2), workdir)
  assert sorted(os.listdir(workdir)) == before
  assert lease_lib.read(workdir) == holder


def test_a_dead_holders_lease_is_taken_over_and_released(data_dir, tmp_path, dead_pid, caplog):
  workdir = str(tmp_path / 'run')
  _write(workdir, pid=dead_pid)
  train.train_and_evaluate(tiny_config(data_dir, train__steps=2), workdir)
  assert f'its process {dead_pid} no longer exists' in caplog.text
  assert not os.path.exists(os.path.join(workdir, lease_lib.LEASE_FILE))  # Released.
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '2'))


@pytest.mark.parametrize('holder,stale', [
    (dict(host='other-node', heartbeat_age=10), None),
    (dict(host='other-node', heartbeat_age=lease_lib.STALE_AFTER_S + 5), 'last heartbeat'),
    (dict(host='other-node', heartbeat_age=None), 'no heartbeat'),
    (dict(pid_start=-1), 'is another program now'),  # A reused pid: not the holder.
])
def test_staleness(tmp_path, holder, stale):
  holder = dict(holder)
  age = holder.pop('heartbeat_age', 0)
  record = _write(str(tmp_path), **holder)
  record['heartbeat'] = None if age is None else time.time() - age
  reason = lease_lib.stale_reason(record)
  assert (reason is None) if stale is None else (stale in reason), reason


@pytest.mark.parametrize('holder_job,holder_restart,stale', [
    ('700_3', 0, 'its SLURM job 700_3 was requeued (restart 1 replaces 0)'),
    ('700_3', 1, None),  # This very run of the job, on another node: live.
    ('700_4', 0, None),  # Another array task.
])
def test_a_requeued_slurm_job_takes_over_its_earlier_run(tmp_path, monkeypatch, holder_job,
                                                         holder_restart, stale):
  monkeypatch.setenv('SLURM_ARRAY_JOB_ID', '700')
  monkeypatch.setenv('SLURM_ARRAY_TASK_ID', '3')
  monkeypatch.setenv('SLURM_RESTART_COUNT', '1')
  record = _write(str(tmp_path), host='node-b', slurm_job=holder_job,
                  slurm_restart=holder_restart)
  assert lease_lib.stale_reason(record) == stale
  if stale is None:
    return
  lease = lease_lib.Lease.acquire(str(tmp_path))
  assert lease_lib.read(str(tmp_path))['slurm_job'] == '700_3'
  assert lease_lib.read(str(tmp_path))['slurm_restart'] == 1
  lease.release()


def test_other_host_live_lease_refused_stale_one_taken_over(tmp_path):
  workdir = str(tmp_path)
  _write(workdir, host='other-node', pid=1)
  with pytest.raises(lease_lib.LeaseHeld, match='host other-node, pid 1'):
    lease_lib.Lease.acquire(workdir)
  _write(workdir, host='other-node', pid=1, heartbeat=time.time() - 2 * lease_lib.STALE_AFTER_S)
  lease = lease_lib.Lease.acquire(workdir)
  assert lease_lib.read(workdir)['pid'] == os.getpid()
  lease.release()
  assert lease_lib.read(workdir) is None


def test_a_filesystem_without_hard_links_still_gets_one_holder(tmp_path, monkeypatch):
  """gcsfuse and some FUSE/SMB mounts refuse link(2): an exclusive create stands in."""
  def no_links(src, dst):
    raise PermissionError(1, 'Operation not permitted', src)
  monkeypatch.setattr(os, 'link', no_links)
  workdir = str(tmp_path)
  lease = lease_lib.Lease.acquire(workdir)
  assert lease_lib.read(workdir)['pid'] == os.getpid()
  assert os.listdir(workdir) == [lease_lib.LEASE_FILE]  # No temporary file left.
  _write(str(tmp_path / 'other'), host='other-node', pid=1)
  with pytest.raises(lease_lib.LeaseHeld, match='host other-node'):
    lease_lib.Lease.acquire(str(tmp_path / 'other'))
  lease.release()
  assert lease_lib.read(workdir) is None


def test_a_hand_edited_lease_is_taken_over(tmp_path, caplog):
  with open(tmp_path / lease_lib.LEASE_FILE, 'w') as f:
    f.write('{"host": ')
  lease = lease_lib.Lease.acquire(str(tmp_path))
  assert 'the lease file is unreadable' in caplog.text
  lease.release()


def test_heartbeat_refreshes_and_a_lost_lease_is_noticed(tmp_path, monkeypatch):
  monkeypatch.setattr(lease_lib, 'HEARTBEAT_S', 0.05)
  lease = lease_lib.Lease.acquire(str(tmp_path))
  first = lease_lib.read(str(tmp_path))['heartbeat']
  time.sleep(0.3)
  assert lease_lib.read(str(tmp_path))['heartbeat'] > first
  lease.check()
  _write(str(tmp_path), host='other-node', pid=7)  # Another trainer judged us gone.
  with pytest.raises(lease_lib.LeaseHeld, match='Lost the lease .* host other-node, pid 7'):
    lease.check()
  lease.release()  # Leaves the other trainer's lease alone.
  assert lease_lib.read(str(tmp_path))['pid'] == 7


def test_the_logged_step_reaches_the_lease_for_launchers_to_read(tmp_path, monkeypatch):
  """The loop notes each logged step (no file access in the loop); the heartbeat thread
  writes the first at once and later ones at most every PROGRESS_S."""
  monkeypatch.setattr(lease_lib, 'PROGRESS_S', 0.05)
  lease = lease_lib.Lease.acquire(str(tmp_path))
  assert 'step' not in lease_lib.read(str(tmp_path))
  for step in (4, 8):
    time.sleep(0.1)
    lease.progress(step)
    deadline = time.monotonic() + 10
    while lease_lib.read(str(tmp_path)).get('step') != step:
      assert time.monotonic() < deadline, lease_lib.read(str(tmp_path))
      time.sleep(0.01)
  lease.release()
  assert lease_lib.read(str(tmp_path)) is None


def test_simultaneous_takers_exactly_one_wins(tmp_path):
  context = multiprocessing.get_context('spawn')  # JAX's threads make fork unsafe.
  barrier, results = context.Barrier(4), context.Queue()
  processes = [context.Process(target=contend_for_lease, args=(str(tmp_path), barrier, results))
               for _ in range(4)]
  for p in processes:
    p.start()
  for p in processes:
    p.join(30)
  outcomes = sorted(results.get(timeout=5) for _ in processes)
  assert outcomes == ['refused'] * 3 + ['won']


def test_relaunched_sweep_skips_points_being_trained(data_dir, tmp_path, live_pid):
  from icl_jax import plan  # pylint: disable=g-import-not-at-top
  experiment = os.path.join(REPO, 'tests', 'experiments', 'tiny_sweep.py')
  root = str(tmp_path / 'sweep')
  points = plan.expand(experiment, root)
  _write(points[0].workdir, pid=live_pid, pid_start=lease_lib._pid_start(live_pid))
  out = subprocess.run(
      [sys.executable, '-m', 'launch.sweep', f'--config={experiment}', f'--root={root}',
       f'--config.data.data_dir={data_dir}', '--dry_run'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert f'skipping {points[0].name}: being trained by host' in out.stderr
  assert points[0].workdir not in out.stdout
  assert points[1].workdir in out.stdout
