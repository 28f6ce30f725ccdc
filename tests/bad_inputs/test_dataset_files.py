"""Bad input, round three (issue 27), class 1: dataset files (`npz:PATH`, `folder:PATH`).

One table of files a researcher might hand the loader, each ending in one UserError naming
the file or split and the fix (or, where the file is fine, in a correct Dataset), with
nothing outside the data dir's cache touched; then two hypothesis fuzzers, one of random
array files and one of random image folders, with the property: `load` gives a Dataset
whose x is finite and whose labels are in [0, num_classes), or exactly one UserError line,
never another exception or warning, and touches no file but its own cache. Last, one
subprocess through the CLI.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import tempfile
import warnings
import zipfile
import zlib
from typing import Callable

from hypothesis import HealthCheck
from hypothesis import event
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
from PIL import Image
import pytest

from icl_jax.data import load
from icl_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPE = (4, 4)  # The image_shape every case loads at: images of 4x4 are not resized.


# ---------------------------------------------------------------------------------------
# Helpers: files, and what may change.
# ---------------------------------------------------------------------------------------
def tree(root, skip=()):
  """{relative path: what it is} of everything under `root`, links not followed: a
  symlink's target, a file's size, mtime and hash. Paths under `skip` are left out."""
  out = {}
  for directory, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(directory, name)
      rel = os.path.relpath(path, root)
      if any(rel == s or rel.startswith(s + os.sep) for s in skip):
        continue
      st_ = os.lstat(path)
      if os.path.islink(path):
        out[rel] = ('link', os.readlink(path))
      elif os.path.isfile(path):
        with open(path, 'rb') as f:
          out[rel] = (st_.st_size, st_.st_mtime_ns, hashlib.sha256(f.read()).hexdigest())
      else:
        out[rel] = ('other', st_.st_mode)
  return out


def load_checked(spec, root, split='train'):
  """load(spec) with data dir <root>/data; the Dataset, or the UserError's message. Asserts
  the property: a finite Dataset with labels in range, or one UserError line; no warning;
  nothing under `root` changed but <root>/data/icl_jax_cache."""
  data_dir = os.path.join(root, 'data')
  before = tree(root, skip=('data',))
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('error')  # A warning is a second line the user sees.
      # JAX's own deprecation notices are not about the data.
      warnings.filterwarnings('ignore', category=DeprecationWarning)
      ds = load(spec, split, SHAPE, data_dir=data_dir)
  except UserError as e:
    message = str(e)
    assert message and '\n' not in message, message
    outcome = message
  else:
    assert ds.x_NxD.dtype == np.float32 and ds.x_NxD.shape == (len(ds.y_N), 16)
    assert np.isfinite(ds.x_NxD).all()
    assert ds.y_N.dtype == np.int32 and 2 <= ds.num_classes
    assert 0 <= ds.y_N.min() and ds.y_N.max() < ds.num_classes
    outcome = ds
  assert tree(root, skip=('data',)) == before
  if os.path.exists(data_dir):
    assert os.listdir(data_dir) == ['icl_jax_cache']
  return outcome


def images(n, seed=0, shape=SHAPE):
  return np.random.default_rng(seed).integers(0, 256, (n, *shape), np.uint8)


def save_npz(path, compressed=False, **arrays):
  (np.savez_compressed if compressed else np.savez)(path, **arrays)
  return f'npz:{path}'


def npz(**arrays):
  """A case's make(): an array file with these arrays (x_test/y_test default to good ones)."""
  def make(tmp):
    arrays.setdefault('x_test', images(8, 1))
    arrays.setdefault('y_test', np.arange(8) % 4)
    return save_npz(f'{tmp}/a.npz', **arrays)
  return make


def write_image(path, array=None, mode=None, size=SHAPE, seed=0, **save):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if array is None:
    array = np.random.default_rng(seed).integers(0, 256, size, np.uint8)
  img = Image.fromarray(array)
  if mode is not None and img.mode != mode:
    img = img.convert(mode)
  img.save(path, **save)


def image_folder(tmp, n=3, labels='ab', splits=('train', 'test'), suffix='png', **kwargs):
  """<tmp>/f/<split>/<label>/<i>.<suffix>: n random 4x4 images a label."""
  root = f'{tmp}/f'
  for s, split in enumerate(splits):
    for label in labels:
      for i in range(n):
        write_image(f'{root}/{split}/{label}/{i}.{suffix}', seed=100 * s + 10 * ord(label) + i,
                    **kwargs)
  return root


def folder(change: Callable[[str], object] = lambda root: None, **kwargs):
  """A case's make(): a good image folder, then `change(root)`."""
  def make(tmp):
    root = image_folder(tmp, **kwargs)
    change(root)
    return f'folder:{root}'
  return make


def png_header(width, height):
  """A PNG of one IHDR (8-bit gray) claiming width x height, and no pixel data."""
  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack(
        '>I', zlib.crc32(kind + data) & 0xffffffff)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0, 0,
                                                            0, 0)) + chunk(b'IEND', b''))


def npy_claiming(shape):
  """An .npz whose x_test header claims `shape` but holds 16 bytes."""
  def make(tmp):
    header = {'descr': '|u1', 'fortran_order': False, 'shape': shape}
    text = repr(header).encode('latin1')
    text += b' ' * (63 - (len(text) + 10) % 64) + b'\n'
    body = b'\x93NUMPY\x01\x00' + struct.pack('<H', len(text)) + text + bytes(16)
    path = f'{tmp}/a.npz'
    with zipfile.ZipFile(path, 'w') as z:
      z.writestr('x_test.npy', body)
      buf = io.BytesIO()
      np.save(buf, np.arange(8) % 4)
      z.writestr('y_test.npy', buf.getvalue())
    return f'npz:{path}'
  return make


def flip_a_byte_of_compressed(tmp):
  path = f'{tmp}/a.npz'
  save_npz(path, compressed=True, x_test=images(64, 1), y_test=np.arange(64) % 4)
  with open(path, 'r+b') as f:
    f.seek(200)
    byte = f.read(1)
    f.seek(200)
    f.write(bytes([byte[0] ^ 0xFF]))
  return f'npz:{path}'


# ---------------------------------------------------------------------------------------
# The table. `message`: a regex of the UserError; None: the file is fine and loads.
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
  id: str
  make: Callable[[str], str]  # tmp dir -> the dataset argument.
  message: str | None


def _nan(x):
  x = x.astype(np.float32)
  x[3, 1, 2] = np.nan
  return x


def _inf(x):
  x = x.astype(np.float64)
  x[5, 0, 0] = -np.inf
  return x


CASES = [
    # Values that would end in "Training diverged ... lower config.train.lr".
    Case('npz_nan_pixel', npz(x_test=_nan(images(8))), r"split 'test': x_test\[3\] holds NaN "
         r'\(1 of 8 images.*Repair or drop those images'),
    Case('npz_inf_pixel', npz(x_test=_inf(images(8))), r'x_test\[5\] holds an infinite value'),
    Case('npz_constant_images', npz(x_test=np.full((8, 4, 4), 7, np.uint8)),
         r'every value of every image is 7: the split does not vary'),
    Case('npz_beyond_float32', npz(x_test=images(8).astype(np.float64) * 1e300),
         r'x_test\[\d\] holds .*e\+30\d; values beyond \+-1e\+30 cannot be normalised'),
    Case('npz_spread_below_float32', npz(x_test=images(8).astype(np.float64) * 1e-40),
         r'the values vary by only .*e-3\d, too little to normalise'),
    # Labels of the wrong type or range.
    Case('npz_string_labels', npz(y_test=np.array(list('abcdabcd'))),
         r"the labels are strings or objects \('a', 'b', \.\.\.\); store class indices"),
    Case('npz_labels_with_gaps', npz(y_test=(np.arange(8) % 4) * 1000),
         r'not 0 \.\. C-1: 4 distinct labels from 0 to 3000 \(1 is missing\), which would make a '
         r'3001-class head with 2997 classes never seen\. Relabel them 0 \.\. 3'),
    Case('npz_gaps_across_splits', npz(x_train=images(8), y_train=np.arange(8) % 2,
                                       y_test=np.arange(8) % 2 + 5),
         r'4 distinct labels from 0 to 6 \(2 is missing\)'),
    Case('npz_whole_float_labels', npz(y_test=(np.arange(8) % 4).astype(np.float32)),
         r'labels are floats \(float32\); store them as integers \(y\.astype\(np\.int64\)\)'),
    Case('npz_fractional_labels', npz(y_test=np.arange(8) / 3), r'not whole numbers'),
    Case('npz_bool_labels', npz(y_test=np.arange(8) % 2 == 0), r'labels are booleans'),
    Case('npz_one_hot_labels', npz(y_test=np.eye(4, dtype=np.uint8)[np.arange(8) % 4]),
         r'one-hot, shape \(8, 4\); store class indices instead \(y\.argmax\(1\)\)'),
    Case('npz_label_2_to_40', npz(y_test=np.array([0, 1, 2, 3, 2**40, 1, 2, 3])),
         r'5 distinct labels from 0 to 1099511627776'),
    Case('npz_uint64_max_label', npz(y_test=np.array([0, 1, 2, 3, 2**64 - 1, 1, 2, 3],
                                                     np.uint64)),
         r'to 18446744073709551615 \(4 is missing\)'),
    Case('npz_one_class_in_a_split', npz(x_train=images(8), y_train=np.arange(8) % 4,
                                         y_test=np.full(8, 2)),
         r"split 'test': every label of the split is 2; each split needs images of at least 2"),
    Case('npz_keras_label_column_loads', npz(y_test=(np.arange(8) % 4)[:, None]), None),
    # Images of the wrong type or shape.
    Case('npz_bool_images', npz(x_test=images(8) > 128), r'images are booleans; store numbers'),
    Case('npz_complex_images', npz(x_test=images(8).astype(np.complex64)), r'complex numbers'),
    Case('npz_datetime_images', npz(x_test=images(8).astype('datetime64[s]')),
         r'dtype datetime64\[s\], not numbers'),
    Case('npz_object_images', lambda tmp: _object_npz(tmp), r'x_test is an array of Python '
         r'objects, which is not read \(it would need pickle\)'),
    Case('npz_flattened_images', npz(x_test=images(8).reshape(8, 16)),
         r'shape \(8, 16\).*flattened images\? .*x\.reshape\(-1, 4, 4\)'),
    Case('npz_channels_first', npz(x_test=np.repeat(images(8)[:, None], 3, axis=1)),
         r'channels first\? .*np\.moveaxis\(x, 1, -1\)'),
    Case('npz_rgba', npz(x_test=np.repeat(images(8)[..., None], 4, axis=-1)),
         r'RGBA\? Keep the colours: x\[\.\.\., :3\]'),
    Case('npz_empty_split', npz(x_train=images(8), y_train=np.arange(8) % 4,
                                x_test=images(0), y_test=np.zeros(0, int)),
         r"split 'test': the split holds no images\. .*config\.data\.eval_split"),
    Case('npz_zero_size_images', npz(x_test=np.zeros((8, 0, 4), np.uint8)),
         r'the images are 0 x 4 pixels'),
    Case('npz_header_claims_more_than_the_file', npy_claiming((100000, 1000, 1000)),
         r'x_test claims shape \(100000, 1000, 1000\).*more bytes than the file holds'),
    Case('npz_header_claims_huge_images', npy_claiming((0, 100000, 100000)),
         r'images of 100000 x 100000 pixels; at most 67108864'),
    Case('npz_damaged_compressed_member', flip_a_byte_of_compressed, r'Cannot read x_test of'),
    Case('npz_single_npy_array', lambda tmp: (np.save(f'{tmp}/a.npy', images(8)),
                                              os.replace(f'{tmp}/a.npy', f'{tmp}/a.npz'),
                                              f'npz:{tmp}/a.npz')[2],
         r'it is not a \.npz archive but a single \.npy array\. Write x_<split> and y_<split> '
         r'into one file with numpy\.savez'),
    Case('npz_pickle_file', lambda tmp: (open(f'{tmp}/a.npz', 'wb').write(pickle.dumps({'x': 1})),
                                         f'npz:{tmp}/a.npz')[1],
         r'it is not a \.npz archive\.'),  # numpy's advice (allow_pickle) is not passed on.
    Case('npz_dangling_symlink', lambda tmp: (os.symlink(f'{tmp}/gone.npz', f'{tmp}/a.npz'),
                                              f'npz:{tmp}/a.npz')[1],
         r'a\.npz is a symlink to .*gone\.npz, which does not exist'),
    Case('npz_fifo', lambda tmp: (os.mkfifo(f'{tmp}/a.npz'), f'npz:{tmp}/a.npz')[1],
         r'a\.npz is not a regular file'),
    # Image folders.
    Case('folder_16bit_among_8bit', folder(lambda root: write_image(
        f'{root}/test/a/deep.png', np.full(SHAPE, 40000, np.uint16))),
         r"split 'test': images of different bit depths, e.g. .*/test/a/0\.png \(8-bit, mode "
         r'L\) and .*/test/a/deep\.png \(16-bit, mode I;16\).*Save them all at one depth'),
    Case('folder_all_16bit_loads', lambda tmp: _all_16bit(tmp), None),
    Case('folder_constant_images', folder(lambda root: [
        write_image(f'{root}/test/{c}/{i}.png', np.full(SHAPE, 9, np.uint8))
        for c in 'ab' for i in range(3)]), r'every value of every image is 9'),
    Case('folder_nan_in_a_float_tiff', lambda tmp: _float_tiffs(tmp),
         r"folder:.*split 'test': .*/test/b/1\.tif holds NaN"),
    Case('folder_dangling_symlink', folder(lambda root: os.symlink(
        f'{root}/nowhere.png', f'{root}/test/a/x.png')),
         r'/test/a/x\.png is a symlink to .*nowhere\.png, which does not exist'),
    Case('folder_symlink_loop', folder(lambda root: os.symlink(
        f'{root}/test/a/x.png', f'{root}/test/a/x.png')), r'x\.png .*or is a symlink loop'),
    Case('folder_label_dir_linking_to_its_split', folder(lambda root: os.symlink(
        f'{root}/test', f'{root}/test/c')),
         r"the label directory 'c' holds no images in any split"),
    Case('folder_empty_label_dir', folder(lambda root: os.makedirs(f'{root}/train/zebra')),
         r"label directory 'zebra' holds no images in any split, so its class would never"),
    Case('folder_directory_named_png', folder(lambda root: os.makedirs(f'{root}/test/a/d.png')),
         r'd\.png is not a regular file'),
    Case('folder_fifo_named_png', folder(lambda root: os.mkfifo(f'{root}/test/b/p.png')),
         r'p\.png is not a regular file'),
    Case('folder_huge_header', folder(lambda root: open(f'{root}/test/a/big.png', 'wb').write(
        png_header(10000, 9000))), r'big\.png is 10000 x 9000 pixels; images over 67108864 '
         r'pixels are refused before decoding'),
    Case('folder_bomb_header', folder(lambda root: open(f'{root}/test/a/big.png', 'wb').write(
        png_header(100000, 100000))), r'big\.png is larger than 67108864 pixels'),
    Case('folder_truncated_png', folder(lambda root: _truncate(f'{root}/test/b/2.png', 40)),
         r'Cannot read image .*/test/b/2\.png: .*Delete or replace'),
    Case('folder_empty_split_dir', folder(lambda root: os.makedirs(f'{root}/validation')),
         None),  # Only an empty split *read* is refused (test_local_datasets has it).
    Case('folder_hidden_dirs_and_files_are_skipped', folder(lambda root: (
        os.makedirs(f'{root}/test/.ipynb_checkpoints'),
        open(f'{root}/test/a/._0.png', 'wb').write(b'AppleDouble'))), None),
    Case('folder_palette_with_transparency_loads', folder(lambda root: write_image(
        f'{root}/test/b/p.png', mode='P', transparency=0)), None),
]


def _object_npz(tmp):
  """Images as a list of arrays in an object array: np.savez pickles it."""
  x = np.empty(8, object)
  x[:] = list(images(8))
  return save_npz(f'{tmp}/a.npz', x_test=x, y_test=np.arange(8) % 4)


def _all_16bit(tmp):
  root = f'{tmp}/f'
  for c in 'ab':
    for i in range(3):
      write_image(f'{root}/test/{c}/{i}.png', np.random.default_rng(i).integers(
          0, 65536, SHAPE).astype(np.uint16))
  return f'folder:{root}'


def _float_tiffs(tmp):
  root = f'{tmp}/f'
  for c in 'ab':
    for i in range(3):
      x = np.random.default_rng(i).random(SHAPE).astype(np.float32)
      if (c, i) == ('b', 1):
        x[2, 2] = np.nan
      write_image(f'{root}/test/{c}/{i}.tif', x)
  return f'folder:{root}'


def _truncate(path, size):
  with open(path, 'r+b') as f:
    f.truncate(size)


@pytest.mark.parametrize('case', CASES, ids=[c.id for c in CASES])
def test_dataset_file_case(tmp_path, case):
  # A pipe opened for reading would wait forever: fail instead, should a check regress.
  signal.alarm(120)
  try:
    spec = case.make(str(tmp_path))
    outcome = load_checked(spec, str(tmp_path), split='test')
  finally:
    signal.alarm(0)
  if case.message is None:
    assert not isinstance(outcome, str), outcome
  else:
    assert isinstance(outcome, str), f'loaded, expected {case.message!r}'
    assert re.search(case.message, outcome), outcome


def test_the_table_has_at_least_thirty_cases():
  assert len(CASES) >= 30


def test_an_all_16bit_folder_reads_as_its_8bit_version_does(tmp_path):
  """One depth is read at its own scale; z-normalising makes it the 8-bit version's
  (x * 257 is an exact 16-bit copy of an 8-bit image)."""
  x = images(6)
  for depth, scale, dtype in (('8', 1, np.uint8), ('16', 257, np.uint16)):
    for i in range(6):
      write_image(f'{tmp_path}/{depth}/test/{"ab"[i % 2]}/{i}.png',
                  (x[i].astype(dtype) * scale).astype(dtype))
  eight = load_checked(f'folder:{tmp_path}/8', str(tmp_path), 'test')
  sixteen = load_checked(f'folder:{tmp_path}/16', str(tmp_path), 'test')
  np.testing.assert_allclose(sixteen.x_NxD, eight.x_NxD, rtol=1e-5, atol=1e-5)


def test_images_that_do_not_vary_after_preprocessing_are_one_user_error():
  """The net behind checks.py, for every dataset (TFDS's, from_images): a split that is
  constant once grayscaled and resized never reaches the division by its std of 0."""
  from icl_jax.data import from_images  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match=r"mine, split 'test': after grayscale and resizing to "
                     r'4x4, every value is 5 \(std .*\): the images do not vary') as e:
    from_images(np.full((6, 8, 8, 1), 5, np.uint8), np.arange(6) % 2, 2, SHAPE, 'mine', 'test')
  assert '\n' not in str(e.value)


def test_a_split_cached_before_the_checks_is_read_and_checked_anew(tmp_path):
  """A cache that code before these checks wrote (NaN let through, under the old key) is
  never served: the checks' version is part of the key."""
  from icl_jax.data import sources  # pylint: disable=g-import-not-at-top
  x = _nan(images(8))
  spec = save_npz(f'{tmp_path}/a.npz', x_test=x, y_test=np.arange(8) % 4)
  source = sources.parse(spec)
  h = hashlib.sha256(f'npz\0{source.path}\0'.encode())  # The key before the checks.
  h.update(source.kind.fingerprint(source.path).encode())
  old = f'{tmp_path}/data/icl_jax_cache/npz/a-{h.hexdigest()[:12]}'
  os.makedirs(old)
  np.savez(f'{old}/test-4x4-p2.npz', x_NxD=x.reshape(8, 16), mean=np.float32(np.nan),
           std=np.float32(np.nan), y_N=np.arange(8, dtype=np.int32) % 4, num_classes=np.int32(4))
  assert 'holds NaN' in load_checked(spec, str(tmp_path), 'test')


# ---------------------------------------------------------------------------------------
# Fuzzers.
# ---------------------------------------------------------------------------------------
def _outcome(result):
  """A coarse class of a fuzzer's outcome (pytest --hypothesis-show-statistics)."""
  if not isinstance(result, str):
    return 'loaded'
  # The message without paths and numbers: what kind of refusal it was.
  return 'refused: ' + re.sub(r"\S*/\S*|\d+|'[^']*'", '_', result.split(';')[0])[-60:]


# Each dimension is fine 11 times in 12 and wrong otherwise, so that about half the files
# load: the property is about both outcomes. Wrong: what the round found and more.
def mostly(good, bad):
  """One of `good` 11 times in 12, else one of `bad`."""
  return st.integers(0, 11).flatmap(lambda i: st.sampled_from(good if i else bad))


X_DTYPES = mostly(['uint8', 'float32', 'float16', 'float64', 'int64', 'uint16', 'int8', 'uint64'],
                  ['bool', 'object', 'U3', 'complex64'])
X_SHAPES = mostly([(4, 4), (4, 4, 1), (4, 4, 3), (3, 5)],
                  [(16,), (4, 4, 2), (), (0, 4), (2, 2, 2, 1), (3, 4, 4), (4, 4, 4)])
X_VALUES = mostly(['random', 'negative'], ['constant', 'nan', 'inf', 'huge', 'tiny'])
Y_KINDS = mostly(['contiguous', 'column', 'int8'],
                 ['gaps', 'negative', 'huge', 'float', 'fractional', 'string', 'bool', 'one_hot',
                  'one_class', 'wrong_length', 'uint64_max'])
SPLITS = mostly([('train', 'test'), ('train',)], [('test',)])
SIZES_N = mostly([4, 5, 6, 8], [0, 1, 2])
DAMAGES = mostly(['none'], ['truncate', 'x_only', 'single_npy', 'text'])


def _x(rng, n, shape, dtype, values):
  x = rng.integers(0, 256, (n, *shape)).astype(np.float64)
  if values == 'constant':
    x[:] = 3
  elif values == 'negative':
    x -= 300
  elif values == 'huge':
    x *= 1e300
  elif values == 'tiny':
    x *= 1e-40
  elif values in ('nan', 'inf') and x.size:
    x.flat[rng.integers(x.size)] = np.nan if values == 'nan' else np.inf
  if dtype == 'object':
    out = np.empty(x.shape[:1], object)
    out[:] = [row for row in x] if n else []
    return out
  with np.errstate(all='ignore'):
    return x.astype(dtype)


def _y(rng, n, kind):
  n_labels = n + (1 if kind == 'wrong_length' else 0)
  y = rng.integers(0, 3, n_labels)
  y[:min(3, n_labels)] = np.arange(min(3, n_labels))  # Every class, where n allows.
  return {'contiguous': y, 'wrong_length': y, 'gaps': y * 1000, 'negative': y - 1,
          'huge': y * 2**40, 'float': y.astype(np.float32),
          'fractional': y / 2, 'string': np.array([f'c{v}' for v in y]), 'bool': y == 1,
          'one_hot': np.eye(3, dtype=np.int8)[y], 'column': y[:, None],
          'one_class': np.zeros(n_labels, int), 'int8': y.astype(np.int8),
          'uint64_max': np.where(y == 2, 2**64 - 1, y).astype(np.uint64)}[kind]


@st.composite
def array_files(draw):
  splits = {}
  for split in draw(SPLITS):
    n = draw(SIZES_N)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    splits[split] = (_x(rng, n, draw(X_SHAPES), draw(X_DTYPES), draw(X_VALUES)),
                     _y(rng, n, draw(Y_KINDS)))
  return splits, draw(st.booleans()), draw(DAMAGES)


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(spec=array_files())
def test_any_array_file_loads_correctly_or_is_one_user_error(spec):
  splits, compressed, damage = spec
  with tempfile.TemporaryDirectory() as tmp:
    arrays = {}
    for split, (x, y) in splits.items():
      arrays[f'x_{split}'] = x
      if damage != 'x_only':
        arrays[f'y_{split}'] = y
    path = f'{tmp}/a.npz'
    (np.savez_compressed if compressed else np.savez)(path, **arrays)  # pickles objects
    if damage == 'truncate':
      _truncate(path, os.path.getsize(path) * 2 // 3)
    elif damage == 'single_npy':
      np.save(f'{tmp}/a.npy', next(iter(arrays.values())))
      os.replace(f'{tmp}/a.npy', path)
    elif damage == 'text':
      with open(path, 'w') as f:
        f.write('x_train,y_train\n')
    event(_outcome(load_checked(f'npz:{path}', tmp, 'train')))


MODES_8BIT = ['1', 'L', 'LA', 'RGB', 'RGBA', 'P']
MODES = MODES_8BIT + ['I;16', 'F', 'I']
SIZES = mostly([SHAPE, SHAPE, (3, 5)], [(6, 4), (5, 3)])  # Mixed sizes: resized one by one.
EXTRAS = ['garbage', 'truncated', 'empty_split', 'symlink', 'dangling', 'loop', 'dir_named_png',
          'hidden', 'empty_label', 'constant', 'nan']


def _folder_image(path, mode, size, rng, constant):
  base = rng.integers(0, 256, size)
  if constant:
    base[:] = 77
  if mode == 'I;16':
    array = (base * 257).astype(np.uint16)
  elif mode == 'I':
    array = (base * 70000).astype(np.int32)
  elif mode == 'F':
    array = (base / 255).astype(np.float32)
  else:
    array = base.astype(np.uint8)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  img = Image.fromarray(array)
  img = img if mode in ('I;16', 'I', 'F', 'L') else img.convert(mode)
  img.save(path)


@st.composite
def image_folders(draw):
  """([(split, label, mode, size)], extras, seed): one depth for most files of a folder."""
  group = draw(mostly([MODES_8BIT], [['I;16'], ['F'], ['I']]))
  files = draw(st.lists(st.tuples(mostly(['train'], ['test']), mostly(['a', 'b'], ['c']),
                                  mostly(group, MODES), SIZES), min_size=3, max_size=7))
  extras = draw(st.integers(0, 2).flatmap(lambda i: st.just([]) if i else st.lists(
      st.sampled_from(EXTRAS), min_size=1, max_size=3, unique=True)))
  return files, extras, draw(st.integers(0, 2**16))


def _extra(root, extra, rng):
  target = f'{root}/train/a'
  os.makedirs(target, exist_ok=True)
  if extra == 'garbage':
    open(f'{target}/garbage.png', 'wb').write(rng.bytes(40))
  elif extra == 'truncated':
    _folder_image(f'{target}/cut.png', 'L', SHAPE, rng, False)
    _truncate(f'{target}/cut.png', 30)
  elif extra == 'empty_split':
    os.makedirs(f'{root}/validation', exist_ok=True)
  elif extra == 'symlink':
    _folder_image(f'{root}/elsewhere.png', 'L', SHAPE, rng, False)
    os.symlink(f'{root}/elsewhere.png', f'{target}/linked.png')
  elif extra == 'dangling':
    os.symlink(f'{root}/nothing.png', f'{target}/dangling.png')
  elif extra == 'loop':
    os.symlink(f'{target}/loop.png', f'{target}/loop.png')
  elif extra == 'dir_named_png':
    os.makedirs(f'{target}/dir.png')
  elif extra == 'hidden':
    os.makedirs(f'{root}/train/.hidden_label', exist_ok=True)
    open(f'{target}/._apple.png', 'wb').write(b'AppleDouble')
  elif extra == 'empty_label':
    os.makedirs(f'{root}/train/empty', exist_ok=True)
  elif extra == 'constant':  # Every image one gray, of its own size.
    for path in _pngs(root):
      try:
        size = Image.open(path).size
      except OSError:
        continue  # The garbage or truncated file of another extra.
      Image.new('L', size, 5).save(path)
  elif extra == 'nan':
    x = np.ones(SHAPE, np.float32)
    x[1, 1] = np.nan
    Image.fromarray(x).save(f'{target}/nan.tif')


def _pngs(root):
  return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith('.png')
          and not os.path.islink(os.path.join(d, f))]


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(spec=image_folders())
def test_any_image_folder_loads_correctly_or_is_one_user_error(spec):
  files, extras, seed = spec
  rng = np.random.default_rng(seed)
  with tempfile.TemporaryDirectory() as tmp:
    root = f'{tmp}/images'
    for i, (split, label, mode, size) in enumerate(files):
      suffix = 'tif' if mode in ('F', 'I') else 'png'
      _folder_image(f'{root}/{split}/{label}/{i}.{suffix}', mode, size, rng, False)
    for extra in extras:
      _extra(root, extra, rng)
    event(_outcome(load_checked(f'folder:{root}', tmp, 'train')))


# ---------------------------------------------------------------------------------------
# The command line, once: one `error:` line, exit code 2, no checkpoint.
# ---------------------------------------------------------------------------------------
def test_a_bad_array_file_through_the_cli_is_one_line_and_no_checkpoint(tmp_path, data_dir):
  bad = f'{tmp_path}/bad.npz'
  np.savez(bad, x_train=_nan(images(60, 0, (8, 8))), y_train=np.arange(60) % 10,
           x_test=images(60, 1, (8, 8)), y_test=np.arange(60) % 10)
  before = tree(str(tmp_path))
  workdir = f'{tmp_path}/run'
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  out = subprocess.run(
      [sys.executable, '-m', 'icl_jax.main', '--config', 'experiments/gpicl_digits.py:smoke',
       f'--config.data.dataset=npz:{bad}', f'--config.data.data_dir={data_dir}',
       '--workdir', workdir], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-3000:]
  assert out.stderr.startswith('error: ') and 'Traceback' not in out.stderr, out.stderr[-3000:]
  assert len(out.stderr.strip().splitlines()) == 1, out.stderr
  assert re.search(r"split 'train': x_train\[3\] holds NaN", out.stderr), out.stderr
  # The run opened its workdir (an empty checkpoints/ directory) before reading the data:
  # nothing was saved there.
  checkpoints = os.path.join(workdir, 'checkpoints')
  assert not os.path.exists(checkpoints) or not os.listdir(checkpoints)
  assert {k: v for k, v in tree(str(tmp_path)).items() if not k.startswith('run')} == before
