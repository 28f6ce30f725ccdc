"""Faults: kill -9 at random moments, damaged checkpoints, an unwritable workdir, a cut log.

The kill test drives scripts/fault_check.py's functions (subprocesses on one CPU device
each, sharing a JAX compilation cache); the damaged-checkpoint tests reuse its
uninterrupted run.
"""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

import icl_jax

from icl_jax import recovery
from icl_jax import metrics as metrics_lib
from icl_jax import sharding
from icl_jax import status as status_lib
from icl_jax import store as store_lib
from icl_jax import train
from icl_jax import workload
from icl_jax.errors import UserError
from helpers import restored_logits
from helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'scripts'))
import fault_check  # pylint: disable=g-import-not-at-top,wrong-import-position

LAST = fault_check.TOTAL_STEPS
PREVIOUS = LAST - fault_check.CHECKPOINT_EVERY


@pytest.fixture(scope='module')
def straight_run(data_dir, tmp_path_factory):
  """(workspace, workdir, final params) of an uninterrupted fault_check run.

  It compiles everything once into the workspace's compilation cache, so the restarts of
  the tests below take seconds.
  """
  ws = fault_check.Workspace.create(str(tmp_path_factory.mktemp('faults')), data_dir)
  workdir = os.path.join(ws.root, 'straight')
  fault_check.run_uninterrupted(ws, workdir)
  step, params = fault_check.final_params(workdir)
  assert step == LAST
  return ws, workdir, params


def copy_run(straight_run, tmp_path) -> str:
  _, workdir, _ = straight_run
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  return copy


def test_a_run_tells_what_it_does_and_its_log_file_reads_as_lines(straight_run):
  """The banner, the compile time, progress as lines (no carriage returns in a file), and
  config.json beside the checkpoints."""
  ws, workdir, _ = straight_run
  log = fault_check.tail(ws.log_path(os.path.basename(workdir)), 100_000)
  assert '\r' not in log
  lines = log.splitlines()
  banner = [line for line in lines if line.startswith('icl_jax: training ')]
  assert banner == [f'icl_jax: training {workdir} ({LAST} steps)'], log
  for expected in ('  config (changed from the defaults): ', '  model: transformer, ',
                   '  devices: 1 x cpu', '  TensorBoard: tensorboard --logdir '):
    assert any(line.startswith(expected) for line in lines), (expected, log)
  assert re.search(r'^compiled in \d+\.\d s$', log, re.M), log
  assert re.search(rf'^train: {LAST}/{LAST} steps \(100%\), .* ETA 0m00s, loss ', log, re.M)
  with open(os.path.join(workdir, status_lib.CONFIG_FILE)) as f:
    stored = json.load(f)
  assert stored['train']['steps'] == LAST and stored['model']['name'] == 'transformer'


# ---------------------------------------------------------------------------------------
# (a) kill -9 at random moments
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_kills_at_random_moments_lose_nothing(straight_run):
  ws, _, straight_params = straight_run
  workdir = os.path.join(ws.root, 'killed')
  lines = []
  kills = fault_check.kill_and_restart(ws, workdir, kills=3, seed=0, report=lines.append)
  report = '\n'.join(lines)
  assert len(kills) == 3, report
  assert kills[0].saving is not None, report  # The first kill always lands mid-save.
  assert all(k.exact for k in kills), report
  step, params = fault_check.final_params(workdir)
  assert step == LAST
  assert fault_check.params_equal(straight_params, params), report


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_during_compilation_exits_as_preempted_with_a_line(straight_run, signum):
  """A scheduler's signal that comes while the step compiles (minutes on a large model):
  once the compiler returns, the run stops before its first step with the preemption
  status and one line, instead of dying with 143 and no word."""
  ws, _, _ = straight_run
  workdir = os.path.join(ws.root, f'stopped_compiling_{signum.name}')
  log_path = ws.log_path(os.path.basename(workdir))
  # A model of its own, and no compilation cache: a compilation that takes seconds.
  command = fault_check.train_command(ws, workdir) + [
      '--config.model.width=96', '--config.model.depth=3', '--compilation_cache=']
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(command, cwd=fault_check.REPO, env=fault_check.subprocess_env(ws),
                            stdout=log, stderr=subprocess.STDOUT)
  deadline = time.monotonic() + 300
  while 'compiling the train step' not in fault_check.tail(log_path, 100_000):
    assert proc.poll() is None and time.monotonic() < deadline, fault_check.tail(log_path)
    time.sleep(0.01)
  proc.send_signal(signum)
  assert proc.wait(timeout=300) == status_lib.EXIT_PREEMPTED, fault_check.tail(log_path)
  log = fault_check.tail(log_path, 100_000)
  assert 'Traceback' not in log
  status = status_lib.read(workdir)
  assert status['status'] == 'preempted' and status['signal'] == signum.name
  if status['step'] == 0:  # The usual case: the signal came before the first step.
    assert (f'preempted: stopped by {signum.name} before training began (during set-up or '
            f'compilation); {workdir} is as it was, at step 0') in log
    assert not fault_check.complete_steps(workdir)
  assert not os.path.exists(os.path.join(workdir, 'lease.json'))


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGUSR1])
def test_stop_signal_saves_the_step_reached_and_the_resume_is_exact(straight_run, signum):
  """SIGTERM (SLURM, TPU maintenance, ssh hang-up) or SLURM's pre-timeout SIGUSR1: the run
  saves the step it reached, says so in one line, exits 75 and resumes bit for bit."""
  ws, _, straight_params = straight_run
  workdir = os.path.join(ws.root, f'stopped_{signum.name}')
  log_path = ws.log_path(os.path.basename(workdir))
  proc, _, _ = fault_check.start(ws, workdir, log_path)
  deadline = time.monotonic() + 300
  while not fault_check.complete_steps(workdir):  # Training is under way.
    assert proc.poll() is None, fault_check.tail(log_path)
    assert time.monotonic() < deadline
    time.sleep(0.01)
  proc.send_signal(signum)
  assert proc.wait(timeout=120) == status_lib.EXIT_PREEMPTED, fault_check.tail(log_path)
  log = fault_check.tail(log_path, 100_000)
  assert 'Traceback' not in log
  status = status_lib.read(workdir)
  assert status['status'] == 'preempted' and status['step'] < LAST
  assert status['signal'] == signum.name
  # Saved at the step reached, not only at the last periodic checkpoint.
  assert max(fault_check.complete_steps(workdir)) == status['step']
  assert (f'preempted: stopped by {signum.name} after saving step {status["step"]} in '
          f'{workdir}; rerun the same command to resume.') in log
  assert status_lib.run_state(workdir, LAST) == status_lib.RUNNING
  assert not os.path.exists(os.path.join(workdir, 'lease.json'))  # Released.

  proc, _, _ = fault_check.start(ws, workdir, log_path)
  assert proc.wait(timeout=300) == 0, fault_check.tail(log_path)
  assert fault_check.resumed_step(log_path) == status['step']
  step, params = fault_check.final_params(workdir)
  assert step == LAST and fault_check.params_equal(straight_params, params)
  assert status_lib.read(workdir)['status'] == 'done'


# ---------------------------------------------------------------------------------------
# (b) a damaged latest checkpoint
# ---------------------------------------------------------------------------------------
def truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


CORRUPTIONS = {
    'state_file_truncated': lambda d: truncate(os.path.join(d, 'state', 'manifest.ocdbt')),
    'state_file_removed': lambda d: os.remove(os.path.join(d, 'state', '_METADATA')),
    'config_item_missing': lambda d: shutil.rmtree(os.path.join(d, 'config')),
}


@pytest.fixture(scope='module')
def abstract_state(straight_run):
  """The restore target of a fault_check run, on one device."""
  _, workdir, _ = straight_run
  config = recovery.Recovery(store_lib.Store(workdir, read_only=True)).read_config(LAST)
  config.mesh.data = 1
  return workload.build(config).abstract_on(sharding.make_mesh(config.mesh))


@pytest.mark.parametrize('corruption', CORRUPTIONS)
def test_damaged_latest_checkpoint_falls_back_and_is_kept(straight_run, abstract_state,
                                                          tmp_path, caplog, corruption):
  workdir = copy_run(straight_run, tmp_path)
  bad_dir = os.path.join(store_lib.directory(workdir), str(LAST))
  CORRUPTIONS[corruption](bad_dir)
  ckpt = recovery.Recovery(store_lib.Store(workdir, keep=3))
  with caplog.at_level(logging.WARNING):
    # What train_and_evaluate does: the config check, then the state.
    latest, _ = ckpt.latest_config()
    step, state, _ = ckpt.restore_latest(abstract_state)
  ckpt.store.close()
  assert latest == (PREVIOUS if corruption == 'config_item_missing' else LAST)
  assert step == int(state['step']) == PREVIOUS
  assert f'Checkpoint step {LAST} at {bad_dir} is corrupt' in caplog.text
  # Kept on disk, out of orbax's sight, so that step LAST can be saved again.
  kept = os.path.join(store_lib.corrupt_directory(workdir), str(LAST))
  assert os.path.isdir(kept) and not os.path.exists(bad_dir)
  assert f'Moved corrupt checkpoint step {LAST} from {bad_dir} to {kept}' in caplog.text
  assert store_lib.Store(workdir, read_only=True).latest_step() == PREVIOUS


@pytest.mark.slow
def test_resume_from_damaged_checkpoint_reaches_the_same_params(straight_run, tmp_path):
  ws, _, straight_params = straight_run
  workdir = copy_run(straight_run, tmp_path)
  bad_dir = os.path.join(store_lib.directory(workdir), str(LAST))
  CORRUPTIONS['state_file_truncated'](bad_dir)
  log_path = ws.log_path('resume_damaged')
  proc, _, _ = fault_check.start(ws, workdir, log_path)
  assert proc.wait(timeout=300) == 0, fault_check.tail(log_path)
  with open(log_path) as f:
    log = f.read()
  assert f'Checkpoint step {LAST} at {bad_dir} is corrupt' in log, log[-3000:]
  assert 'Traceback' not in log, log[-3000:]  # Orbax's abandoned reads stay quiet.
  assert fault_check.resumed_step(log_path) == PREVIOUS
  assert os.path.isdir(os.path.join(store_lib.corrupt_directory(workdir), str(LAST)))
  step, params = fault_check.final_params(workdir)
  assert step == LAST
  assert fault_check.params_equal(straight_params, params)


def test_no_restorable_checkpoint_is_an_error_and_moves_nothing(straight_run, abstract_state,
                                                                tmp_path):
  workdir = copy_run(straight_run, tmp_path)
  before = sorted(os.listdir(store_lib.directory(workdir)))
  for name in before:
    CORRUPTIONS['config_item_missing'](os.path.join(store_lib.directory(workdir), name))
  ckpt = recovery.Recovery(store_lib.Store(workdir))
  with pytest.raises(UserError, match=r'No checkpoint in .* restores: step 50 .*Nothing was '
                                      r'moved or deleted'):
    ckpt.latest_config()
  with pytest.raises(UserError, match='No checkpoint'):
    ckpt.restore_latest(abstract_state)
  ckpt.store.close()
  assert sorted(os.listdir(store_lib.directory(workdir))) == before
  assert not os.path.exists(store_lib.corrupt_directory(workdir))


@pytest.mark.parametrize('suffix', ['.orbax-checkpoint-tmp', '.orbax-checkpoint-tmp-1700000000'])
def test_unfinished_saves_are_never_listed_or_restored(straight_run, abstract_state, tmp_path,
                                                       suffix):
  workdir = copy_run(straight_run, tmp_path)
  directory = store_lib.directory(workdir)
  # The worst case: an unfinished save that looks complete inside.
  shutil.copytree(os.path.join(directory, str(LAST)),
                  os.path.join(directory, f'{LAST + 5}{suffix}'))
  ckpt = recovery.Recovery(store_lib.Store(workdir))
  assert ckpt.store.steps() == [LAST - 10, PREVIOUS, LAST]
  step, _, _ = ckpt.restore_latest(abstract_state)
  ckpt.store.close()
  assert step == LAST


# ---------------------------------------------------------------------------------------
# (c) an unwritable workdir
# ---------------------------------------------------------------------------------------
def test_unwritable_workdir_fails_before_training(data_dir, tmp_path):
  # A path under a regular file fails with ENOTDIR even for root (tests run as root, who
  # ignores chmod).
  afile = tmp_path / 'afile'
  afile.write_text('not a directory')
  workdir = str(afile / 'workdir')
  with pytest.raises(UserError, match=r"Cannot write to workdir '.*afile/workdir' \(Not a "
                                      r'directory\)\. Pass a --workdir you can write to'):
    train.train_and_evaluate(tiny_config(data_dir), workdir)
  assert afile.read_text() == 'not a directory'


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes to read-only directories')
def test_read_only_workdir_fails_before_training(data_dir, tmp_path):
  workdir = tmp_path / 'ro'
  workdir.mkdir(mode=0o500)
  with pytest.raises(UserError, match='Cannot write to workdir'):
    train.train_and_evaluate(tiny_config(data_dir), str(workdir))


# ---------------------------------------------------------------------------------------
# (d) a metrics log cut mid-line by a kill
# ---------------------------------------------------------------------------------------
def write_cut_log(workdir):
  lines = [json.dumps({'step': s, 'train/loss': 2.0}) + '\n' for s in (5, 10)]
  with open(os.path.join(workdir, metrics_lib.METRICS_FILE), 'w') as f:
    f.writelines(lines + ['{"step": 15, "train/lo'])  # Killed mid-write.


def test_metrics_with_a_cut_last_line_are_read(tmp_path):
  write_cut_log(str(tmp_path))
  assert [r['step'] for r in metrics_lib.read(str(tmp_path))] == [5, 10]


def test_resume_after_a_cut_metrics_line_keeps_every_record(tmp_path):
  write_cut_log(str(tmp_path))
  writer = metrics_lib.MetricWriter(str(tmp_path), resume_step=10)
  for step in (15, 20):
    writer.write(step, {'train/loss': 1.0})
  writer.close()
  assert [r['step'] for r in metrics_lib.read(str(tmp_path))] == [5, 10, 15, 20]


# ---------------------------------------------------------------------------------------
# (e) restore on another device count: 1 -> 8 (8 -> 1 is in test_evaluate.py)
# ---------------------------------------------------------------------------------------
def test_run_trained_on_1_device_restores_on_8_with_same_predictions(straight_run):
  import numpy as np  # pylint: disable=g-import-not-at-top
  _, workdir, _ = straight_run  # fault_check trains on one CPU device.
  np.testing.assert_allclose(restored_logits(workdir, 8), restored_logits(workdir, 1),
                             rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Reading a workdir while its trainer rotates checkpoints
# ---------------------------------------------------------------------------------------
def test_a_checkpoint_rotated_away_mid_read_is_not_damage(straight_run, tmp_path, caplog):
  workdir = copy_run(straight_run, tmp_path)
  ckpt = recovery.Recovery(store_lib.Store(workdir, read_only=True))
  newest = max(ckpt.store.steps())
  calls = []

  def read(step):  # A trainer deletes the newest step while it is read.
    calls.append(step)
    if len(calls) == 1:
      shutil.rmtree(ckpt.store.step_path(step))
      raise FileNotFoundError(f'{ckpt.store.step_path(step)}/state: gone')
    return f'read {step}'

  with caplog.at_level(logging.WARNING):
    assert ckpt.newest(read) == (PREVIOUS, f'read {PREVIOUS}')
  ckpt.store.close()
  assert calls == [newest, PREVIOUS]
  assert 'corrupt' not in caplog.text  # Not reported as damage, nothing moved.
  assert not os.path.exists(store_lib.corrupt_directory(workdir))


@pytest.mark.parametrize('error', [FileNotFoundError, NotADirectoryError])
def test_a_step_gone_while_orbax_lists_the_steps_is_listed_again(error):
  """NotADirectoryError: orbax checks that a step exists, then that it is a directory; a
  rotation between the two reads as "not a directory" (seen under two test workers)."""
  attempts = []

  def list_steps():
    attempts.append(1)
    if len(attempts) < 3:
      raise error('checkpoints/4')
    return [5]

  assert store_lib.listing_retried(list_steps) == [5]
  assert len(attempts) == 3


def test_a_step_that_is_a_file_still_fails_after_the_retries():
  def list_steps():
    raise NotADirectoryError('checkpoints/4')

  with pytest.raises(NotADirectoryError):
    store_lib.listing_retried(list_steps)


@pytest.mark.slow
def test_load_and_evaluate_while_a_trainer_rotates_every_step(straight_run, tmp_path):
  """A trainer that saves every other step and keeps two: every read finds a complete one.
  (Saving every step and keeping one, a read slower than a step can lose every race: that
  ends in the one-line error of recovery.Recovery.newest.)"""
  from icl_jax import evaluate  # pylint: disable=g-import-not-at-top
  ws, _, _ = straight_run
  workdir = str(tmp_path / 'rotating')
  command = fault_check.train_command(ws, workdir) + [
      '--config.train.steps=100000', '--config.train.checkpoint_every_steps=2',
      '--config.train.keep_checkpoints=2']
  log_path = str(tmp_path / 'train.log')
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(command, cwd=fault_check.REPO, env=fault_check.subprocess_env(ws),
                            stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.monotonic() + 300
    while not fault_check.complete_steps(workdir):
      assert proc.poll() is None, fault_check.tail(log_path)
      assert time.monotonic() < deadline
      time.sleep(0.05)
    for _ in range(30):  # Orbax lists the steps, then stats each: a rotation in between.
      store_lib.Store(workdir, read_only=True).close()
    steps = [icl_jax.load(workdir).step for _ in range(3)]
    assert steps == sorted(steps) and steps[0] >= 1
    out = str(tmp_path / 'eval')
    results = evaluate.evaluate_workdir(workdir, num_episodes=16, out=out, baseline_names=[])
    assert results['step'] >= steps[-1]
    assert proc.poll() is None  # Still training: the reads raced a live trainer.
  finally:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
  assert not os.path.exists(store_lib.corrupt_directory(workdir))
