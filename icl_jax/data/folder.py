"""folder:PATH, an image folder laid out as TFDS's `ImageFolder` expects:
PATH/<split>/<label>/<image>.{png,jpg,jpeg,bmp,gif,tif,tiff}; labels are the sorted names of
the label directories over all splits. Names starting with '.' are skipped (.ipynb_checkpoints,
macOS's ._* files): they are never a split, a class or an image.

TFDS's own `ImageFolder` decodes through TensorFlow, which this project does not depend on,
so the images are read with PIL. Checked here, before any pixel is decoded: every image
file is a regular file (not a dangling symlink, a symlink loop, a directory or a pipe),
every label directory holds an image in some split (else its class would never be seen),
each image's size from its header is at most checks.MAX_IMAGE_PIXELS, and the images of a
split share one bit depth. Mixed depths are refused, naming a file of each, rather than
rescaled: a 16-bit PNG may hold 16, 12 or 10 significant bits, so no one scale is right,
and read as they are, a 16-bit image is 256 times brighter than an 8-bit one. A folder of one
depth (16-bit PNGs, float TIFFs) is read at its own scale; z-normalising makes it comparable.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from icl_jax.data import checks
from icl_jax.data import sources
from icl_jax.errors import UserError

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff')
# PIL modes of 8-bit images that are one channel of intensities; other 8-bit modes (P,
# RGB, RGBA, CMYK, ...) are read as RGB.
_GRAY_8BIT_MODES = ('1', 'L', 'LA', 'La')


def splits(path: str) -> list[str]:
  _check_dir(path)
  return _subdirs(path)


def fingerprint(path: str) -> str:
  _check_dir(path)
  return sources.file_stats([p for labels in _listing(path).values()
                             for paths in labels.values() for p in paths])


def example(root: str, split: str, i: int) -> str:
  return _split_files(root, split)[0][i]


def _check_dir(path: str) -> None:
  link = checks.broken_link(path)
  if link:
    raise UserError(f'Image folder {link}.')
  if not os.path.exists(path):
    raise UserError(f'Image folder {path} does not exist; lay it out as '
                    'PATH/<split>/<label>/<image>.png and pass folder:PATH.')
  if not os.path.isdir(path):
    raise UserError(f'{path} is a file, not an image folder; use folder:DIR for a directory '
                    'of PATH/<split>/<label>/ images, or npz:FILE for an array file.')


def _entries(path: str) -> list[os.DirEntry]:
  """The entries of directory `path` not starting with '.', sorted by name."""
  try:
    with os.scandir(path) as it:
      return sorted((e for e in it if not e.name.startswith('.')), key=lambda e: e.name)
  except OSError as e:
    raise UserError(f'Cannot list {path}: {e.strerror or e}. Make it a readable '
                    'directory.') from e


def _subdirs(path: str) -> list[str]:
  # is_dir() follows symlinks; a link to nothing or a loop is not a directory.
  return [e.name for e in _entries(path) if e.is_dir()] if os.path.isdir(path) else []


def _listing(root: str) -> dict[str, dict[str, list[str]]]:
  """{split: {label: image paths}}, sorted; UserError for an image name that is not a
  readable regular file (a dangling symlink, a symlink loop, a directory, a pipe)."""
  found = {}
  for split in _subdirs(root):
    found[split] = {}
    for label in _subdirs(os.path.join(root, split)):
      paths = [e.path for e in _entries(os.path.join(root, split, label))
               if e.name.lower().endswith(IMAGE_SUFFIXES)]
      for path in paths:
        if not os.path.isfile(path):
          raise UserError(f'Image folder {root}: ' + (
              checks.broken_link(path) or f'{path} is not a regular file (a directory or a '
              'pipe with an image\'s name); move it out of the folder') + '.')
      found[split][label] = paths
  return found


def _split_files(root: str, split: str) -> tuple[list[str], list[int], list[str]]:
  """(image paths of `split`, their label indices, the label names): by label, then name."""
  listing = _listing(root)
  labels = sorted({label for split_labels in listing.values() for label in split_labels})
  if len(labels) < 2:
    raise UserError(f'Image folder {root} has {len(labels)} label directories; a '
                    'classification dataset needs at least 2 (PATH/<split>/<label>/).')
  for label in labels:
    if not any(split_labels.get(label) for split_labels in listing.values()):
      raise UserError(f'Image folder {root}: the label directory {label!r} holds no images '
                      'in any split, so its class would never be seen. Add images to it, or '
                      'move the directory out of the folder.')
  paths, y = [], []
  for index, label in enumerate(labels):
    names = listing.get(split, {}).get(label, [])
    paths += names
    y += [index] * len(names)
  return paths, y, labels


def read(root: str, split: str,
         image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
  paths, y, labels = _split_files(root, split)
  if not paths:
    raise UserError(f'Image folder {root} has no images in split {split!r} (looked for '
                    f'{", ".join(IMAGE_SUFFIXES)} files under {root}/{split}/<label>/).')
  images = _decode_all(root, split, paths)
  size = (image_shape[1], image_shape[0])  # PIL sizes are (width, height)
  images = _common_form(paths, images,
                        size if len({img.size for img in images}) > 1 else None)
  stacked = np.stack([np.asarray(img) for img in images])
  if stacked.ndim == 3:
    stacked = stacked[..., None]
  return stacked, np.asarray(y, np.int32), len(labels)


def _depth(mode: str) -> str:
  """The bit depth of a PIL mode, in words."""
  if mode.startswith('I;16'):
    return '16-bit'
  return {'I': '32-bit integer', 'F': '32-bit float'}.get(mode, '8-bit')


def _decode_all(root: str, split: str, paths: list[str]) -> list:
  """The decoded PIL images; UserError for an unreadable or oversized one, or a second bit
  depth (checked from the header, before decoding)."""
  # Imported here: only image folders need PIL.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  images, first_of_depth = [], {}
  for path in paths:
    try:
      # PIL warns from 89M pixels on; the limit below refuses those with one line.
      with warnings.catch_warnings():
        warnings.simplefilter('ignore', Image.DecompressionBombWarning)
        img = Image.open(path)
      with img:
        width, height = img.size
        if width * height > checks.MAX_IMAGE_PIXELS:
          raise UserError(f'Image {path} is {width} x {height} pixels; images over '
                          f'{checks.MAX_IMAGE_PIXELS} pixels are refused before decoding. '
                          'Store a smaller copy of it, or move it out of the folder.')
        depth = _depth(img.mode)
        first_of_depth.setdefault(depth, (path, img.mode))
        if len(first_of_depth) > 1:
          raise UserError(_mixed_depths(root, split, first_of_depth))
        img.load()
        images.append(img.copy())
    except UserError:
      raise
    except Image.DecompressionBombError as e:  # PIL's own limit, checked as it opens.
      raise UserError(f'Image {path} is larger than {checks.MAX_IMAGE_PIXELS} pixels '
                      f'({str(e).rstrip(".")}); images that large are refused before '
                      'decoding. Store a smaller copy of it, or move it out of the folder.'
                      ) from e
    # A decoder of untrusted files fails in many ways (OSError, SyntaxError, struct.error,
    # ValueError, ...): each means this file cannot be read as an image.
    except Exception as e:  # pylint: disable=broad-except
      raise UserError(f'Cannot read image {path}: {str(e).rstrip(".")}. Delete or replace '
                      'that file.') from e
  return images


def _mixed_depths(root: str, split: str, first_of_depth: dict) -> str:
  (a, mode_a), (b, mode_b) = list(first_of_depth.values())[:2]
  depth_a, depth_b = _depth(mode_a), _depth(mode_b)
  return (f'Image folder {root}, split {split!r}: images of different bit depths, e.g. {a} '
          f'({depth_a}, mode {mode_a}) and {b} ({depth_b}, mode {mode_b}); read as they are, '
          'their scales differ (a 16-bit image is 256 times brighter than an 8-bit one). Save '
          'them all at one depth, e.g. 8-bit: Image.fromarray((np.asarray(im) >> 8)'
          '.astype(np.uint8)) for a 16-bit image.')


def _common_form(paths: list[str], images: list, size: tuple[int, int] | None) -> list:
  """The images as one PIL mode (L or RGB for 8-bit ones, F for deeper ones), resized to
  `size` (width, height) if given."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  deep = _depth(images[0].mode) != '8-bit'  # One depth (_decode_all); deeper modes are gray.
  mode = 'L' if all(img.mode in _GRAY_8BIT_MODES for img in images) else 'RGB'
  converted = []
  for path, img in zip(paths, images):
    try:
      img = Image.fromarray(np.asarray(img).astype(np.float32)) if deep else img.convert(mode)
      converted.append(img if size is None else
                       img.resize(size, Image.Resampling.BILINEAR, reducing_gap=None))
    except Exception as e:  # pylint: disable=broad-except
      # As in _decode_all: a mode PIL cannot convert (LAB, a rare TIFF layout, ...).
      raise UserError(f'Cannot read image {path} (mode {img.mode}): {e}. Save it as an '
                      'ordinary 8-bit grayscale or RGB image.') from e
  return converted


sources.register(sources.Kind(
    prefix='folder', doc='an image folder, PATH/<split>/<label>/<image>.png|jpg|...',
    splits=splits, read=read, fingerprint=fingerprint,
    layout='Put its images under PATH/<split>/<label>/.',
    short_name=lambda path: os.path.basename(path.rstrip(os.sep)) or path, example=example))
