"""npz:PATH, a NumPy .npz holding x_<split> (N x H x W, or N x H x W x C with C = 1 or 3)
and y_<split> (N integer labels in [0, num_classes)) per split, the layout of Keras's
mnist.npz; num_classes is the largest label of any split plus one.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from icl_jax.data import sources
from icl_jax.errors import UserError


def splits(path: str) -> list[str]:
  with _open_npz(path) as f:
    return sorted(k[2:] for k in f.files if k.startswith('x_') and 'y_' + k[2:] in f.files)


def fingerprint(path: str) -> str:
  return sources.file_stats([path])


def read(path: str, split: str,
         image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
  del image_shape  # One size: loading.py resizes.
  return _read_npz(path, split)


def _open_npz(path: str):
  if not os.path.isfile(path):
    raise UserError(f'Array file {path} does not exist' + (
        ' (it is a directory; use folder:PATH for an image folder)' if os.path.isdir(path)
        else '') + '; pass npz:FILE with arrays x_<split> and y_<split>.')
  try:
    return np.load(path, allow_pickle=False)
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise UserError(f'Cannot read array file {path}: {e}. It must be a .npz written by '
                    'numpy.savez with arrays x_<split> and y_<split>.') from e


def _read_npz(path: str, split: str) -> tuple[np.ndarray, np.ndarray, int]:
  with _open_npz(path) as f:
    try:
      x, y = f['x_' + split], f['y_' + split]
      label_max = max(int(f[k].max(initial=-1)) for k in f.files if k.startswith('y_'))
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
      raise UserError(f'Cannot read array file {path}: {e}. Write it again with '
                      'numpy.savez.') from e
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or x.shape[-1] not in (1, 3) or not np.issubdtype(x.dtype, np.number):
    raise UserError(f'{path}: x_{split} has shape {x.shape} and dtype {x.dtype}; it must be '
                    'numeric N x H x W (grayscale) or N x H x W x C with C = 1 or 3.')
  if (y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer)
      or (y.size and y.min() < 0)):
    raise UserError(f'{path}: y_{split} has shape {y.shape} and dtype {y.dtype}; it must be '
                    f'{x.shape[0]} integer labels >= 0, one per image of x_{split}.')
  if label_max < 1:
    raise UserError(f'{path}: every label is {label_max}; a classification dataset needs at '
                    'least 2 classes (labels 0 and 1).')
  return x, y.astype(np.int32), label_max + 1


sources.register(sources.Kind(
    prefix='npz', doc='a NumPy array file with x_<split> and y_<split>',
    splits=splits, read=read, fingerprint=fingerprint,
    layout='Store it as arrays x_<split> and y_<split>.'))
