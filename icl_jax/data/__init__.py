"""Datasets, all read through TFDS and preprocessed to z-normalised arrays.

Importing this package registers the embedded `digits` TFDS builder.
"""

from icl_jax.data.digits import Digits
from icl_jax.data.loading import Dataset
from icl_jax.data.loading import default_data_dir
from icl_jax.data.loading import load

__all__ = ['Dataset', 'Digits', 'default_data_dir', 'load']
