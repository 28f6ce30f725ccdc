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


def fold_in_name(key: jax.Array, name: str) -> jax.Array:
  """`key` folded with a name: the crc32 of its UTF-8 bytes, cut to 31 bits (a non-negative
  int32, as fold_in takes), so a name gives the same key on every host and in every run."""
  return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def key(seed: int, purpose: str) -> jax.Array:
  return fold_in_name(jax.random.key(seed), purpose)
