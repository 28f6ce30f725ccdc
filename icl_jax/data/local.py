"""Datasets that are files on disk rather than TFDS builders: an image folder or an array file.

A dataset argument (`config.data.dataset`, `icl_jax.evaluate --datasets`) is a TFDS name, or
  folder:PATH  a directory laid out as TFDS's `ImageFolder` expects:
               PATH/<split>/<label>/<image>.{png,jpg,jpeg,bmp,gif,tif,tiff}; labels are the
               sorted names of the label directories over all splits.
  npz:PATH     a NumPy .npz holding x_<split> (N x H x W, or N x H x W x C with C = 1 or 3)
               and y_<split> (N integer labels in [0, num_classes)) per split, the layout of
               Keras's mnist.npz; num_classes is the largest label of any split plus one.

TFDS's own `ImageFolder` decodes through TensorFlow, which this project does not depend on,
so the folder is read with PIL; everything after decoding (grayscale, resize, normalise, the
cache) is `loading`'s, as for a TFDS dataset. The cache of such a dataset is keyed by a
fingerprint of its files (paths, sizes, modification times), so an edited folder or a
replaced array file is never served from a stale cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import zipfile

import numpy as np

from icl_jax.errors import UserError

KINDS = ('folder', 'npz')
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff')
# PIL modes that are one channel of intensities; everything else is read as RGB.
_GRAY_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'F')


@dataclasses.dataclass(frozen=True)
class Source:
  """A parsed `folder:PATH` or `npz:PATH` argument."""

  kind: str
  path: str  # absolute, user-expanded

  @property
  def name(self) -> str:
    """Short name for tables, figures and TensorBoard tags: the folder's or file's stem."""
    base = os.path.basename(self.path.rstrip(os.sep)) or self.path
    return os.path.splitext(base)[0] if self.kind == 'npz' else base


def parse(spec: str) -> Source | None:
  """The Source a dataset argument names, or None for a TFDS name."""
  kind, sep, path = spec.partition(':')
  if not sep or kind not in KINDS:
    return None
  if not path:
    raise UserError(f'Dataset {spec!r} names no path; write {kind}:PATH.')
  return Source(kind, os.path.abspath(os.path.expanduser(path)))


def splits(source: Source) -> list[str]:
  """The split names the source holds; raises UserError if it cannot be read."""
  if source.kind == 'folder':
    _check_dir(source.path)
    return sorted(e.name for e in os.scandir(source.path) if e.is_dir())
  with _open_npz(source.path) as f:
    return sorted(k[2:] for k in f.files if k.startswith('x_') and 'y_' + k[2:] in f.files)


def fingerprint(source: Source) -> str:
  """12 hex digits that change whenever a file of the source does (path, size, mtime)."""
  h = hashlib.sha256(f'{source.kind}\0{source.path}'.encode())
  if source.kind == 'npz':
    st = os.stat(source.path)
    h.update(f'\0{st.st_size}\0{st.st_mtime_ns}'.encode())
  else:
    for rel in sorted(_image_files(source.path)):
      st = os.stat(os.path.join(source.path, rel))
      h.update(f'\0{rel}\0{st.st_size}\0{st.st_mtime_ns}'.encode())
  return h.hexdigest()[:12]


def cache_dir(source: Source) -> str:
  """Where, under the cache root, this source's preprocessed splits go."""
  stem = re.sub(r'[^A-Za-z0-9_.-]', '_', source.name)
  return os.path.join(source.kind, f'{stem}-{fingerprint(source)}')


def read(source: Source, split: str,
         image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
  """(images_NxHxWxC, labels_N int32, num_classes) of one split (`check`ed first).

  Folder images of different sizes are resized to `image_shape` here (with PIL, as they
  cannot be stacked otherwise); images of one size are returned as they are, so that
  `loading` resizes them exactly as it resizes a TFDS dataset.
  """
  if source.kind == 'folder':
    return _read_folder(source.path, split, image_shape)
  return _read_npz(source.path, split)


def check(source: Source, split: str) -> None:
  """Raises UserError unless the source exists, is readable and holds `split`."""
  available = splits(source)
  if split not in available:
    raise UserError(f'Dataset {source.kind}:{source.path} has no split {split!r}; it has '
                    f'{", ".join(available) or "none"}. '
                    + ('Put its images under PATH/<split>/<label>/.' if source.kind == 'folder'
                       else 'Store it as arrays x_<split> and y_<split>.'))


def _check_dir(path: str) -> None:
  if not os.path.exists(path):
    raise UserError(f'Image folder {path} does not exist; lay it out as '
                    'PATH/<split>/<label>/<image>.png and pass folder:PATH.')
  if not os.path.isdir(path):
    raise UserError(f'{path} is a file, not an image folder; use folder:DIR for a directory '
                    'of PATH/<split>/<label>/ images, or npz:FILE for an array file.')


def _image_files(root: str) -> list[str]:
  """Paths relative to `root` of <split>/<label>/<image> files."""
  found = []
  for split in sorted(os.listdir(root)):
    for label in sorted(_subdirs(os.path.join(root, split))):
      label_dir = os.path.join(root, split, label)
      found += [os.path.join(split, label, f) for f in sorted(os.listdir(label_dir))
                if f.lower().endswith(IMAGE_SUFFIXES)]
  return found


def _subdirs(path: str) -> list[str]:
  return [e.name for e in os.scandir(path) if e.is_dir()] if os.path.isdir(path) else []


def _read_folder(root: str, split: str,
                 image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
  # Imported here: only image folders need PIL.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  labels = sorted({label for s in _subdirs(root) for label in _subdirs(os.path.join(root, s))})
  if len(labels) < 2:
    raise UserError(f'Image folder {root} has {len(labels)} label directories; a '
                    'classification dataset needs at least 2 (PATH/<split>/<label>/).')
  paths, y = [], []
  for index, label in enumerate(labels):
    label_dir = os.path.join(root, split, label)
    if os.path.isdir(label_dir):
      names = sorted(f for f in os.listdir(label_dir) if f.lower().endswith(IMAGE_SUFFIXES))
      paths += [os.path.join(label_dir, f) for f in names]
      y += [index] * len(names)
  if not paths:
    raise UserError(f'Image folder {root} has no images in split {split!r} (looked for '
                    f'{", ".join(IMAGE_SUFFIXES)} files under {root}/{split}/<label>/).')
  images = []
  for path in paths:
    try:
      with Image.open(path) as img:
        img.load()
        images.append(img.copy())
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for damaged files
      raise UserError(f'Cannot read image {path}: {e}. Delete or replace that file.') from e
  gray = all(img.mode in _GRAY_MODES for img in images)
  images = [img.convert('F' if img.mode in ('I', 'I;16', 'F') else 'L') if gray
            else img.convert('RGB') for img in images]
  if len({img.size for img in images}) > 1:
    size = (image_shape[1], image_shape[0])  # PIL sizes are (width, height)
    images = [img.resize(size, Image.Resampling.BILINEAR, reducing_gap=None) for img in images]
  arrays = [np.asarray(img) for img in images]
  stacked = np.stack(arrays)
  if stacked.ndim == 3:
    stacked = stacked[..., None]
  return stacked, np.asarray(y, np.int32), len(labels)


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
