"""TFDS builder `digits`: scikit-learn's bundled 8x8 handwritten digits.

The data ship inside scikit-learn (`sklearn.datasets.load_digits`), so this
builder prepares with no network. Importing this module registers the builder
with TFDS under the name `digits`, after which `tfds.builder('digits')` works
like any catalog dataset.

Features are plain uint8 tensors rather than `tfds.features.Image`, because
encoding images to PNG during preparation needs TensorFlow, which we do not
depend on.
"""

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

# The permutation that makes the train/test split. Changing either constant
# changes the splits, so it must come with a new dataset VERSION.
_SPLIT_SEED = 0
_NUM_TEST = 360


def _split_indices(num_examples: int) -> tuple[np.ndarray, np.ndarray]:
  """Returns (train, test) example indices from a fixed seeded permutation."""
  # PCG64 streams are stable across NumPy versions (NEP 19), so the split is
  # stable forever.
  perm_N = np.random.default_rng(_SPLIT_SEED).permutation(num_examples)
  return np.sort(perm_N[_NUM_TEST:]), np.sort(perm_N[:_NUM_TEST])


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8x8 digits (1797 images, pixel values 0..16, 10 classes)."""

  name = 'digits'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {
      '1.0.0': (
          'Initial release: train (1437) / test (360) split by a fixed '
          'seeded permutation of sklearn.datasets.load_digits.'
      ),
  }

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10 derives this path through `importlib_resources`, a package
    # it only declares as a dependency on Python < 3.9, so preparing fails with
    # ModuleNotFoundError on newer Pythons. The path is simply this file.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=(
            "scikit-learn's bundled copy of the UCI optical recognition of "
            'handwritten digits test set: 8x8 grayscale images with pixel '
            'values 0..16.'
        ),
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data are bundled with scikit-learn; nothing to fetch.
    # Imported here so that merely registering the builder stays cheap.
    from sklearn import datasets  # pylint: disable=g-import-not-at-top

    digits = datasets.load_digits()
    images_Nx8x8x1 = digits.images.astype(np.uint8)[..., None]
    labels_N = digits.target.astype(np.int64)
    train_idx, test_idx = _split_indices(len(labels_N))
    return {
        'train': self._generate_examples(images_Nx8x8x1, labels_N, train_idx),
        'test': self._generate_examples(images_Nx8x8x1, labels_N, test_idx),
    }

  def _generate_examples(self, images_Nx8x8x1, labels_N, indices):
    # Keys are the indices into load_digits(), so records are traceable.
    for i in indices:
      yield int(i), {'image': images_Nx8x8x1[i], 'label': labels_N[i]}
