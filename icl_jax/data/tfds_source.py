"""TFDS names: the default dataset source (an argument without a registered prefix).

Every dataset but the file kinds (sources.py) is a TFDS builder prepared in array_record
format in the data dir; the embedded `digits` (scikit-learn's 8x8 digits, digits.py) is
prepared here offline on first use, and prepared again where its folder is damaged.
Nothing is ever downloaded.
"""

import difflib
import os
import re
import shutil
import sys

import numpy as np
import tensorflow_datasets as tfds

from icl_jax.data import digits
from icl_jax.errors import UserError

# Records fetched per `__getitems__` call: enough to amortise the per-call
# overhead, few enough that one batch of decoded records stays small.
_READ_BATCH_SIZE = 4096


def prepared_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Returns the builder of a dataset prepared in array_record, or raises.

  Preparing `digits` (offline) if needed; everything else must already be
  there, checked before anything is read.
  """
  builder = _open_builder(name, data_dir)
  if isinstance(builder, str):  # The damaged digits folder: prepared again.
    return _prepare_digits_again(builder, data_dir, 'its dataset_info.json does not read')
  # Record files without their dataset_info.json: TFDS would take it for unprepared (or for
  # tfrecord), so say what it is. (An empty version folder is what TFDS leaves before its
  # first preparation.)
  if (os.path.isdir(builder.data_dir) and os.listdir(builder.data_dir)
      and not os.path.exists(os.path.join(builder.data_dir, 'dataset_info.json'))):
    return damaged(builder, name, data_dir, 'its dataset_info.json is missing')
  if not builder.is_prepared():
    _prepare(builder, name, data_dir)
  _check_array_record(builder, name, data_dir)
  return builder


def _open_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder | str:
  """TFDS's builder of `name`; UserError for an unknown or damaged dataset, except the
  embedded digits, whose damaged version folder is returned to be prepared again."""
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError as e:
    # Without community datasets: listing those needs network access.
    known = tfds.list_builders(with_community_datasets=False)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f' Did you mean one of {close}?' if close else ''
    raise UserError(
        f'Unknown dataset {name!r}.{hint} Check the spelling; '
        '`tfds.list_builders()` lists the dataset names TFDS knows.'
    ) from e
  except Exception as e:  # pylint: disable=broad-except
    # TFDS reads the prepared dataset_info.json here: a damaged one raises its ParseError.
    folder = os.path.join(data_dir, name)
    why = ' '.join(str(e).split())[:300] or type(e).__name__
    if not os.path.isdir(folder):
      raise UserError(f'Cannot open dataset {name!r} ({why}). Check the name: a TFDS name, '
                      'NAME/CONFIG or NAME:VERSION.') from None
    if name == digits.Digits.name:
      return os.path.join(folder, str(digits.Digits.VERSION))
    raise UserError(
        f'Dataset {name!r} in {folder} cannot be opened ({why}). Delete the damaged version '
        f'folder under {folder} and prepare it again: '
        f'`tfds build {name} --data_dir {data_dir} --file_format=array_record`.') from None


def _prepare(builder: tfds.core.DatasetBuilder, name: str, data_dir: str) -> None:
  """Prepares the embedded digits offline; any other unprepared dataset is a UserError
  saying how to prepare it where there is internet."""
  if not isinstance(builder, digits.Digits):
    raise UserError(
        f'Dataset {name!r} is not prepared in data dir {data_dir} (looked '
        f'for {builder.data_dir}), and icl_jax never downloads. To fix, on '
        "a host with internet run `pip install 'icl_jax[prepare]'` and "
        f'`tfds build {name} --data_dir {data_dir} '
        '--file_format=array_record` (then copy the data dir here if that '
        'host is another one), or point TFDS_DATA_DIR / '
        'config.data.data_dir at a data dir that holds it.')
  if not sys.stderr.isatty():
    # TFDS's bars are carriage-return redraws: noise in log files (CI, SLURM, sweeps).
    tfds.disable_progress_bar()
  print(f'preparing the embedded digits dataset in {builder.data_dir} (once)',
        file=sys.stderr, flush=True)
  try:
    builder.download_and_prepare(
        file_format='array_record',
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  except (OSError, RuntimeError) as e:  # A full disk, a read-only data dir.
    reason = re.sub(r'.*(write\(\) failed|Errno \d+\]): ?', '', ' '.join(str(e).split()))
    raise UserError(
        f'Cannot prepare the embedded digits dataset in {data_dir}: {reason[:200]}. Free '
        'space there, or point TFDS_DATA_DIR / config.data.data_dir at a writable data '
        'dir.') from None


def _check_array_record(builder: tfds.core.DatasetBuilder, name: str, data_dir: str) -> None:
  formats = builder.info.available_file_formats()
  if tfds.core.FileFormat.ARRAY_RECORD not in formats:
    if isinstance(builder, digits.Digits):
      fix = f'Delete {builder.data_dir}; icl_jax then prepares it again.'
    else:
      fix = (
          f'Rebuild it with `tfds build {name} --data_dir {data_dir} '
          '--file_format=array_record`.'
      )
    raise UserError(
        f'Dataset {name!r} in {builder.data_dir} is stored as '
        f'{", ".join(sorted(f.value for f in formats))}, but icl_jax reads '
        f'only array_record (random access without TensorFlow). {fix}'
    )


def check_features(builder: tfds.core.DatasetBuilder, name: str) -> int:
  """Returns the number of classes, or raises if not image classification."""
  features = builder.info.features
  if not (
      'image' in features
      and 'label' in features
      and isinstance(features['label'], tfds.features.ClassLabel)
      and len(features['image'].shape) == 3
      and features['image'].shape[-1] in (1, 3)
  ):
    raise UserError(
        f'Dataset {name!r} is not a supported image classification dataset: '
        "it needs an 'image' feature of grayscale or RGB images and a 'label' "
        f'ClassLabel feature, but has {features}. Use a dataset such as '
        'mnist, fashion_mnist, kmnist, cifar10 or svhn_cropped.'
    )
  return features['label'].num_classes


def read_split(
    builder: tfds.core.DatasetBuilder, split: str
) -> tuple[np.ndarray, np.ndarray]:
  """Reads all records of a split: (images_NxHxWxC, labels_N int32)."""
  source = builder.as_data_source(split, file_format='array_record')
  num_examples = len(source)
  get_batch = getattr(source, '__getitems__', None)
  image_batches, label_batches = [], []
  for start in range(0, num_examples, _READ_BATCH_SIZE):
    keys = list(range(start, min(start + _READ_BATCH_SIZE, num_examples)))
    records = get_batch(keys) if get_batch else [source[k] for k in keys]
    image_batches.append(np.stack([r['image'] for r in records]))
    label_batches.append(np.array([r['label'] for r in records], np.int32))
  return np.concatenate(image_batches), np.concatenate(label_batches)


def damaged(builder: tfds.core.DatasetBuilder, name: str, data_dir: str,
             cause: str) -> tfds.core.DatasetBuilder:
  """The embedded dataset prepared again (with a warning) where its preparation is damaged;
  for any other dataset, a UserError naming the folder to delete and how to rebuild it."""
  path = builder.data_dir
  if not isinstance(builder, digits.Digits):
    raise UserError(
        f'Dataset {name!r} in {path} is damaged ({cause}). Delete {path} and prepare it '
        f'again: `tfds build {name} --data_dir {data_dir} --file_format=array_record`.')
  return _prepare_digits_again(path, data_dir, cause)


def _prepare_digits_again(path: str, data_dir: str, cause: str) -> tfds.core.DatasetBuilder:
  """Deletes the damaged digits version folder `path` (with a warning) and prepares it anew;
  a folder that cannot be deleted is one UserError."""
  print(f'warning: the embedded digits dataset in {path} is damaged ({cause}); preparing it '
        'again.', file=sys.stderr, flush=True)
  try:
    shutil.rmtree(path)
  except OSError as e:
    raise UserError(f'The embedded digits dataset in {path} is damaged ({cause}) and cannot '
                    f'be deleted ({e.strerror}); delete {path} by hand.') from None
  return prepared_builder(digits.Digits.name, data_dir)


