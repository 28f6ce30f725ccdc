"""The package as `pip install` (not editable) makes it, used from another directory: one
top-level package, the experiments found by name, the launcher's script shipped, the
console scripts, and --help that exits 0 listing the flags."""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ('icl-train', 'icl-eval', 'icl-sweep', 'icl-report')


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  """(site dir, env, a working directory outside the checkout) of a wheel built from the
  checkout's files (a copy: building must not write into the checkout)."""
  base = tmp_path_factory.mktemp('installed')
  files = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
  source = base / 'source'
  for name in files:
    if os.path.isfile(os.path.join(REPO, name)) and not name.startswith('.venv'):
      os.makedirs(source / os.path.dirname(name), exist_ok=True)
      shutil.copy2(os.path.join(REPO, name), source / name)
  site = base / 'site'
  # Offline: the build tools come from the test environment (pyproject's test extra).
  out = subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps',
                        '--no-build-isolation', '--target', str(site), str(source)],
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  elsewhere = base / 'elsewhere'
  elsewhere.mkdir()
  env = dict(os.environ, PYTHONPATH=str(site),
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  return site, env, elsewhere


def run(installed, *command, timeout=300):
  site, env, elsewhere = installed
  return subprocess.run([str(site / 'bin' / command[0]), *command[1:]], cwd=elsewhere, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_one_top_level_package_with_experiments_and_launcher(installed):
  site, env, elsewhere = installed
  assert sorted(p for p in os.listdir(site) if not p.endswith('.dist-info')) == ['bin', 'icl_jax']
  assert sorted(os.listdir(site / 'bin')) == sorted(SCRIPTS)
  assert (site / 'icl_jax' / 'launch' / 'tpu_vm.sh').is_file()
  assert (site / 'icl_jax' / 'experiments' / 'gpicl_digits.py').is_file()
  where = subprocess.run([sys.executable, '-c', 'import icl_jax; print(icl_jax.__file__)'],
                         cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
  assert where.stdout.strip() == str(site / 'icl_jax' / '__init__.py')  # Not the checkout.


@pytest.mark.parametrize('script,flags', [
    ('icl-train', ['--config', '--workdir', '--compilation_cache']),
    ('icl-eval', ['--workdir', '--step', '--datasets', '--baselines', '--data_dir', '--out']),
    ('icl-sweep', ['--config', '--root', '--backend', '--dry_run', '--slurm_nodes',
                   '--slurm_extra', '--tpu', '--parallel']),
    ('icl-report', ['--root', '--out']),
])
def test_help_exits_0_and_lists_every_flag(installed, script, flags):
  out = run(installed, script, '--help')
  assert out.returncode == 0, out.stderr[-2000:]
  for flag in flags:
    assert (f'  {flag}:' in out.stdout or f'  --[no]{flag[2:]}:' in out.stdout), (flag, out.stdout)
  assert 'tfds_debug_list_dir' not in out.stdout  # Others' flags: --helpfull only.


@pytest.mark.slow
def test_train_and_evaluate_a_shipped_experiment_by_name(installed, data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  out = run(installed, 'icl-train', '--config', 'gpicl_digits:smoke', '--workdir', workdir,
            '--config.train.steps=2', f'--config.data.data_dir={data_dir}',
            '--config.eval.num_episodes=8')
  assert out.returncode == 0, out.stderr[-3000:]
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '2'))
  out = run(installed, 'icl-eval', f'--workdir={workdir}', '--num_tasks_eval=8',
            '--baselines=none')
  assert out.returncode == 0, out.stderr[-3000:]
  assert os.path.isfile(os.path.join(workdir, 'eval', '2', 'results.json'))
  # What it does, then progress over its columns, as lines (stderr is not a terminal here).
  assert f'evaluating {workdir} at step 2: 8 episodes per column' in out.stderr
  assert 'evaluate: 0/3 columns (0%), starting' in out.stderr, out.stderr[-2000:]
  assert 'evaluate: 3/3 columns (100%)' in out.stderr and '\r' not in out.stderr
  out = run(installed, 'icl-sweep', '--config=phase_transition_digits:smoke',
            f'--root={tmp_path / "sweep"}', '--dry_run')
  assert out.returncode == 0 and 'group 0' in out.stdout, out.stderr[-3000:]
  out = run(installed, 'icl-eval')
  assert out.returncode == 2 and out.stderr.startswith('error: flag --workdir'), out.stderr
  out = run(installed, 'icl-train', '--config', 'gpicl_digits:smoke')  # No --workdir.
  assert out.returncode == 2 and out.stderr.startswith('error: flag --workdir'), out.stderr
