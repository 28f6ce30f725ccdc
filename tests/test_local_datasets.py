"""Datasets on disk without a TFDS builder: `folder:PATH` (ImageFolder layout) and `npz:PATH`.

They go through the same preprocessing and cache as TFDS datasets; these tests compare
them with `from_images` over the same pixels, meta-train and meta-test on them, and damage
them the ways a researcher would.
"""

import os
import time

import numpy as np
from PIL import Image
import pytest

from helpers import tiny_config
from icl_jax import evaluate
from icl_jax import workload as workload_lib
from icl_jax.data import from_images, load, sources
from icl_jax.errors import UserError


def _images(n, size=8, seed=0):
  """Class c is a bright block in its own place, over noise: (images_NxHxW, y_N)."""
  r = np.random.default_rng(seed)
  images = r.integers(0, 60, (n, size, size), np.uint8)
  y = np.arange(n) % 4
  for i, c in enumerate(y):
    images[i, 2 * c:2 * c + 3, 2 * c:2 * c + 3] = 250
  return images, y


def _write_folder(root, splits=(('train', 48), ('test', 24)), size=8):
  for seed, (split, n) in enumerate(splits):
    images, y = _images(n, size, seed)
    for i, (image, label) in enumerate(zip(images, y)):
      label_dir = os.path.join(root, split, f'label_{"abcd"[label]}')
      os.makedirs(label_dir, exist_ok=True)
      Image.fromarray(image).save(os.path.join(label_dir, f'{i:03d}.png'))
  return root


def _write_npz(path, splits=(('train', 48), ('test', 24)), size=8):
  arrays = {}
  for seed, (split, n) in enumerate(splits):
    arrays[f'x_{split}'], arrays[f'y_{split}'] = _images(n, size, seed)
  np.savez(path, **arrays)
  return path


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return _write_folder(str(tmp_path_factory.mktemp('images') / 'blocks'))


def test_folder_reads_as_from_images_of_the_same_pixels(folder, tmp_path):
  ds = load(f'folder:{folder}', 'train', (8, 8), data_dir=str(tmp_path))
  # Files are read label by label, then by name: reorder the originals the same way.
  images, y = _images(48)
  order = np.lexsort((np.arange(48), y))
  expected = from_images(images[order][..., None], y[order], 4, (8, 8), 'x', 'train')
  np.testing.assert_array_equal(ds.x_NxD, expected.x_NxD)
  np.testing.assert_array_equal(ds.y_N, y[order])
  assert ds.num_classes == 4 and ds.short_name == 'blocks'
  assert ds.pixels_NxD is not None  # uint8 PNGs stay compact on the devices


def test_npz_reads_as_from_images_and_is_cached(tmp_path):
  path = _write_npz(str(tmp_path / 'blocks16.npz'), size=16)
  ds = load(f'npz:{path}', 'test', (8, 8), data_dir=str(tmp_path / 'tfds'))
  images, y = _images(24, 16, seed=1)
  expected = from_images(images[..., None], y, 4, (8, 8), 'x', 'test')
  np.testing.assert_array_equal(ds.x_NxD, expected.x_NxD)  # resized as TFDS datasets are
  assert ds.num_classes == 4 and ds.short_name == 'blocks16'
  cached = os.listdir(tmp_path / 'tfds' / 'icl_jax_cache' / 'npz')
  assert len(cached) == 1 and cached[0].startswith('blocks16-')
  again = load(f'npz:{path}', 'test', (8, 8), data_dir=str(tmp_path / 'tfds'))
  np.testing.assert_array_equal(again.x_NxD, ds.x_NxD)
  assert again.num_classes == 4


def test_a_replaced_array_file_is_never_served_from_the_stale_cache(tmp_path):
  path = str(tmp_path / 'd.npz')
  _write_npz(path)
  first = load(f'npz:{path}', 'train', (8, 8), data_dir=str(tmp_path / 'tfds'))
  time.sleep(0.01)
  arrays = dict(np.load(path))
  arrays['y_train'] = (arrays['y_train'] + 1) % 4  # relabelled under the same name
  np.savez(path, **arrays)
  second = load(f'npz:{path}', 'train', (8, 8), data_dir=str(tmp_path / 'tfds'))
  np.testing.assert_array_equal(second.y_N, (first.y_N + 1) % 4)


def test_images_of_different_sizes_are_resized_to_the_image_shape(tmp_path):
  root = _write_folder(str(tmp_path / 'mixed'), splits=(('test', 8),))
  Image.new('RGB', (20, 12), (255, 0, 0)).save(os.path.join(root, 'test', 'label_a', 'big.png'))
  ds = load(f'folder:{root}', 'test', (8, 8), data_dir=str(tmp_path))
  assert ds.x_NxD.shape == (9, 64) and ds.num_classes == 4


@pytest.mark.parametrize('make,spec,message', [
    (None, 'folder:{tmp}/nowhere', 'does not exist'),
    (lambda tmp: _write_npz(f'{tmp}/a.npz'), 'folder:{tmp}/a.npz', 'is a file, not an image folder'),
    (lambda tmp: os.makedirs(f'{tmp}/d'), 'npz:{tmp}/d', 'is a directory; use folder:PATH'),
    (lambda tmp: _write_npz(f'{tmp}/a.npz'), 'npz:{tmp}/a.npz:validation', 'does not exist'),
    (lambda tmp: _write_npz(f'{tmp}/a.npz', (('train', 8),)), 'npz:{tmp}/a.npz', "no split 'test'"),
    (lambda tmp: open(f'{tmp}/a.npz', 'wb').write(b'PK\x03\x04 truncated'), 'npz:{tmp}/a.npz',
     'Cannot read array file'),
    (lambda tmp: np.savez(f'{tmp}/a.npz', x_test=np.zeros((4, 8, 8, 2)), y_test=np.arange(4)),
     'npz:{tmp}/a.npz', 'C = 1 or 3'),
    (lambda tmp: np.savez(f'{tmp}/a.npz', x_test=np.zeros((4, 8, 8)), y_test=np.arange(3)),
     'npz:{tmp}/a.npz', '4 integer labels'),
    (lambda tmp: np.savez(f'{tmp}/a.npz', x_test=np.zeros((4, 8, 8)), y_test=-np.arange(4)),
     'npz:{tmp}/a.npz', 'labels >= 0'),
    (lambda tmp: np.savez(f'{tmp}/a.npz', x_test=np.zeros((4, 8, 8)), y_test=np.zeros(4, int)),
     'npz:{tmp}/a.npz', 'at least 2 classes'),
    (lambda tmp: os.makedirs(f'{tmp}/f/test/only_one'), 'folder:{tmp}/f', 'at least 2'),
    (lambda tmp: [os.makedirs(f'{tmp}/f/test/{c}') for c in 'ab'], 'folder:{tmp}/f', 'no images'),
    (lambda tmp: [_write_folder(f'{tmp}/f', (('test', 8),)),
                  open(f'{tmp}/f/test/label_a/000.png', 'wb').write(b'\x89PNG broken')],
     'folder:{tmp}/f', 'Cannot read image'),
    (None, 'npz:', 'names no path'),
])
def test_damaged_or_misnamed_sources_are_one_line(tmp_path, make, spec, message):
  if make:
    make(str(tmp_path))
  with pytest.raises(UserError, match=message) as e:
    load(spec.format(tmp=tmp_path), 'test', (8, 8), data_dir=str(tmp_path / 'tfds'))
  assert '\n' not in str(e.value)


def test_parse_leaves_tfds_names_alone():
  assert sources.parse('mnist') is None and sources.parse('cifar10:3.0.2') is None
  assert sources.parse('npz:~/x.npz').path == os.path.expanduser('~/x.npz')


def test_meta_train_on_an_array_file_and_meta_test_on_an_image_folder(folder, tmp_path):
  """What the README shows: train with config.data.dataset=npz:..., evaluate --datasets folder:..."""
  from icl_jax import train  # pylint: disable=g-import-not-at-top
  npz = _write_npz(str(tmp_path / 'blocks_npz.npz'))
  config = tiny_config(str(tmp_path / 'tfds'), data__dataset=f'npz:{npz}', train__steps=10,
                       train__checkpoint_every_steps=10)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  assert workload_lib.build(config).train_name == 'blocks_npz'
  report = evaluate.evaluate_workdir(workdir, datasets=[f'folder:{folder}'], num_episodes=16,
                                     out=str(tmp_path / 'eval'), baseline_names=['knn'])
  assert set(report['results']) == {'seen', 'unseen', 'unseen:blocks', 'random'}
  knn = report['results']['unseen:blocks']['knn']['mean']
  assert np.mean(knn[-3:]) > 0.8  # 4 separable classes: the pixels arrived intact
  assert 'blocks_npz (unseen tasks)' in report['table'] and 'blocks' in report['table']
