"""The contract of a dataset source's `Kind.read`, checked on what any kind returns.

Every file kind (folder:, npz:, a plugin's) returns (images_NxHxWxC, labels_N, num_classes).
`Source.read` passes them through `split` before anything is preprocessed or cached, so a value
that would make training diverge (NaN, inf, images that do not vary) or a label the model's
head cannot hold is one UserError naming the source, the split and the image, with the fix,
instead of "Training diverged ... lower config.train.lr" minutes later. What only one format
can get wrong (bit depths, decode limits, symlinks, .npz headers) is checked in the kind's
own file before decoding; `class_count` is for kinds whose labels are numbers the user chose.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from icl_jax.errors import UserError

INT32_MAX = 2**31 - 1
# Pixels (H * W) of one image above which a kind refuses it before decoding (a file's header
# says its size): 8192 x 8192. Larger images are photographs far beyond what any image_shape
# here needs, or a crafted header ("decompression bomb") that would exhaust memory.
MAX_IMAGE_PIXELS = 2**26
# Largest magnitude accepted before preprocessing: float32 holds 3.4e38, and resizing and
# normalising add up neighbouring values, so leave headroom.
MAX_MAGNITUDE = 1e30
# Smallest spread (max - min) of a split's values that z-normalising in float32 can divide
# by without overflowing: the std of a split of M values is at least spread / sqrt(2 M).
MIN_SPREAD = 1e-30


def split(images_NxHxWxC, labels_N, num_classes, where: str,
          example: Callable[[int], str] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
  """(images, labels as int32, num_classes) of one split, or UserError.

  where: the source and split, e.g. "npz:/data/a.npz, split 'train'".
  example: i -> how a message names image i (its file, `x_train[i]`).
  """
  example = example or (lambda i: f'image {i}')
  # Layout before values: a file whose labels do not match its images is named for that.
  _check_layout(images_NxHxWxC, where)
  labels_N = labels(labels_N, where, num_images=images_NxHxWxC.shape[0])
  num_classes = _num_classes(num_classes, where)
  _label_range(labels_N, num_classes, where, example)
  _check_values(images_NxHxWxC, where, example)
  return images_NxHxWxC, labels_N.astype(np.int32), num_classes


def _check_layout(images_NxHxWxC, where: str) -> None:
  """UserError unless the images are a numeric array N x H x W x C, C = 1 or 3, N >= 1."""
  if not isinstance(images_NxHxWxC, np.ndarray):
    raise UserError(f'{where}: the images are a {type(images_NxHxWxC).__name__}; a dataset '
                    'source returns a numpy array N x H x W x C. Fix the source.')
  _check_numeric(images_NxHxWxC.dtype, where, 'the images', 'x.astype(np.uint8) * 255')
  shape = images_NxHxWxC.shape
  if len(shape) != 4 or shape[-1] not in (1, 3):
    raise UserError(f'{where}: the images have shape {shape}; they must be N x H x W x C with '
                    'C = 1 or 3 (grayscale or RGB).')
  if shape[0] == 0:
    raise UserError(f'{where}: the split holds no images. Add images to it, or pick another '
                    'split (config.data.train_split, config.data.eval_split).')
  if shape[1] * shape[2] == 0 or shape[1] * shape[2] > MAX_IMAGE_PIXELS:
    raise UserError(f'{where}: the images are {shape[1]} x {shape[2]} pixels; each must hold '
                    f'between 1 and {MAX_IMAGE_PIXELS} pixels. Store them at a usable size.')


def _check_numeric(dtype: np.dtype, where: str, what: str, bool_fix: str) -> None:
  """UserError unless `dtype` is of real numbers (integers or floats, not booleans)."""
  if dtype.kind == 'b':
    raise UserError(f'{where}: {what} are booleans; store numbers instead '
                    f'(e.g. {bool_fix}).')
  if dtype.kind == 'c':
    raise UserError(f'{where}: {what} are complex numbers; store real values '
                    '(e.g. x.real or np.abs(x)).')
  if dtype.kind not in 'iuf':
    raise UserError(f'{where}: {what} have dtype {dtype}, not numbers; store them as '
                    'integers or floats (e.g. uint8 or float32).')


def _check_values(images_NxHxWxC: np.ndarray, where: str,
                  example: Callable[[int], str]) -> None:
  """NaN, inf, magnitudes float32 cannot normalise, and a split that does not vary."""
  n = images_NxHxWxC.shape[0]
  if images_NxHxWxC.dtype.kind == 'f':
    finite_N = np.isfinite(images_NxHxWxC).reshape(n, -1).all(axis=1)
    if not finite_N.all():
      bad = np.flatnonzero(~finite_N)
      what = 'NaN' if np.isnan(images_NxHxWxC[bad[0]]).any() else 'an infinite value'
      raise UserError(
          f'{where}: {example(int(bad[0]))} holds {what} ({len(bad)} of {n} images hold values '
          'that are not numbers); training on them diverges. Repair or drop those images '
          '(e.g. keep = np.isfinite(x).reshape(len(x), -1).all(1); x, y = x[keep], y[keep]).')
  # Python numbers: np.abs of int64's minimum overflows, and uint64 - int64 is a float.
  lo, hi = images_NxHxWxC.min().item(), images_NxHxWxC.max().item()
  if max(abs(lo), abs(hi)) > MAX_MAGNITUDE:
    i = int(np.argmax(np.abs(images_NxHxWxC.reshape(n, -1).astype(np.float64)).max(axis=1)))
    raise UserError(f'{where}: {example(i)} holds {hi if abs(hi) >= abs(lo) else lo:.3g}; '
                    f'values beyond +-{MAX_MAGNITUDE:.0e} cannot be normalised in float32. '
                    'Rescale the images (e.g. x / np.abs(x).max()).')
  spread = float(np.float32(hi)) - float(np.float32(lo))  # As preprocessing sees them.
  if spread == 0:
    raise UserError(f'{where}: every value of every image is {lo:.6g}: the split does not '
                    'vary, and z-normalising it would divide by 0 (training would diverge). '
                    'Check that the images were written correctly.')
  if spread < MIN_SPREAD:
    raise UserError(f'{where}: the values vary by only {spread:.3g}, too little to normalise '
                    'in float32; rescale them (e.g. (x - x.mean()) / x.std() in float64).')


def labels(labels_N, where: str, num_images: int | None = None) -> np.ndarray:
  """The labels as uint64 (they are >= 0, and no huge label wraps), if they are integers
  >= 0, one per image (a column, N x 1 as Keras stores them, is read as N labels); else
  UserError naming the fix."""
  if not isinstance(labels_N, np.ndarray):
    raise UserError(f'{where}: the labels are a {type(labels_N).__name__}; a dataset source '
                    'returns a numpy array of N integer labels. Fix the source.')
  y = labels_N
  if y.ndim == 2 and y.shape[1] == 1:
    y = y[:, 0]
  if y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind in 'biuf' and y.size and (
      np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
    raise UserError(f'{where}: the labels are one-hot, shape {y.shape}; store class indices '
                    'instead (y.argmax(1)).')
  _check_label_dtype(y, where)
  if y.ndim != 1 or (num_images is not None and y.shape[0] != num_images):
    want = '' if num_images is None else f'{num_images} '
    raise UserError(f'{where}: the labels have shape {labels_N.shape}; they must be {want}'
                    'integer labels, one per image.')
  if y.size and y.min() < 0:
    raise UserError(f'{where}: a label is {y.min()}; labels are class indices, integer '
                    'labels >= 0 (0 .. C-1). Relabel them from 0.')
  return y.astype(np.uint64)


def _check_label_dtype(y: np.ndarray, where: str) -> None:
  if y.dtype.kind in 'USO':
    sample = ', '.join(repr(v) for v in y.ravel()[:2].tolist())
    raise UserError(f'{where}: the labels are strings or objects ({sample}, ...); store class '
                    'indices 0 .. C-1 instead, with one mapping for every split (e.g. '
                    'np.searchsorted(names, y) with names = np.unique of all splits\' labels).')
  if y.dtype.kind == 'f':
    finite = np.isfinite(y).all()
    if finite and (y == np.round(y)).all():
      raise UserError(f'{where}: the labels are floats ({y.dtype}); store them as integers '
                      '(y.astype(np.int64)).')
    raise UserError(f'{where}: the labels are floats that are not whole numbers (or not '
                    'finite); labels are integer class indices 0 .. C-1.')
  if y.dtype.kind == 'b':
    raise UserError(f'{where}: the labels are booleans; store them as integer class indices '
                    '(y.astype(np.int64)).')
  if y.dtype.kind not in 'iu':
    raise UserError(f'{where}: the labels have dtype {y.dtype}; labels are integer class '
                    'indices 0 .. C-1.')


def _num_classes(num_classes, where: str) -> int:
  if (not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool)
      or not 2 <= num_classes <= INT32_MAX):
    if isinstance(num_classes, (int, np.integer)) and num_classes < 2:
      raise UserError(f'{where}: every label is {max(int(num_classes) - 1, 0)}; a '
                      'classification dataset needs at least 2 classes (labels 0 and 1).')
    raise UserError(f'{where}: the source gives {num_classes!r} classes; it must be an '
                    f'integer from 2 to {INT32_MAX}. Fix the source.')
  return int(num_classes)


def _label_range(y_N: np.ndarray, num_classes: int, where: str,
                 example: Callable[[int], str]) -> None:
  if y_N.max() >= num_classes:
    i = int(np.argmax(y_N))
    raise UserError(f'{where}: {example(i)} has label {y_N[i]}, but the dataset has '
                    f'{num_classes} classes (labels 0 .. {num_classes - 1}). Fix the source.')
  present = np.unique(y_N)
  if len(present) < 2:
    raise UserError(f'{where}: every label of the split is {present[0]}; each split needs '
                    'images of at least 2 classes to make a classification task.')


def class_count(labels_by_split: dict[str, np.ndarray], where: str) -> int:
  """C for labels that must be exactly 0 .. C-1 over all splits (a class that never occurs
  would be an output of the model's head that no example ever trains); else UserError."""
  # `labels`'s uint64: one dtype, so np.concatenate never promotes to float64.
  present = np.unique(np.concatenate([y.ravel() for y in labels_by_split.values()]))
  if not len(present):
    raise UserError(f'{where}: no split holds any image or label; store labelled images '
                    'as x_<split> and y_<split>.')
  if len(present) < 2:
    raise UserError(f'{where}: every label is {present[0]}; a classification dataset needs '
                    'at least 2 classes (labels 0 and 1).')
  top = int(present[-1])  # A Python int: top + 1 must not wrap.
  if top != len(present) - 1:
    missing = next(i for i, v in enumerate(present) if v != i)
    raise UserError(
        f'{where}: the labels are not 0 .. C-1: {len(present)} distinct labels from '
        f'{present[0]} to {top} ({missing} is missing), which would make a {top + 1}-class '
        f'head with {top + 1 - len(present)} classes never seen. Relabel them '
        f'0 .. {len(present) - 1} with one mapping for every split '
        '(e.g. y = np.searchsorted(np.unique(all labels), y)).')
  return len(present)


def broken_link(path: str) -> str | None:
  """Why `path` cannot be opened, if it is a symlink to nothing or a symlink loop."""
  if os.path.islink(path) and not os.path.exists(path):
    try:
      target = os.readlink(path)
    except OSError:
      target = '?'
    return (f'{path} is a symlink to {target}, which does not exist (or is a symlink loop); '
            'point it at a real file or remove the link')
  return None
