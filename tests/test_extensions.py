"""Extension points are one file each: a baseline, a dataset source and a launcher backend
written in a temporary directory, outside the package, named in ICL_JAX_PLUGINS, and used
end to end by the commands users run (training on the source, meta-testing with the
baseline, a sweep launched through the backend)."""

import json
import os
import re
import subprocess
import sys

import pytest

from icl_jax import plugins
from icl_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOY_BASELINE = '''
"""Always predicts class 0: a learner in one file."""
import jax.numpy as jnp
from icl_jax.baselines import registry


def predict_first_class(x_BxTxD, y_BxT, num_classes):
  scores_BxTxC = jnp.zeros(y_BxT.shape + (num_classes,), jnp.float32)
  return scores_BxTxC.at[..., 0].set(1.0)


registry.register(registry.Baseline('first_class', 'always class 0',
                                    registry.CLASSIFICATION, predict_first_class))
'''

TOY_SOURCE = '''
"""toy:NAME, two classes of 8x8 images (bright left half, bright right half): a dataset
source in one file. The split sizes come from NAME's length, so the data is reproducible."""
import numpy as np
from icl_jax.data import sources


def read(path, split, image_shape):
  n = 120 if split == 'train' else 60
  rng = np.random.default_rng(len(path) + (split == 'test'))
  y_N = rng.integers(0, 2, n).astype(np.int32)
  images_NxHxWx1 = rng.uniform(0, 64, (n, 8, 8, 1)).astype(np.uint8)
  images_NxHxWx1[y_N == 0, :, :4] += 128
  images_NxHxWx1[y_N == 1, :, 4:] += 128
  return images_NxHxWx1, y_N, 2


sources.register(sources.Kind(
    prefix='toy', doc='two classes of synthetic 8x8 images', splits=lambda path: ['test', 'train'],
    read=read, fingerprint=lambda path: 'v1', layout='It has train and test.'))
'''

TOY_BACKEND = '''
"""toy: each group's worker in a subprocess here, one at a time, its progress printed from
the files the trainers write (leases while they run, status.json once they end): a launcher
backend in one file, with a flag of its own."""
import subprocess
import sys
import time

from absl import flags

from icl_jax import status as status_lib
from launch.backends import base, registry

_POLL = flags.DEFINE_float('toy_poll_s', 1.0, 'toy: how often to look at the progress.')


class Toy(base.Backend):
  name = 'toy'
  help = 'each group in a subprocess here, one at a time'

  def plan(self, launch):
    return f'toy: {len(launch.groups)} group(s) would run here, one at a time'

  def submit(self, launch):
    launch.begin()  # Nothing can refuse this launch now.
    failed = 0
    for i, group in enumerate(launch.groups):
      worker = subprocess.Popen(launch.worker_command(i), cwd=base.IMPORT_ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
      shown = None
      while worker.poll() is None:
        now = launch.progress(i)
        if now and now != shown:
          print(f'toy: group {i} at {now}', file=sys.stderr)
          shown = now
        time.sleep(_POLL.value)
      failed += base.report_group(group, worker.returncode, 'the toy backend')
      ended = [status_lib.read(p.workdir) or {} for p in group]
      print(f'toy: group {i} ended: ' + ', '.join(f"{s.get('status')} at step {s.get('step')}"
                                                  for s in ended), file=sys.stderr)
    return launch.summary(failed)


registry.register(Toy())
'''


def _env(tmp_path, data_dir):
  baseline, source = tmp_path / 'toy_baseline.py', tmp_path / 'toy_source.py'
  baseline.write_text(TOY_BASELINE)
  source.write_text(TOY_SOURCE)
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1',
             TFDS_DATA_DIR=data_dir)
  env[plugins.ENV] = f'{baseline},{source}'
  return env


def _run(module, args, env):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_baseline_and_a_dataset_source_from_plugin_files(data_dir, tmp_path):
  env = _env(tmp_path, data_dir)
  workdir = str(tmp_path / 'run')
  out = _run('icl_jax.main', ['--config', 'experiments/gpicl_digits.py:smoke', '--workdir',
                              workdir, '--config.data.dataset=toy:blobs',
                              '--config.train.steps=20'], env)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(workdir, 'status.json')) as f:
    assert json.load(f)['status'] == 'done'
  out = _run('icl_jax.evaluate', ['--workdir', workdir, '--num_tasks_eval', '32',
                                  '--baselines', 'first_class,knn'], env)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'first_class' in out.stdout  # A row of the table.
  with open(os.path.join(workdir, 'eval', '20', 'results.json')) as f:
    results = json.load(f)['results']
  first_class = results['unseen']['first_class']['mean']
  assert abs(sum(first_class) / len(first_class) - 0.5) < 0.2  # 2 classes, permuted labels.
  assert set(results['unseen']) == {'transformer', 'first_class', 'knn'}


@pytest.mark.slow
def test_a_launcher_backend_from_a_plugin_file_runs_a_sweep(data_dir, tmp_path):
  """`--backend toy`, registered by a plugin file with a flag of its own: the sweep's groups
  run through it and it reads their progress from the trainers' files."""
  backend = tmp_path / 'toy_backend.py'
  backend.write_text(TOY_BACKEND)
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1',
             **{plugins.ENV: str(backend)})
  root = str(tmp_path / 'sweep')
  config = os.path.join(REPO, 'tests', 'experiments', 'tiny_sweep.py') + ':widths=8,steps=200'
  args = [f'--config={config}', f'--root={root}', f'--config.data.data_dir={data_dir}',
          '--backend=toy', '--toy_poll_s=0.05']
  out = _run('launch.sweep', args + ['--dry_run'], env)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'toy: 1 group(s) would run here, one at a time' in out.stdout
  out = _run('launch.sweep', args, env)
  assert out.returncode == 0, out.stderr[-3000:]
  assert re.search(r'toy: group 0 at step \d+/200', out.stderr), out.stderr[-3000:]
  assert 'toy: group 0 ended: done at step 200, done at step 200' in out.stderr, out.stderr
  assert '2/2 points done, 0 failed' in out.stderr
  out = _run('launch.sweep', args[:3] + ['--backend=nope'], env)
  assert out.returncode == 2 and 'Traceback' not in out.stderr
  assert '<vmap|local|slurm|tpu_vm|toy>' in out.stderr.strip().splitlines()[-1], out.stderr


def test_a_plugin_that_fails_is_one_line_naming_its_file_and_line(tmp_path, monkeypatch):
  bad = tmp_path / 'bad_plugin.py'
  bad.write_text('x = 1\nraise RuntimeError("no GPU here")\n')
  monkeypatch.setenv(plugins.ENV, str(bad))
  with pytest.raises(UserError, match=re.escape(f'{bad}:2: RuntimeError: no GPU here')):
    plugins.load()
  monkeypatch.setenv(plugins.ENV, str(tmp_path / 'missing.py'))
  with pytest.raises(UserError, match='is not a file'):
    plugins.load()


def test_the_cli_names_a_bad_plugin_in_one_line(data_dir, tmp_path):
  env = dict(os.environ, **{plugins.ENV: 'no_such_module_for_icl_jax'})
  out = _run('icl_jax.evaluate', ['--workdir', str(tmp_path)], env)
  assert out.returncode == 2 and 'Traceback' not in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith(
      "error: Plugin 'no_such_module_for_icl_jax' (from $ICL_JAX_PLUGINS) failed to import")


TOY_FAMILY_AND_MODEL = '''
"""A task family and a model in one file each (here, one plugin for both)."""
from icl_jax import models
from icl_jax.tasks import families
from icl_jax.tasks import functions

families.register('toy_linear', families.Family(
    'regression', functions.sample_linear, lambda options: 1,
    lambda options: options.dim + options.noise_std**2, title='toy linear functions'))
models.register('toy_mlp', models.MODELS['mlp'])
'''


def test_a_task_family_and_a_model_from_a_plugin_file_pass_validation(tmp_path, monkeypatch):
  from icl_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from icl_jax import models  # pylint: disable=g-import-not-at-top
  from icl_jax.tasks import families  # pylint: disable=g-import-not-at-top
  plugin = tmp_path / 'toy_family.py'
  plugin.write_text(TOY_FAMILY_AND_MODEL)
  monkeypatch.setenv(plugins.ENV, str(plugin))
  plugins.load()
  try:
    c = config_lib.base_config()
    c.task.family, c.model.name = 'toy_linear', 'toy_mlp'
    config_lib.validate(c)
    c.task.family = 'toy_nonlinear'
    with pytest.raises(UserError, match=r"task.family='toy_nonlinear' is unknown; choose one "
                                        r"of \(.*'toy_linear'\)"):
      config_lib.validate(c)
  finally:  # The registries as the other tests of this process know them.
    families.FAMILIES.pop('toy_linear')
    families.SYNTHETIC_FAMILIES.pop('toy_linear')
    models.MODELS.pop('toy_mlp')


def test_the_sweep_launcher_names_a_bad_plugin_in_one_line(tmp_path):
  """The launcher imports plugins before it reads its flags (a plugin may add a backend)."""
  env = dict(os.environ, **{plugins.ENV: 'no_such_module_for_icl_jax'})
  out = _run('launch.sweep', [f'--root={tmp_path}', '--backend=toy'], env)
  assert out.returncode == 2 and 'Traceback' not in out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      "error: Plugin 'no_such_module_for_icl_jax' (from $ICL_JAX_PLUGINS) failed to import")
