"""folder:PATH, an image folder laid out as TFDS's `ImageFolder` expects:
PATH/<split>/<label>/<image>.{png,jpg,jpeg,bmp,gif,tif,tiff}; labels are the sorted names of
the label directories over all splits.

TFDS's own `ImageFolder` decodes through TensorFlow, which this project does not depend on,
so the images are read with PIL.
"""

from __future__ import annotations

import os

import numpy as np

from icl_jax.data import sources
from icl_jax.errors import UserError

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff')
# PIL modes that are one channel of intensities; everything else is read as RGB.
_GRAY_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'F')


def splits(path: str) -> list[str]:
  _check_dir(path)
  return sorted(e.name for e in os.scandir(path) if e.is_dir())


def fingerprint(path: str) -> str:
  return sources.file_stats([os.path.join(path, rel) for rel in sorted(_image_files(path))])


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


def read(root: str, split: str,
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


sources.register(sources.Kind(
    prefix='folder', doc='an image folder, PATH/<split>/<label>/<image>.png|jpg|...',
    splits=splits, read=read, fingerprint=fingerprint,
    layout='Put its images under PATH/<split>/<label>/.',
    short_name=lambda path: os.path.basename(path.rstrip(os.sep)) or path))
