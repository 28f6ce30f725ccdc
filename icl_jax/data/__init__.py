"""Datasets, all read through TFDS and preprocessed to z-normalised arrays.

Importing this package registers the embedded `digits` TFDS builder.
"""

from icl_jax.data.compact import Pixels
from icl_jax.data.digits import Digits
from icl_jax.data.loading import Dataset
from icl_jax.data.loading import default_data_dir
from icl_jax.data.loading import from_images
from icl_jax.data.loading import load

__all__ = ['Dataset', 'Digits', 'Pixels', 'default_data_dir', 'from_images', 'load']
