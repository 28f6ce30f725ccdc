"""Tests for icl_jax.data: the embedded `digits` TFDS builder and `load`.

Nothing here downloads or mocks TFDS: `digits` really prepares into temporary
data dirs (offline, from scikit-learn's bundled copy) and is read back
through TFDS array_record data sources.
"""

import json
import os
import re
import shutil

import numpy as np
from PIL import Image
import pytest
from sklearn import datasets as sk_datasets
import tensorflow_datasets as tfds

from icl_jax.data import Dataset, compact, default_data_dir, from_images, load, loading
from icl_jax.data import tfds_source
from icl_jax.errors import UserError


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory) -> str:
  """A data dir where `digits` is prepared once for the whole module."""
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def digits_train(data_dir) -> Dataset:
  return load('digits', 'train', (8, 8), data_dir=data_dir)


@pytest.fixture(scope='module')
def digits_test(data_dir) -> Dataset:
  return load('digits', 'test', (8, 8), data_dir=data_dir)


def _raw_images(data_dir: str, split: str) -> np.ndarray:
  """Reads the split's uint8 images straight from TFDS, in record order."""
  source = tfds.builder('digits', data_dir=data_dir).as_data_source(split)
  return np.stack([source[i]['image'] for i in range(len(source))])


def _z(x_NxD: np.ndarray) -> np.ndarray:
  """Z-normalises by one scalar mean and std, as `load` does."""
  return (x_NxD - x_NxD.mean()) / x_NxD.std()


def test_digits_loads_through_tfds(digits_train, digits_test):
  for ds, split, n in (
      (digits_train, 'train', 1437),
      (digits_test, 'test', 360),
  ):
    assert ds.x_NxD.shape == (n, 64)
    assert ds.x_NxD.dtype == np.float32
    assert ds.y_N.shape == (n,)
    assert ds.y_N.dtype == np.int32
    assert set(np.unique(ds.y_N)) == set(range(10))
    assert ds.num_classes == 10
    assert ds.num_features == 64
    assert ds.image_shape == (8, 8)
    assert (ds.name, ds.split) == ('digits', split)


def test_splits_are_z_normalised(digits_train, digits_test):
  for ds in (digits_train, digits_test):
    assert abs(ds.x_NxD.mean()) < 1e-5
    assert abs(ds.x_NxD.std() - 1) < 1e-5


def test_splits_partition_sklearn_digits(data_dir, digits_train, digits_test):
  del digits_train, digits_test  # Only needed to have `digits` prepared.
  raw_NxD = np.concatenate(
      [_raw_images(data_dir, s) for s in ('train', 'test')]
  ).reshape(-1, 64)
  expected_NxD = sk_datasets.load_digits().images.reshape(-1, 64)
  # Same multiset of images: every sklearn example in exactly one split.
  assert raw_NxD.shape == expected_NxD.shape
  rows_MxD, counts_M = np.unique(raw_NxD, axis=0, return_counts=True)
  expected_rows_MxD, expected_counts_M = np.unique(
      expected_NxD.astype(np.uint8), axis=0, return_counts=True
  )
  np.testing.assert_array_equal(rows_MxD, expected_rows_MxD)
  np.testing.assert_array_equal(counts_M, expected_counts_M)


def test_prepare_is_deterministic(tmp_path, digits_train, digits_test):
  for ds in (digits_train, digits_test):
    again = load('digits', ds.split, (8, 8), data_dir=str(tmp_path))
    np.testing.assert_array_equal(again.x_NxD, ds.x_NxD)
    np.testing.assert_array_equal(again.y_N, ds.y_N)


def test_second_load_reads_the_cache(data_dir, digits_train, monkeypatch):
  cache_dir = os.path.join(data_dir, loading.CACHE_DIRNAME, 'digits', '1.0.0')
  assert any(f.startswith('train-8x8') for f in os.listdir(cache_dir))
  assert not [f for f in os.listdir(cache_dir) if f.endswith('.tmp')]

  def fail(*args, **kwargs):
    raise AssertionError('read the TFDS records although a cache exists')

  monkeypatch.setattr(tfds_source, 'read_split', fail)
  again = load('digits', 'train', (8, 8), data_dir=data_dir)
  np.testing.assert_array_equal(again.x_NxD, digits_train.x_NxD)
  np.testing.assert_array_equal(again.y_N, digits_train.y_N)


def test_resize_to_4x4(data_dir, digits_train):
  small = load('digits', 'train', (4, 4), data_dir=data_dir)
  assert small.x_NxD.shape == (1437, 16)
  assert small.num_features == 16
  np.testing.assert_array_equal(small.y_N, digits_train.y_N)
  assert abs(small.x_NxD.mean()) < 1e-5
  assert abs(small.x_NxD.std() - 1) < 1e-5


def test_native_shape_is_raw_pixels_up_to_normalisation(data_dir, digits_train):
  raw_NxD = _raw_images(data_dir, 'train').reshape(-1, 64).astype(np.float64)
  np.testing.assert_allclose(digits_train.x_NxD, _z(raw_NxD), atol=1e-5)


def test_preprocess_rgb_uses_luma():
  rng = np.random.default_rng(0)
  images_Nx4x4x3 = rng.integers(0, 256, (5, 4, 4, 3)).astype(np.uint8)
  luma_Nx4x4 = images_Nx4x4x3 @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(
      loading.preprocess(images_Nx4x4x3, (4, 4)),
      _z(luma_Nx4x4.reshape(5, 16)),
      atol=1e-5,
  )


@pytest.mark.parametrize('image_shape', [(4, 5), (3, 7), (20, 15)])
def test_preprocess_resizes_like_pil_antialiased_bilinear(image_shape):
  rng = np.random.default_rng(0)
  images_Nx12x10x1 = rng.uniform(0, 255, (3, 12, 10, 1)).astype(np.float32)
  height, width = image_shape
  # PIL's BILINEAR widens its kernel when downsampling: an independent
  # implementation of the same antialiased resize.
  size = (width, height)
  resized_NxHxW = np.stack([
      np.asarray(Image.fromarray(im_HxW).resize(size, Image.BILINEAR))
      for im_HxW in images_Nx12x10x1[..., 0]
  ])
  np.testing.assert_allclose(
      loading.preprocess(images_Nx12x10x1, image_shape),
      _z(resized_NxHxW.reshape(3, height * width).astype(np.float64)),
      atol=1e-5,
  )


def test_not_prepared_dataset_says_how_to_build_it(tmp_path):
  with pytest.raises(UserError) as e:
    load('mnist', 'train', (28, 28), data_dir=str(tmp_path))
  message = str(e.value)
  assert 'mnist' in message
  assert str(tmp_path) in message
  assert 'tfds build' in message
  assert not list(tmp_path.iterdir())  # Nothing downloaded or written.


def test_unknown_dataset(tmp_path):
  with pytest.raises(UserError, match=r"'mnistt'.*'mnist'"):
    load('mnistt', 'train', (28, 28), data_dir=str(tmp_path))


def test_unknown_split_lists_splits(data_dir, digits_train):
  del digits_train  # Only needed to have `digits` prepared.
  with pytest.raises(UserError, match='validation.*test, train'):
    load('digits', 'validation', (8, 8), data_dir=data_dir)


def test_tfrecord_only_dataset_says_to_rebuild(
    data_dir, digits_train, tmp_path
):
  del digits_train  # Only needed to have `digits` prepared.
  # Writing tfrecords needs TensorFlow, so relabel a prepared copy instead:
  # TFDS then sees a dataset stored in tfrecord format only.
  shutil.copytree(os.path.join(data_dir, 'digits'), tmp_path / 'digits')
  info_path = tmp_path / 'digits' / '1.0.0' / 'dataset_info.json'
  info = json.loads(info_path.read_text())
  info['fileFormat'] = 'tfrecord'
  info_path.write_text(json.dumps(info))
  with pytest.raises(UserError, match='tfrecord.*array_record'):
    load('digits', 'train', (8, 8), data_dir=str(tmp_path))


@pytest.mark.parametrize(
    'image_shape',
    [(0, 8), (8,), (8, 8, 1), (-1, 4), (8.0, 8), (True, 8), '88', None],
)
def test_bad_image_shape(tmp_path, image_shape):
  with pytest.raises(UserError, match='image_shape'):
    load('digits', 'train', image_shape, data_dir=str(tmp_path))
  assert not list(tmp_path.iterdir())  # Rejected before preparing anything.


def test_default_data_dir(monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', '/some/dir')
  assert default_data_dir() == '/some/dir'
  monkeypatch.delenv('TFDS_DATA_DIR')
  assert default_data_dir() == os.path.expanduser('~/tensorflow_datasets')


def test_native_digits_are_stored_as_uint8_pixels_exactly(data_dir, digits_train):
  """The compact form holds x_NxD bit for bit: it is what `load` computed before the form
  existed, numpy's (x - mean) / std over the split's float32 pixels."""
  raw_NxD = _raw_images(data_dir, 'train').reshape(-1, 64)
  np.testing.assert_array_equal(digits_train.pixels_NxD, raw_NxD)
  assert digits_train.pixels_NxD.dtype == np.uint8
  raw_f32 = raw_NxD.astype(np.float32)
  before = ((raw_f32 - np.float32(raw_f32.mean(dtype=np.float64))) /
            np.float32(raw_f32.std(dtype=np.float64)))
  np.testing.assert_array_equal(digits_train.x_NxD, before)
  pixels = digits_train.compact_x()
  assert isinstance(pixels, compact.Pixels) and pixels.shape == (1437, 64)
  np.testing.assert_array_equal(pixels[np.arange(1437)], before)


def test_device_rows_equal_the_host_rows_bit_for_bit(digits_train):
  """The sampler's gather of device Pixels gives x_NxD's float32 values exactly (a division
  on the device would not: XLA's CPU division differs in the last bit)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  pixels = jax.device_put(digits_train.compact_x())
  assert pixels.values_NxD.dtype == jnp.uint8
  idx_M = jax.random.randint(jax.random.key(0), (5000,), 0, 1437)
  rows_MxD = jax.jit(lambda p, i: p[i])(pixels, idx_M)
  np.testing.assert_array_equal(rows_MxD, digits_train.x_NxD[np.asarray(idx_M)])


def test_resized_and_rgb_images_stay_float32(data_dir):
  small = load('digits', 'train', (4, 4), data_dir=data_dir)  # Resizing averages pixels.
  assert small.pixels_NxD is None and small.compact_x() is small.x_NxD
  rgb = from_images(np.random.default_rng(0).integers(0, 256, (6, 4, 4, 3), dtype=np.uint8),
                    np.arange(6) % 2, 2, (4, 4), 'rgb', 'train')
  assert rgb.pixels_NxD is None and rgb.x_NxD.dtype == np.float32


def test_cache_holds_the_compact_form(data_dir, digits_train):
  del digits_train  # Only needed to have the cache written.
  cache_dir = os.path.join(data_dir, loading.CACHE_DIRNAME, 'digits', '1.0.0')
  [name] = [f for f in os.listdir(cache_dir) if f.startswith('train-8x8')]
  version = loading._PREPROCESSING_VERSION  # pylint: disable=protected-access
  # The preprocessing version, then the fingerprint of the prepared files it came from.
  assert re.fullmatch(rf'train-8x8-p{version}-[0-9a-f]{{12}}\.npz', name), name
  with np.load(os.path.join(cache_dir, name)) as cache:
    assert sorted(cache.files) == ['mean', 'pixels_NxD', 'std', 'y_N']
    assert cache['pixels_NxD'].dtype == np.uint8
