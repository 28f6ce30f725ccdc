"""The public API: `icl_jax.load` on a run, on a sweep point, on a pre-refactor checkpoint."""

import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import icl_jax
from icl_jax import store as store_lib
from icl_jax import sharding
from icl_jax import workload
from icl_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEGACY = os.path.join(REPO, 'tests', 'fixtures', 'legacy_run')


def test_a_checkpoint_written_before_the_refactor_loads_to_the_same_logits(data_dir, tmp_path):
  workdir = str(tmp_path / 'legacy')
  shutil.copytree(LEGACY, workdir)
  expected = np.load(os.path.join(workdir, 'expected.npz'))
  # Its stored data_dir was the generating machine's: the dataset is found here instead.
  trained = icl_jax.load(workdir, data_dir=data_dir)
  assert (trained.step, trained.num_features, trained.num_classes, trained.seq_len) == (
      4, 64, 10, 10)
  logits_BxTxC = trained.logits(expected['x_BxTxD'], expected['y_BxT'])
  np.testing.assert_allclose(logits_BxTxC, expected['logits_BxTxC'], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(trained.predict(expected['x_BxTxD'], expected['y_BxT']),
                                expected['logits_BxTxC'].argmax(-1))


def test_load_restores_the_parameters_of_a_run(trained_run):
  workdir, config, _ = trained_run
  trained = icl_jax.load(workdir)
  assert trained.step == config.train.steps and not trained.regression
  # The same parameters as the full restore that training resumes from.
  ckpt = store_lib.Store(workdir, read_only=True)
  mesh = sharding.make_mesh(trained.config.mesh)
  state = ckpt.restore_state(trained.step, workload.build(trained.config).abstract_on(mesh))
  ckpt.close()
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(trained.params),
               jax.device_get(state['params']))
  assert len(jax.tree.leaves(trained.params)[0].sharding.device_set) == jax.device_count()

  episode = trained.sample_episodes(jax.random.key(3), 4)
  assert episode.x_BxTxD.shape == (4, config.task.seq_len, trained.num_features)
  again = trained.sample_episodes(jax.random.key(3), 4)
  np.testing.assert_array_equal(episode.x_BxTxD, again.x_BxTxD)
  seen = trained.sample_episodes(jax.random.key(3), 4, unseen=False)
  assert not np.array_equal(seen.x_BxTxD, episode.x_BxTxD)
  logits_BxTxC = trained.logits(episode.x_BxTxD, episode.y_BxT)
  assert logits_BxTxC.shape == (4, config.task.seq_len, trained.num_classes)
  # A prediction at t never reads y_t: changing the last label changes no output.
  y_changed = np.asarray(episode.y_BxT).copy()
  y_changed[:, -1] = (y_changed[:, -1] + 1) % trained.num_classes
  np.testing.assert_allclose(trained.logits(episode.x_BxTxD, y_changed), logits_BxTxC,
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(trained.predict(episode.x_BxTxD, episode.y_BxT),
                                np.asarray(logits_BxTxC).argmax(-1))


def test_load_names_what_is_missing(trained_run, tmp_path):
  workdir, _, _ = trained_run
  with pytest.raises(UserError, match=r'no checkpoint at step 7; available steps: 20, 40'):
    icl_jax.load(workdir, step=7)
  assert icl_jax.load(workdir, step=20).step == 20
  with pytest.raises(UserError, match='No checkpoints in'):
    icl_jax.load(str(tmp_path))


def test_a_damaged_newest_checkpoint_falls_back_and_is_left_alone(trained_run, tmp_path, caplog):
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained_run[0], workdir)
  bad = os.path.join(store_lib.directory(workdir), '40')
  with open(os.path.join(bad, 'state', 'manifest.ocdbt'), 'r+b') as f:
    f.truncate(10)
  before = sorted(os.listdir(store_lib.directory(workdir)))
  with caplog.at_level('WARNING'):
    assert icl_jax.load(workdir).step == 20
  assert 'Checkpoint step 40 at' in caplog.text
  # Read-only: nothing is moved or deleted (training's restore quarantines, loading not).
  assert sorted(os.listdir(store_lib.directory(workdir))) == before
  with pytest.raises(UserError, match='checkpoint step 40 .* do not restore'):
    icl_jax.load(workdir, step=40)


def test_the_documented_example_runs(trained_run):
  """docs/evaluation.md's notebook-sized example, verbatim but for the workdir, in a fresh
  process."""
  workdir, _, _ = trained_run
  with open(os.path.join(REPO, 'docs', 'evaluation.md')) as f:
    readme = f.read()
  block = re.search(r'<!-- api-example -->\s*```python\n(.*?)```', readme, re.S)
  assert block, 'docs/evaluation.md lost its <!-- api-example --> python block'
  code = block.group(1).replace("'workdirs/gpicl_digits'", repr(workdir))
  assert repr(workdir) in code
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1',
             JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'logits (8, 10, 10)' in out.stdout, out.stdout
