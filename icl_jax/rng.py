"""Every random key derives from the config seed by fold_in with a named purpose.

Two runs of one config are identical, and adding a new purpose never shifts the keys of
existing ones (as consuming a split would).
"""

import zlib

import jax

INIT = 'init'  # Model parameters.
DATA = 'data'  # Training episodes; the step's key is fold_in(data_key, step).
TASKS = 'tasks'  # The task pool: task i is derived from fold_in(tasks_key, i).
EVAL = 'eval'  # Evaluation episodes: the same every time, so curves are comparable.


def key(seed: int, purpose: str) -> jax.Array:
  return jax.random.fold_in(jax.random.key(seed), zlib.crc32(purpose.encode()) & 0x7FFFFFFF)
