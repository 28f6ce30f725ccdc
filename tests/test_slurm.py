"""The SLURM backend (launch/slurm.py): the process layout jax.distributed detects, the sbatch
script submitit submits, bad --slurm_* flags, and a preempted array task that saves,
requeues and resumes (through submitit's local executor, which requeues like SLURM)."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

from jax._src import clusters
import pytest

from icl_jax import lease as lease_lib
from icl_jax import metrics as metrics_lib
from icl_jax import status as status_lib
from icl_jax import plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'scripts'))
import fault_check  # pylint: disable=g-import-not-at-top,wrong-import-position

EXPERIMENT = os.path.join(REPO, 'tests', 'experiments', 'tiny_sweep.py')
NODES, GPUS = 2, 8


def launch(root, data_dir, *args, arg='widths=8'):
  return [sys.executable, '-m', 'launch.sweep', f'--config={EXPERIMENT}:{arg}', f'--root={root}',
          f'--config.data.data_dir={data_dir}', '--backend=slurm', *args]


def env():
  return dict(os.environ, XLA_FLAGS=fault_check.one_device_xla_flags())


@pytest.mark.parametrize('rank', range(NODES * GPUS))
def test_each_process_of_a_two_node_task_gets_its_own_gpu(monkeypatch, rank):
  """What srun sets for task `rank` of `--nodes=2 --ntasks-per-node=8 --gpus-per-node=8`
  (the script of the test below), read by jax.distributed's own SLURM detection."""
  for name in list(os.environ):
    if name.startswith(('SLURM_', 'OMPI_', 'JAX_', 'TPU_', 'CLOUD_TPU', 'MEGASCALE')):
      monkeypatch.delenv(name)
  monkeypatch.setenv('SLURM_JOB_ID', '4242')
  monkeypatch.setenv('SLURM_STEP_NODELIST', 'gpu[017-018]')
  monkeypatch.setenv('SLURM_NTASKS', str(NODES * GPUS))
  monkeypatch.setenv('SLURM_PROCID', str(rank))
  monkeypatch.setenv('SLURM_LOCALID', str(rank % GPUS))
  address, count, process_id, local_devices = (
      clusters.ClusterEnv.auto_detect_unset_distributed_params(None, None, None, None, None, None))
  assert address.split(':')[0] == 'gpu017'  # Every process meets on the first node.
  assert (count, process_id, local_devices) == (NODES * GPUS, rank, [rank % GPUS])


def test_dry_run_prints_the_exact_sbatch_script_and_writes_nothing(data_dir, tmp_path):
  root = str(tmp_path / 'r')
  out = subprocess.run(
      launch(root, data_dir, '--dry_run', f'--slurm_nodes={NODES}',
             f'--slurm_gpus_per_node={GPUS}', '--slurm_cpus_per_task=12', '--slurm_mem_gb=64',
             '--slurm_partition=gpu', '--slurm_account=acct', '--slurm_qos=high',
             '--slurm_constraint=h100', '--slurm_extra=mail-type=END', '--slurm_extra=exclusive',
             '--slurm_setup=module load cuda/12.4', '--slurm_timeout_min=720'),
      cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  script = out.stdout[out.stdout.index('#!/bin/bash'):]
  for line in ['#SBATCH --nodes=2', '#SBATCH --ntasks-per-node=8', '#SBATCH --gpus-per-node=8',
               '#SBATCH --cpus-per-task=12', '#SBATCH --mem=64GB', '#SBATCH --partition=gpu',
               '#SBATCH --account=acct', '#SBATCH --qos=high', '#SBATCH --constraint=h100',
               '#SBATCH --mail-type=END', '#SBATCH --exclusive', '#SBATCH --time=720',
               '#SBATCH --signal=USR2@120', '#SBATCH --array=0-0%1', '#SBATCH --job-name=icl_jax',
               'module load cuda/12.4']:
    assert line in script.splitlines(), (line, script)
  assert 'srun --unbuffered' in script and '-m submitit.core._submit' in script
  assert not os.path.exists(root)  # A dry run writes nothing.


@pytest.mark.parametrize('flag,message', [
    ('--slurm_extra=mail-type=', "--slurm_extra='mail-type=' is not an sbatch option"),
    ('--slurm_nodes=0', '--slurm_nodes=0'),
    ('--slurm_signal_delay_s=600', 'is not shorter than --slurm_timeout_min=10'),
])
def test_a_bad_slurm_flag_is_one_line(data_dir, tmp_path, flag, message):
  root = str(tmp_path / 'r')
  out = subprocess.run(launch(root, data_dir, '--slurm_timeout_min=10', flag), cwd=REPO,
                       env=env(), capture_output=True, text=True, timeout=120)
  assert out.returncode == 2 and 'Traceback' not in out.stderr, out.stderr[-3000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and message in errors[0], out.stderr
  assert not os.path.exists(os.path.join(root, status_lib.SWEEP_FILE))


@pytest.mark.slow
def test_a_preempted_array_task_saves_requeues_and_resumes(data_dir, tmp_path):
  """submitit's signal (SIGUSR2, a preemption or the time limit coming) mid-training: the
  task saves the step it reached, submitit requeues it, and the requeued task resumes
  from that step and finishes, training each step once."""
  root = str(tmp_path / 'r')
  steps, log_every = 3000, 100
  command = launch(root, data_dir, '--slurm_local', arg=f'widths=8,steps={steps}') + [
      f'--config.train.log_every_steps={log_every}',
      '--config.train.checkpoint_every_steps=1000', f'--config.train.eval_every_steps={steps}']
  launcher = subprocess.Popen(command, cwd=REPO, env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
  points = plan.expand(f'{EXPERIMENT}:widths=8,steps={steps}', root)
  workdir = points[0].workdir
  try:
    deadline = time.monotonic() + 240
    while not metrics_lib.read(workdir):  # The task is training.
      assert launcher.poll() is None, launcher.stdout.read()[-3000:]
      assert time.monotonic() < deadline
      time.sleep(0.05)
    task = lease_lib.read(workdir)['pid']
    os.kill(task, signal.SIGUSR2)
    output, _ = launcher.communicate(timeout=300)
  finally:
    if launcher.poll() is None:
      launcher.kill()
  logs = ''.join(open(f, errors='replace').read()
                 for f in sorted(glob.glob(os.path.join(root, 'slurm', '**', '*.err'),
                                           recursive=True)))
  assert launcher.returncode == 0, output[-3000:] + logs[-3000:]
  assert 'requeueing group 0: it resumes from the step it saved.' in logs, logs[-3000:]
  saved = int(logs.split('preempted: group 0 saved step ')[1].split()[0])
  assert 0 < saved < steps
  # The requeued task's progress starts at the saved step.
  first_tick = re.search(rf': (\d+)/{steps} steps \(\d+%\), starting',
                         logs.split('Requeued job')[1])
  assert int(first_tick.group(1)) == saved, logs[-3000:]
  for p in points:
    assert plan.point_status(p) == 'done'
    logged = [r['step'] for r in metrics_lib.read(p.workdir) if 'train/loss' in r]
    assert logged == list(range(log_every, steps + 1, log_every))  # Each step trained once.

