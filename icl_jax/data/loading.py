"""Loads one split of an image classification dataset as preprocessed arrays.

Every dataset, the embedded `digits` one included, goes through TFDS: the split
is read from an array_record data source (random access, no TensorFlow, no
tf.data), converted to grayscale, resized, flattened and z-normalised. The
result is cached as one .npz per (dataset version, split, image shape) under
`<data_dir>/icl_jax_cache/`, because decoding MNIST-size datasets record by
record takes far longer than reading the arrays back. Where the pixels before
normalisation are integers in [0, 255], the cache holds them as uint8 plus the
split's mean and std, and the devices as uint8 plus the normalised value of each
level (see compact.py).
"""

import dataclasses
import hashlib
import logging
import os
import sys
import tempfile
import zipfile

import jax
import numpy as np
from jax.experimental import multihost_utils

from icl_jax.data import compact
from icl_jax.data import sources
from icl_jax.data import tfds_source
from icl_jax.errors import UserError

CACHE_DIRNAME = 'icl_jax_cache'
# Part of every cache file name: bump it whenever `preprocess` changes, so
# that caches written by older code are never read. 2: uint8 pixels + mean and
# std where that is exact (the float32 values are unchanged).
_PREPROCESSING_VERSION = 2
# A split's std below this fraction of its mean's magnitude is float32 rounding, not
# variation (16 units in the last place).
_MIN_RELATIVE_STD = 16 * float(np.finfo(np.float32).eps)
# ITU-R BT.601 luma weights.
_LUMA_WEIGHTS_C = np.array([0.299, 0.587, 0.114], np.float32)


# eq=False: a generated __eq__/__hash__ would compare arrays elementwise and
# fail; datasets compare by identity.
@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """One preprocessed split of an image classification dataset.

  Attributes:
    x_NxD: float32 grayscale images resized to `image_shape`, flattened
      row-major (D = H * W) and z-normalised by one scalar mean and std over
      all examples and pixels of this split.
    y_N: int32 class labels in [0, num_classes).
    num_classes: number of classes of the dataset's `label` feature.
    image_shape: (H, W) the images were resized to.
    name: the dataset argument passed to `load`: a TFDS name, folder:PATH or npz:PATH.
    split: TFDS split name, as passed to `load`.
    pixels_NxD: the values before normalisation as uint8, where they are
      integers in [0, 255]; None where that would lose information (resized
      or RGB images). x_NxD == compact.level_table(mean, std)[pixels_NxD].
    mean, std: float32 scalars x_NxD was normalised with.
  """

  x_NxD: np.ndarray
  y_N: np.ndarray
  num_classes: int
  image_shape: tuple[int, int]
  name: str
  split: str
  pixels_NxD: np.ndarray | None = None
  mean: np.float32 = np.float32(0.0)
  std: np.float32 = np.float32(1.0)

  @property
  def short_name(self) -> str:
    """The name for tables, figures and tags: the TFDS name, or a folder's or file's stem."""
    source = sources.parse(self.name)
    return self.name if source is None else source.name

  @property
  def num_features(self) -> int:
    return self.image_shape[0] * self.image_shape[1]

  def compact_x(self) -> compact.Pixels | np.ndarray:
    """x_NxD in the form to place on devices: compact.Pixels (uint8, a quarter of the
    bytes) where `pixels_NxD` holds it exactly, else x_NxD itself. The sampler reads
    either (it indexes rows; a Pixels looks up the normalised values of the rows it
    gathers)."""
    if self.pixels_NxD is None:
      return self.x_NxD
    return compact.Pixels(self.pixels_NxD, compact.level_table(self.mean, self.std))

  def check_seq_len(self, seq_len: int) -> None:
    """Raises UserError if an episode of `seq_len` examples is longer than this split."""
    if seq_len > self.x_NxD.shape[0]:
      raise UserError(
          f'config.task.seq_len={seq_len} is longer than the {self.x_NxD.shape[0]} examples '
          f'of {self.name}:{self.split}; use a shorter sequence.')


def default_data_dir() -> str:
  """Returns $TFDS_DATA_DIR if set, else ~/tensorflow_datasets (TFDS's own)."""
  return os.path.expanduser(
      os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets'
  )


def load(
    name: str,
    split: str,
    image_shape: tuple[int, int],
    data_dir: str | None = None,
) -> Dataset:
  """Loads a split through TFDS, preprocessed, from the cache when possible.

  `digits` is prepared into `data_dir` on first use (offline); every other
  dataset must already be prepared there in array_record format. With several
  processes (multi-host), every process must call this: process 0 loads
  first, the others after it.

  Args:
    name: TFDS dataset name, e.g. 'digits', 'mnist', 'cifar10'; or `folder:PATH` /
      `npz:PATH` for images on disk (see local.py).
    split: a split name of the dataset, e.g. 'train' or 'test' (no slicing).
    image_shape: (H, W) to resize the images to.
    data_dir: TFDS data dir; None means `default_data_dir()`.

  Returns:
    The preprocessed split.

  Raises:
    UserError: bad `image_shape`, unknown dataset or split, dataset not
      prepared or not in array_record format, or not an image classification
      dataset.
  """
  if jax.process_count() == 1:
    return _load(name, split, image_shape, data_dir)
  # Processes sharing a data dir would all prepare `digits` and write the
  # cache at once, and race on TFDS's rename of its incomplete directory.
  # Process 0 goes first; the others then read what it wrote (or, on a disk
  # of their own, prepare it there). The barrier is reached even when process
  # 0 fails, so the others raise their own error instead of hanging.
  barrier = f'icl_jax.data.load:{name}:{split}'
  if jax.process_index() == 0:
    try:
      return _load(name, split, image_shape, data_dir)
    finally:
      multihost_utils.sync_global_devices(barrier)
  multihost_utils.sync_global_devices(barrier)
  return _load(name, split, image_shape, data_dir)


def _load(
    name: str,
    split: str,
    image_shape: tuple[int, int],
    data_dir: str | None,
) -> Dataset:
  """`load` in one process."""
  image_shape = _check_image_shape(image_shape)
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  if os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise UserError(f'The TFDS data dir {data_dir} is a file, not a directory. Point '
                    'TFDS_DATA_DIR, config.data.data_dir or --data_dir at a directory.')
  source = sources.parse(name)
  if source is not None:
    return _load_local(source, name, split, image_shape, data_dir)
  builder = tfds_source.prepared_builder(name, data_dir)
  if split not in builder.info.splits:
    raise UserError(
        f'Dataset {name!r} has no split {split!r}; available splits: '
        f'{", ".join(sorted(builder.info.splits))}. Use one of those.'
    )
  num_classes = tfds_source.check_features(builder, name)

  height, width = image_shape
  # Keyed by the prepared files themselves: a dataset prepared again under the same name
  # and version (a fixed builder, a changed split) never gets the old arrays.
  cache_path = os.path.join(
      data_dir,
      CACHE_DIRNAME,
      builder.info.full_name,  # name[/config]/version
      f'{split}-{height}x{width}-p{_PREPROCESSING_VERSION}-{_fingerprint(builder.data_dir)}.npz',
  )
  arrays = _read_cache(cache_path)
  if arrays is None:
    try:
      images_NxHxWxC, y_N = tfds_source.read_split(builder, split)
    except (OSError, RuntimeError, ValueError, KeyError) as e:  # array_record's errors
      builder = tfds_source.damaged(builder, name, data_dir, f'{split} split unreadable: {e}')
      try:
        images_NxHxWxC, y_N = tfds_source.read_split(builder, split)
      except (OSError, RuntimeError, ValueError, KeyError) as again:  # Damaged as it is made.
        raise UserError(f'The embedded digits dataset in {builder.data_dir} is unreadable '
                        f'even when prepared anew ({again}); check that disk.') from None
      cache_path = _with_fingerprint(cache_path, _fingerprint(builder.data_dir))
    arrays = dict(_preprocess(images_NxHxWxC, image_shape, f'{name}, split {split!r}'),
                  y_N=y_N)
    _write_npz_atomically(cache_path, **arrays)
    _remove_stale(cache_path)
  return _dataset(arrays, num_classes, image_shape, name, split)


def _remove_stale(cache_path: str) -> None:
  """Deletes the caches of the same split and shape derived from earlier preparations."""
  directory, name = os.path.split(cache_path)
  prefix = name[:-len('.npz')].rpartition('-')[0]
  try:
    for other in os.listdir(directory):
      if other != name and (other == prefix + '.npz' or
                            (other.startswith(prefix + '-') and other.endswith('.npz'))):
        os.remove(os.path.join(directory, other))
  except OSError:
    pass  # Read-only or shared: stale files are never read, only kept.


def _fingerprint(directory: str) -> str:
  """12 hex digits of the names, sizes and modification times of a directory's files."""
  h = hashlib.sha256()
  for entry in sorted(os.scandir(directory), key=lambda e: e.name):
    if entry.is_file():
      st = entry.stat()
      h.update(f'{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\0'.encode())
  return h.hexdigest()[:12]


def _with_fingerprint(cache_path: str, fingerprint: str) -> str:
  stem, _, _ = cache_path[:-len('.npz')].rpartition('-')
  return f'{stem}-{fingerprint}.npz'


def _read_cache(cache_path: str) -> dict[str, np.ndarray] | None:
  """The arrays of a cache file; None if there is none, or it is damaged (then it is
  deleted, with a warning, and rebuilt by the caller: it is ours and derived)."""
  if not os.path.exists(cache_path):
    return None
  try:
    with np.load(cache_path) as cache:
      arrays = {k: cache[k] for k in cache.files}
    if 'y_N' not in arrays or not ({'x_NxD', 'pixels_NxD'} & set(arrays)):
      raise ValueError('arrays missing')
    return arrays
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    print(f'warning: the preprocessed cache {cache_path} is damaged ({e}); rebuilding it.',
          file=sys.stderr, flush=True)
    try:
      os.remove(cache_path)
    except OSError:
      pass
    return None


def _load_local(source: sources.Source, name: str, split: str,
                image_shape: tuple[int, int], data_dir: str) -> Dataset:
  """`_load` of a file source (sources.py), cached under its fingerprint. What the source
  reads is checked (sources.Source.read) before it is preprocessed or cached."""
  source.check(split)
  height, width = image_shape
  cache_path = os.path.join(data_dir, CACHE_DIRNAME, source.cache_dir(),
                            f'{split}-{height}x{width}-p{_PREPROCESSING_VERSION}.npz')
  arrays = _read_cache(cache_path)
  if arrays is not None and 'num_classes' in arrays:
    num_classes = int(arrays.pop('num_classes'))
  else:
    images_NxHxWxC, y_N, num_classes = source.read(split, image_shape)
    arrays = dict(_preprocess(images_NxHxWxC, image_shape, source.where(split)), y_N=y_N)
    _write_npz_atomically(cache_path, **arrays, num_classes=np.int32(num_classes))
  return _dataset(arrays, num_classes, image_shape, name, split)


def from_images(
    images_NxHxWxC: np.ndarray,
    y_N: np.ndarray,
    num_classes: int,
    image_shape: tuple[int, int],
    name: str,
    split: str,
) -> Dataset:
  """A Dataset from images in memory, preprocessed as `load` does (benchmarks, tests)."""
  arrays = dict(_preprocess(images_NxHxWxC, _check_image_shape(image_shape),
                            f'{name}, split {split!r}'),
                y_N=np.asarray(y_N, np.int32))
  return _dataset(arrays, num_classes, tuple(image_shape), name, split)


def _dataset(arrays: dict[str, np.ndarray], num_classes: int,
             image_shape: tuple[int, int], name: str, split: str) -> Dataset:
  """The Dataset of `_preprocess`'s arrays (+ y_N), as cached."""
  mean, std = np.float32(arrays['mean']), np.float32(arrays['std'])
  pixels_NxD = arrays.get('pixels_NxD')
  x_NxD = (arrays['x_NxD'] if pixels_NxD is None else
           compact.level_table(mean, std)[pixels_NxD])
  return Dataset(x_NxD=x_NxD, y_N=arrays['y_N'], num_classes=num_classes,
                 image_shape=image_shape, name=name, split=split,
                 pixels_NxD=pixels_NxD, mean=mean, std=std)


def preprocess(
    images_NxHxWxC: np.ndarray, image_shape: tuple[int, int]
) -> np.ndarray:
  """Grayscale, resize, flatten and z-normalise a stack of images.

  Args:
    images_NxHxWxC: images with C == 1 (grayscale) or C == 3 (RGB), any
      numeric dtype and value range.
    image_shape: (H', W') to resize to; equal to (H, W) means no resizing.

  Returns:
    x_NxD float32 with D = H' * W', z-normalised by the scalar mean and std of
    all its entries.
  """
  arrays = _preprocess(images_NxHxWxC, image_shape)
  if 'x_NxD' in arrays:
    return arrays['x_NxD']
  return compact.level_table(arrays['mean'], arrays['std'])[arrays['pixels_NxD']]


def _preprocess(
    images_NxHxWxC: np.ndarray, image_shape: tuple[int, int], where: str = 'The images'
) -> dict[str, np.ndarray]:
  """`preprocess`, as the arrays the cache stores: 'mean' and 'std' (float32
  scalars) and either 'pixels_NxD' (uint8, where the values before
  normalisation are integers in [0, 255]) or 'x_NxD' (normalised float32).
  UserError, naming `where`, if the result would not be finite."""
  images_NxHxWxC = np.asarray(images_NxHxWxC, np.float32)
  num_channels = images_NxHxWxC.shape[-1]
  if num_channels == 3:
    images_NxHxW = images_NxHxWxC @ _LUMA_WEIGHTS_C
  elif num_channels == 1:
    images_NxHxW = images_NxHxWxC[..., 0]
  else:
    raise UserError(
        f'Images have {num_channels} channels; only grayscale (1) and RGB (3) '
        'are supported. Use a dataset with grayscale or RGB images.'
    )

  num_examples = images_NxHxW.shape[0]
  if images_NxHxW.shape[1:] != tuple(image_shape):
    # jax.image.resize works on the whole batch at once (PIL would need a
    # Python loop over images), and with antialias=True its linear kernel
    # widens when downsampling, so it averages over each output pixel's area
    # instead of aliasing. Pinned to the CPU so the cache does not depend on
    # the accelerator, and preprocessing takes no accelerator memory.
    with jax.default_device(jax.devices('cpu')[0]):
      images_NxHxW = np.asarray(
          jax.image.resize(
              images_NxHxW,
              (num_examples, *image_shape),
              method='linear',
              antialias=True,
          )
      )

  x_NxD = images_NxHxW.reshape(num_examples, -1)
  # Accumulate in float64: float32 sums over ~5e7 pixels lose precision. One
  # scalar mean and std for the whole split, as the GPICL paper does.
  mean = np.float32(x_NxD.mean(dtype=np.float64))
  std = np.float32(x_NxD.std(dtype=np.float64))
  _check_spread(mean, std, image_shape, where)
  pixels_NxD = compact.as_uint8(x_NxD)
  if pixels_NxD is not None:
    return {'pixels_NxD': pixels_NxD, 'mean': mean, 'std': std}
  x_NxD = compact.normalise(x_NxD, mean, std)
  if not np.isfinite(x_NxD).all():  # A spread float32 cannot divide by (checks.py's bounds).
    raise UserError(f'{where}: the values vary by too little (std {std:.3g}) to normalise in '
                    'float32; rescale the images (e.g. to [0, 1]).')
  return {'x_NxD': x_NxD, 'mean': mean, 'std': std}


def _check_spread(mean: np.float32, std: np.float32, image_shape: tuple[int, int],
                  where: str) -> None:
  """Dividing by a std of 0 is what made a split of constant images end in "Training
  diverged": file sources check their raw values first (checks.py); this also covers images
  that only a resize makes constant, and every TFDS dataset. A std within float32's rounding
  of the mean (a resized constant image is not exactly constant) counts as 0: normalising
  would blow rounding noise up to unit scale."""
  if (np.isfinite(mean) and np.isfinite(std) and std > 0
      and std >= _MIN_RELATIVE_STD * abs(float(mean))):
    return
  raise UserError(
      f'{where}: after grayscale and resizing to {image_shape[0]}x{image_shape[1]}, every '
      f'value is {mean:.6g} (std {std:.3g}, within float32\'s rounding): the images do not '
      'vary, and z-normalising them would divide by that. Use images that differ from each '
      'other.')


def _check_image_shape(image_shape) -> tuple[int, int]:
  """Returns `image_shape` as a tuple of two positive ints, or raises."""
  ok = (
      isinstance(image_shape, (tuple, list))
      and len(image_shape) == 2
      and all(
          isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
          for v in image_shape
      )
  )
  if not ok:
    raise UserError(
        f'image_shape must be two positive integers (height, width), got '
        f'{image_shape!r}. Set it (config.data.image_shape) to e.g. (28, 28).'
    )
  return int(image_shape[0]), int(image_shape[1])


def _write_npz_atomically(path: str, **arrays: np.ndarray) -> None:
  """Writes an .npz so that `path` is either absent or complete."""
  cache_dir = os.path.dirname(path)
  try:
    os.makedirs(cache_dir, exist_ok=True)
    # Same directory as `path`, so that os.replace is an atomic rename.
    fd, tmp_path = tempfile.mkstemp(dir=cache_dir, suffix='.npz.tmp')
  except OSError as e:
    # A read-only shared data dir must not stop training; it just re-reads.
    logging.warning('Not caching preprocessed data at %s: %s', path, e)
    return
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **arrays)
      # Without fsync a crash can persist the rename but not the data.
      f.flush()
      os.fsync(f.fileno())
    # mkstemp makes the file owner-only; others sharing the data dir read it.
    os.chmod(tmp_path, 0o644)
    os.replace(tmp_path, path)
  finally:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
