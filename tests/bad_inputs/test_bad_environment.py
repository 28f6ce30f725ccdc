"""Bad input from the environment and from experiment files: each is one `error:` line that
names the cause (and, for an experiment file, its line), exit code 2, nothing written."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name -> (experiment file's text, command: 'train' or 'sweep', the one line expected).
EXPERIMENTS = {
    'raises_at_import': ('x = 1\nraise ValueError("no such option")\n', 'train',
                         r'error: Experiment file {path} failed at {path}:2: ValueError: no '
                         r'such option. Fix it there.'),
    'exits_at_import': ('import sys\nsys.exit(0)\n', 'train',
                        r'error: Experiment file {path} exited \(code 0\) while it was loaded. '
                        r'An experiment file only defines get_config\(arg\)'),
    'get_config_raises': ('def get_config(arg=None):\n  return {}["width"]\n', 'train',
                          r"error: Experiment file {path} failed at {path}:2: KeyError: "
                          r"'width'. Fix it there."),
    'sweep_raises': ('from icl_jax import config\n'
                     'def get_config(arg=None):\n  return config.base_config()\n'
                     'def sweep(add, arg=None):\n  add(seed=1)\n  raise KeyError("oops")\n',
                     'sweep', r"error: Experiment file {path} failed in its sweep\(\) at "
                              r"{path}:6: KeyError: 'oops'. Fix it there."),
    'sweep_exits': ('import sys\nfrom icl_jax import config\n'
                    'def get_config(arg=None):\n  return config.base_config()\n'
                    'def sweep(add, arg=None):\n  sys.exit(3)\n',
                    'sweep', r'error: Experiment file {path} exited \(code 3\) in its sweep\(\)'),
}


def _run(command, path, tmp_path, env=None):
  args = ([sys.executable, '-m', 'icl_jax.main', '--config', str(path), '--workdir',
           str(tmp_path / 'w')] if command == 'train' else
          [sys.executable, '-m', 'launch.sweep', '--config', str(path), '--root',
           str(tmp_path / 'r'), '--dry_run'])
  return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, **(env or {})))


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_an_experiment_file_that_fails_is_named_with_its_line(tmp_path, name):
  import re  # pylint: disable=g-import-not-at-top
  text, command, expected = EXPERIMENTS[name]
  path = tmp_path / f'{name}.py'
  path.write_text(text)
  out = _run(command, path, tmp_path)
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
  assert re.fullmatch(expected.format(path=re.escape(str(path))) + '.*', lines[0]), lines[0]
  assert not os.path.exists(tmp_path / 'w') and not os.path.exists(tmp_path / 'r')


def test_jax_platforms_naming_an_absent_platform_is_one_line(data_dir, tmp_path):
  out = _run('train', os.path.join(REPO, 'experiments', 'gpicl_digits.py:smoke'), tmp_path,
             env={'JAX_PLATFORMS': 'cuda', 'TFDS_DATA_DIR': data_dir})
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
  assert lines[0].startswith("error: JAX cannot start the platform that JAX_PLATFORMS='cuda' "
                             "names"), lines[0]
  assert 'Unset JAX_PLATFORMS' in lines[0]


def test_a_config_that_cannot_fit_is_refused_before_compiling(data_dir, tmp_path):
  out = _run('train', os.path.join(REPO, 'experiments', 'gpicl_digits.py:smoke'), tmp_path,
             env={'TFDS_DATA_DIR': data_dir})
  assert out.returncode == 0, out.stderr[-2000:]  # The smoke run fits.
  out = subprocess.run(
      [sys.executable, '-m', 'icl_jax.main', '--config', 'experiments/gpicl_digits.py:smoke',
       '--workdir', str(tmp_path / 'huge'), '--config.train.batch_size=16384',
       '--config.task.seq_len=300', '--config.model.width=1024', '--config.model.depth=8'],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TFDS_DATA_DIR=data_dir))
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2, out.stderr[-2000:]
  assert lines[-1].startswith('error: One run of this config needs about '), lines[-1]
  assert 'more than the' in lines[-1] and 'usable there' in lines[-1]
  assert 'compiling' not in out.stderr
  assert not os.path.exists(tmp_path / 'huge' / 'checkpoints')
