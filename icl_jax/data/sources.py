"""Dataset sources: what a dataset argument names. One file registers each kind.

A dataset argument (`config.data.dataset`, `config.eval.datasets`, `icl-eval --datasets`)
is a TFDS name (`digits`, `mnist`, `NAME/CONFIG:VERSION`: TFDS's own, icl_jax/data/tfds_source.py),
or `PREFIX:PATH` for a registered file kind:

  folder:PATH  an image folder, PATH/<split>/<label>/<image> (folder.py)
  npz:PATH     a NumPy array file with x_<split> and y_<split> (npz.py)

A kind is one `register(Kind(...))` call in its own module: the package imports every
module in it (and plugins, icl_jax/plugins.py), so a new kind is one file. Everything after
reading (grayscale, resize, normalise, the cache keyed by the kind's fingerprint) is
loading.py's, the same for every kind. What any kind's `read` returns is checked by one
function, checks.split (numeric, finite, varying images; integer labels in range), so a new
kind gets those checks without writing them; its own file checks what only its format can
get wrong, before decoding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Callable

import numpy as np

from icl_jax.data import checks
from icl_jax.errors import UserError

# Part of every cache directory's key: bump it when checks.split refuses more, so that a
# split cached before (by code that let it through) is read and checked anew.
_CHECKS_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Kind:
  prefix: str  # 'folder': arguments `folder:PATH`.
  doc: str  # What PATH is, in one line (error messages, the docs).
  splits: Callable[[str], list[str]]  # PATH -> its split names; UserError if unreadable.
  # (PATH, split, image_shape) -> (images_NxHxWxC, labels_N, num_classes): numeric
  # images, C = 1 or 3; images of one size are returned as they are (loading.py resizes).
  # Checked by checks.split: finite, varying, integer labels in [0, num_classes).
  read: Callable[[str, str, tuple[int, int]], tuple[np.ndarray, np.ndarray, int]]
  # PATH -> a string that changes whenever the data does (e.g. its files' sizes and
  # modification times): the cache is keyed by it.
  fingerprint: Callable[[str], str]
  layout: str  # How to lay out a split that is missing, e.g. 'Put its images under ...'.
  # The short name from PATH (tables, figures, TensorBoard tags); default: its stem.
  short_name: Callable[[str], str] | None = None
  # (PATH, split, i) -> how messages name image i of a split (its file; `x_train[i]`).
  example: Callable[[str, str, int], str] | None = None


_KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
  if not re.fullmatch(r'[a-z][a-z0-9_]*', kind.prefix):
    raise ValueError(f'A dataset source prefix is lowercase letters, digits and _: '
                     f'{kind.prefix!r}.')
  if kind.prefix in _KINDS and _KINDS[kind.prefix] is not kind:
    raise ValueError(f'Two dataset sources register the prefix {kind.prefix!r}.')
  _KINDS[kind.prefix] = kind
  return kind


def kinds() -> dict[str, Kind]:
  return dict(_KINDS)


@dataclasses.dataclass(frozen=True)
class Source:
  """A parsed `PREFIX:PATH` argument."""
  kind: Kind
  path: str  # Absolute, user-expanded.

  @property
  def spec(self) -> str:
    return f'{self.kind.prefix}:{self.path}'

  @property
  def name(self) -> str:
    """Short name for tables, figures and TensorBoard tags."""
    if self.kind.short_name is not None:
      return self.kind.short_name(self.path)
    base = os.path.basename(self.path.rstrip(os.sep)) or self.path
    return os.path.splitext(base)[0]

  def check(self, split: str) -> None:
    """UserError unless the source exists, is readable and holds `split`."""
    available = self.kind.splits(self.path)
    if split not in available:
      raise UserError(f'Dataset {self.spec} has no split {split!r}; it has '
                      f'{", ".join(available) or "none"}. {self.kind.layout}')

  def cache_dir(self) -> str:
    """Where, under the cache root, this source's preprocessed splits go: keyed by its
    fingerprint, so an edited source is never served from a stale cache."""
    stem = re.sub(r'[^A-Za-z0-9_.-]', '_', self.name)
    h = hashlib.sha256(f'{self.kind.prefix}\0{self.path}\0c{_CHECKS_VERSION}\0'.encode())
    h.update(self.kind.fingerprint(self.path).encode())
    return os.path.join(self.kind.prefix, f'{stem}-{h.hexdigest()[:12]}')

  def read(self, split: str,
           image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
    """(images_NxHxWxC, labels_N int32, num_classes) of `split`, checked (checks.split)."""
    images_NxHxWxC, labels_N, num_classes = self.kind.read(self.path, split, image_shape)
    example = None
    if self.kind.example is not None:
      example = lambda i: self.kind.example(self.path, split, i)
    return checks.split(images_NxHxWxC, labels_N, num_classes, self.where(split), example)

  def where(self, split: str) -> str:
    """How messages name one split of this source."""
    return f'{self.spec}, split {split!r}'


def parse(spec: str) -> Source | None:
  """The Source a dataset argument names, or None for a TFDS name."""
  prefix, sep, path = spec.partition(':')
  if not sep or prefix not in _KINDS:
    return None
  if not path:
    raise UserError(f'Dataset {spec!r} names no path; write {prefix}:PATH.')
  return Source(_KINDS[prefix], os.path.abspath(os.path.expanduser(path)))


def file_stats(paths: list[str]) -> str:
  """The usual fingerprint: each file's path, size and modification time."""
  h = hashlib.sha256()
  for path in paths:
    st = os.stat(path)
    h.update(f'{path}\0{st.st_size}\0{st.st_mtime_ns}\0'.encode())
  return h.hexdigest()
