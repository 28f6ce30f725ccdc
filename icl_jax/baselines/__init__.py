"""Classical in-context learners: the baselines a meta-trained model is compared against.

Each learner registers itself in the module that defines it (`registry.register`):
classifiers.py (with logreg.py's logistic regression), regression.py, trees.py. Importing
this package imports every module in it, so a new learner is one file here (or a plugin
file, icl_jax/plugins.py); `registry.available` lists them.
"""

import importlib
import pkgutil

from icl_jax.baselines import registry
from icl_jax.baselines.common import normalized_squared_error_BxT

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f'{__name__}.{_module.name}')

__all__ = ['normalized_squared_error_BxT', 'registry']
