"""On-device task samplers and the prompt formats that turn episodes into token sequences.

Every module of the package is imported here, so a task family of one's own is one file
that calls `families.register` (see families.py).
"""

import importlib
import pkgutil

from icl_jax.tasks.episode import Episode
from icl_jax.tasks.projected import DEFAULT_PROJECTION
from icl_jax.tasks.projected import PROJECTIONS
from icl_jax.tasks.projected import sample_episodes
from icl_jax.tasks.projected import sample_task_ids
from icl_jax.tasks.projected import task_params
from icl_jax.tasks.prompts import attention_mask
from icl_jax.tasks.prompts import num_tokens
from icl_jax.tasks.prompts import predictions
from icl_jax.tasks.prompts import tokens
from icl_jax.tasks.curriculum import Curriculum
from icl_jax.tasks.families import FAMILIES
from icl_jax.tasks.families import Family
from icl_jax.tasks.families import SYNTHETIC_FAMILIES
from icl_jax.tasks.options import TaskOptions
from icl_jax.tasks.prompts import labels
from icl_jax.tasks.prompts import CAUSAL_PROMPTS
from icl_jax.tasks.prompts import PROMPTS

__all__ = [
    'CAUSAL_PROMPTS', 'Curriculum', 'DEFAULT_PROJECTION', 'Episode', 'FAMILIES', 'Family',
    'PROJECTIONS', 'PROMPTS', 'SYNTHETIC_FAMILIES', 'TaskOptions', 'attention_mask', 'labels',
    'num_tokens', 'predictions', 'sample_episodes', 'sample_task_ids', 'task_params', 'tokens'
]

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f'{__name__}.{_module.name}')
