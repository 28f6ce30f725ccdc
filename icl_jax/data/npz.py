"""npz:PATH, a NumPy .npz holding x_<split> (N x H x W, or N x H x W x C with C = 1 or 3)
and y_<split> (N integer labels; a column N x 1 is read too) per split, the layout of Keras's
mnist.npz. The labels of all splits together must be 0 .. C-1, and C is num_classes.

Each array's header (dtype, shape) is read before its data: arrays of Python objects (they
need pickle, which is never used), images above checks.MAX_IMAGE_PIXELS and headers that
claim more bytes than the file holds are refused before anything is allocated. The values
are checked by checks.split, as every kind's are.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib

import numpy as np

from icl_jax.data import checks
from icl_jax.data import sources
from icl_jax.errors import UserError

# What np.load and zipfile raise for a damaged archive or member.
_READ_ERRORS = (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error, KeyError)


def splits(path: str) -> list[str]:
  with _open_npz(path) as f:
    return _splits(f)


def _splits(f) -> list[str]:
  return sorted(k[2:] for k in f.files if k.startswith('x_') and 'y_' + k[2:] in f.files)


def fingerprint(path: str) -> str:
  return sources.file_stats([path])


def example(path: str, split: str, i: int) -> str:
  del path
  return f'x_{split}[{i}]'


def read(path: str, split: str,
         image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
  del image_shape  # One size: loading.py resizes.
  with _open_npz(path) as f:
    x = _images(_array(f, path, 'x_' + split), path, split)
    # Every split's labels: num_classes is theirs together.
    labels = {s: checks.labels(_array(f, path, 'y_' + s), f'npz:{path}, split {s!r}')
              for s in _splits(f)}
  return x, labels[split], checks.class_count(labels, f'npz:{path}')


def _open_npz(path: str):
  if not os.path.isfile(path):
    link = checks.broken_link(path)
    if link:
      raise UserError(f'Array file {link}.')
    raise UserError(f'Array file {path} ' + (
        'is a directory; use folder:PATH for an image folder' if os.path.isdir(path) else
        'is not a regular file' if os.path.exists(path) else 'does not exist') +
        '; pass npz:FILE with arrays x_<split> and y_<split>.')
  try:
    with open(path, 'rb') as f:
      magic = f.read(6)
    is_zip = zipfile.is_zipfile(path)
  except OSError as e:
    raise UserError(f'Cannot read array file {path}: {e.strerror or e}. Make it '
                    'readable.') from e
  # np.load would return a .npy's array (not an archive), or call any other file pickled
  # data and advise allow_pickle, which this program never sets.
  if not is_zip:
    what = ('a damaged .npz archive (cut short?)' if magic.startswith(b'PK') else
            'not a .npz archive but a single .npy array' if magic == b'\x93NUMPY' else
            'not a .npz archive')
    raise UserError(f'Cannot read array file {path}: it is {what}. Write x_<split> and '
                    'y_<split> into one file with numpy.savez(path, x_train=..., y_train=...).')
  try:
    return np.load(path, allow_pickle=False)
  except _READ_ERRORS as e:
    raise UserError(f'Cannot read array file {path}: {str(e).rstrip(".")}. It must be a .npz '
                    'written by numpy.savez with arrays x_<split> and y_<split>.') from e


def _array(f, path: str, key: str) -> np.ndarray:
  """Array `key` of the open .npz `f`, its header checked before its data is read."""
  try:
    member = key + '.npy' if key + '.npy' in f.zip.namelist() else key
    with f.zip.open(member) as fp:
      version = np.lib.format.read_magic(fp)
      read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                     np.lib.format.read_array_header_2_0)
      shape, _, dtype = read_header(fp)
    size = f.zip.getinfo(member).file_size
  except _READ_ERRORS as e:
    raise UserError(f'Cannot read {key} of array file {path}: {e}. Write the file again with '
                    'numpy.savez.') from e
  if dtype.hasobject:
    raise UserError(f'{path}: {key} is an array of Python objects, which is not read (it '
                    'would need pickle); store numbers, e.g. np.stack(list_of_images) or '
                    'np.asarray(labels, np.int64).')
  if math.prod(shape) * dtype.itemsize > size:
    raise UserError(f'{path}: {key} claims shape {shape} of {dtype}, more bytes than the file '
                    'holds; the file is damaged. Write it again with numpy.savez.')
  if key.startswith('x_') and len(shape) >= 3 and shape[1] * shape[2] > checks.MAX_IMAGE_PIXELS:
    raise UserError(f'{path}: {key} holds images of {shape[1]} x {shape[2]} pixels; at most '
                    f'{checks.MAX_IMAGE_PIXELS} pixels an image are read. Store them smaller.')
  try:
    return f[key]
  except _READ_ERRORS as e:
    raise UserError(f'Cannot read {key} of array file {path}: {e}. Write the file again with '
                    'numpy.savez.') from e


def _images(x: np.ndarray, path: str, split: str) -> np.ndarray:
  """x as N x H x W x C, with advice for the layouts it is often found in."""
  key = f'x_{split}'
  if x.ndim == 3:
    return x[..., None]
  if x.ndim == 4 and x.shape[-1] in (1, 3):
    return x
  if x.ndim == 2 and x.shape[1] > 1 and math.isqrt(x.shape[1]) ** 2 == x.shape[1]:
    side = math.isqrt(x.shape[1])
    fix = f'flattened images? Store them as N x H x W, e.g. x.reshape(-1, {side}, {side})'
  elif x.ndim == 4 and x.shape[1] in (1, 3):
    fix = 'channels first? Store them channels last: np.moveaxis(x, 1, -1)'
  elif x.ndim == 4 and x.shape[-1] == 4:
    fix = 'RGBA? Keep the colours: x[..., :3]'
  else:
    fix = 'grayscale or RGB images'
  raise UserError(f'{path}: {key} has shape {x.shape} and dtype {x.dtype}; it must be N x H '
                  f'x W or N x H x W x C with C = 1 or 3 ({fix}).')


sources.register(sources.Kind(
    prefix='npz', doc='a NumPy array file with x_<split> and y_<split>',
    splits=splits, read=read, fingerprint=fingerprint,
    layout='Store it as arrays x_<split> and y_<split>.', example=example))
