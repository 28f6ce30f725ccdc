"""Bad input at the output and resume boundaries: directories holding someone else's files,
and advice that must be advice the program then accepts."""

import os

import pytest

from icl_jax import config as config_lib
from icl_jax import evaluate
from icl_jax import train
from icl_jax.errors import UserError
from helpers import snapshot
from helpers import tiny_config

def test_evaluate_never_replaces_a_file_it_did_not_write(trained_run, tmp_path):
  workdir, _, _ = trained_run
  out = tmp_path / 'mine'
  out.mkdir()
  (out / 'results.csv').write_text('my own table\n')
  before = snapshot(str(out))
  with pytest.raises(UserError, match=r"--out .*mine holds files icl_jax did not write there "
                                      r"\('results.csv'\).*Choose another directory"):
    evaluate.evaluate_workdir(workdir, num_episodes=8, out=str(out), baseline_names=[])
  assert snapshot(str(out)) == before


def test_evaluate_writes_again_where_it_wrote_before(trained_run, tmp_path):
  workdir, _, _ = trained_run
  out = str(tmp_path / 'eval')
  for _ in range(2):
    evaluate.evaluate_workdir(workdir, num_episodes=8, out=out, baseline_names=[])
  assert os.path.exists(os.path.join(out, '.icl_jax-outputs.json'))
  # An output directory of a version from before the marker: its results.json says so.
  os.remove(os.path.join(out, '.icl_jax-outputs.json'))
  evaluate.evaluate_workdir(workdir, num_episodes=8, out=out, baseline_names=[])


def test_the_mesh_advice_for_a_batch_the_devices_do_not_divide_is_accepted():
  c = config_lib.base_config()
  c.train.batch_size = 12
  with pytest.raises(UserError, match=r'batch_size=12 is not divisible by the 8 devices of the '
                                      r'data axis: split it over 6 of them with '
                                      r'--config.mesh.data=6') as e:
    config_lib.validate(c, num_devices=8)
  assert '--config.mesh.data=6' in str(e.value)
  c.mesh.data = 6  # The advice; a resumed run may change the mesh.
  config_lib.validate(c, num_devices=8)


def test_a_run_whose_dataset_changed_is_told_so_and_its_checkpoints_are_kept(data_dir,
                                                                             tmp_path):
  """The model now has other shapes (another number of classes): the checkpoints are whole,
  so the message says what changed and never calls them corrupt or says to move them."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  arrays = {f'{k}_{split}': v for split in ('train', 'test') for k, v in zip(
      'xy', (np.random.default_rng(0).integers(0, 255, (80, 8, 8), np.uint8),
             np.arange(80, dtype=np.int64) % 4))}
  path = tmp_path / 'data.npz'
  np.savez(path, **arrays)
  workdir = str(tmp_path / 'run')
  config = tiny_config(data_dir, data__dataset=f'npz:{path}', train__steps=4)
  train.train_and_evaluate(config, workdir)
  arrays['y_train'] = np.arange(80, dtype=np.int64) % 5  # One class more: another head.
  arrays['y_test'] = arrays['y_train']
  np.savez(path, **arrays)
  before = snapshot(workdir)
  with pytest.raises(UserError) as e:
    train.train_and_evaluate(tiny_config(data_dir, data__dataset=f'npz:{path}',
                                         train__steps=8), workdir)
  message = str(e.value)
  assert 'hold a model of other shapes than this config builds now' in message, message
  assert 'dataset (the number of classes or features)' in message
  assert 'corrupt' not in message and 'move them away' not in message
  after = snapshot(workdir)
  assert {k: v for k, v in after.items() if k.startswith('checkpoints')} == {
      k: v for k, v in before.items() if k.startswith('checkpoints')}
  assert not os.path.exists(os.path.join(workdir, 'corrupt_checkpoints'))
  with pytest.raises(UserError, match='hold a model of other shapes'):
    evaluate.evaluate_workdir(workdir, num_episodes=8, baseline_names=[],
                              out=str(tmp_path / 'eval'))
