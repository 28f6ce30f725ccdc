"""Datasets, read from TFDS or a file source and preprocessed to z-normalised arrays.

Importing this package registers the embedded `digits` TFDS builder and every dataset
source kind of the package (folder:, npz:; see sources.py).
"""

import importlib
import pkgutil

from icl_jax.data.compact import Pixels
from icl_jax.data.digits import Digits
from icl_jax.data.loading import Dataset
from icl_jax.data.loading import default_data_dir
from icl_jax.data.loading import from_images
from icl_jax.data.loading import load

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f'{__name__}.{_module.name}')

__all__ = ['Dataset', 'Digits', 'Pixels', 'default_data_dir', 'from_images', 'load']
