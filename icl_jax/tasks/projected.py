"""GPICL tasks: a supervised dataset under a random projection and a label permutation.

Task `i` is the pair (A_i, rho_i) derived from `fold_in(task_key, i)`: nothing is stored,
so a pool of 2**24 tasks costs no memory and any task can be re-derived anywhere.

Task ids are uint32 and come from two disjoint ranges, so memorisation and general
learning are measured on provably different tasks:
  seen   (training) ids: [0, num_tasks), or [0, 2**31) for an infinite pool;
  unseen (meta-test) ids: [2**31, 2**32).

The projection is the sampler's cost at image sizes: D*D Gaussians per episode (614k at
MNIST's 784 features, 79M for a batch of 128). `projection` (config.task.projection) picks
how they are drawn from the task's key; both give A_ij ~ N(0, proj_scale / D):
  'threefry'       jax.random.normal's stream, that of every run made before the option
                   existed (the default, so old runs reproduce bit for bit). jax hashes one
                   threefry block per draw and keeps the XOR of its two words, and on a CPU
                   runs the 20 rounds as a loop that writes the whole D x D array 5 times;
                   `threefry_normal` computes the very same bits with the hash unrolled
                   (`threefry2x32`), which XLA fuses with the normal transform: ~3.5x
                   cheaper on a CPU (tested equal to jax.random.normal, bit for bit).
  'threefry_fast'  the same Threefry-2x32-20 hash of the same key, but both words of a
                   block are draws (half the hashing) and a shorter transform
                   (`fast_normal`). A different stream, so a different run: opt in for new
                   runs. ~1.5x cheaper again than 'threefry' (docs/benchmarks.md).
Not offered, after measuring: rbg / unsafe_rbg keys (vmap draws a whole batch from the
first episode's key, jax's rng_bit_generator batching rule, so an episode's projection would
depend on the other tasks of its batch and a finite pool would not be finite); jax's
'philox4x32' (its mulhi does not compile in a program on several devices, jax 0.10.2);
jax's bfloat16 normal (128 distinct values, mean -0.012, not centred).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.tasks.episode import Episode
from icl_jax.tasks.options import TaskOptions

UNSEEN_OFFSET = 2**31
_INT32_MAX = 2**31 - 1
DEFAULT_PROJECTION = 'threefry'
# Threefry-2x32's rotation constants (Salmon et al., 2011), as jax.random's.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array,
                 x1: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The Threefry-2x32-20 hash of counters (x0, x1) under key (k0, k1), all uint32 (they
  broadcast): jax.extend.random.threefry_2x32's values (tested), unrolled."""
  ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
  x0, x1 = x0 + ks[0], x1 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = x0 ^ ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r)))
    x0, x1 = x0 + ks[(i + 1) % 3], x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x0, x1


def fast_normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """float32 N(0, 1) draws of `shape` from a threefry key: the two words of block i
  (counter (0, i)) are draws i and ceil(n / 2) + i, and a word's top 23 bits k give
  sqrt(2) erfinv(u) at the midpoint u = (k + 1/2) 2^-22 - 1, a grid symmetric about 0
  that never reaches +-1 (|draws| <= 5.3)."""
  n = math.prod(shape)
  data = jax.random.key_data(key)
  counters = jax.lax.iota(jnp.uint32, -(-n // 2))
  words = jnp.concatenate(threefry2x32(data[0], data[1], jnp.zeros_like(counters), counters))
  u = ((words[:n] >> np.uint32(9)).astype(jnp.float32) + np.float32(0.5)) * np.float32(
      2.0**-22) - np.float32(1.0)
  return (np.float32(math.sqrt(2.0)) * jax.lax.erf_inv(u)).reshape(shape)


def threefry_normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """jax.random.normal(key, shape), float32, bit for bit, with the hash unrolled.

  jax's stream (threefry keys, jax_threefry_partitionable, the default since jax 0.5): draw
  i is the XOR of the two words of block (0, i), whose top 23 bits make a float u in
  [-1 + 2^-24, 1), and sqrt(2) erfinv(u). The same operations in the same order, so every
  backend rounds them alike. Anything else (another key type, the flag off, 2^32 draws or
  more) is handed to jax.random.normal itself.
  """
  n = math.prod(shape)
  if (not jax.config.jax_threefry_partitionable or n >= 2**32 or
      str(jax.random.key_impl(key)) != 'threefry2x32'):
    return jax.random.normal(key, shape)
  data = jax.random.key_data(key)
  counters = jax.lax.iota(jnp.uint32, n)
  x0, x1 = threefry2x32(data[0], data[1], jnp.zeros_like(counters), counters)
  one = np.float32(1.0)
  low = np.nextafter(np.float32(-1.0), np.float32(0.0))  # jax.random.normal's minval.
  floats = jax.lax.bitcast_convert_type(((x0 ^ x1) >> np.uint32(9)) | one.view(np.uint32),
                                        jnp.float32) - one
  u = jnp.maximum(low, (floats * (one - low) + low).reshape(shape))
  return np.float32(math.sqrt(2.0)) * jax.lax.erf_inv(u)


# config.task.projection -> normal(key, shape): how a task's projection is drawn from its key.
NORMALS = {'threefry': threefry_normal, 'threefry_fast': fast_normal}
PROJECTIONS = tuple(NORMALS)


def sample_task_ids(key: jax.Array, batch_size: int, num_tasks: int | jax.Array,
                    unseen: bool) -> jax.Array:
  """Task ids for one batch; `num_tasks=-1` draws from the (practically) infinite range.

  `num_tasks` may be traced, so runs with different pool sizes share one program.
  """
  high = _INT32_MAX if unseen else jnp.where(num_tasks < 0, _INT32_MAX, num_tasks)
  ids_B = jax.random.randint(key, (batch_size,), 0, high, dtype=jnp.int32).astype(jnp.uint32)
  return ids_B + jnp.uint32(UNSEEN_OFFSET) if unseen else ids_B


def task_params(task_key: jax.Array, task_id: jax.Array, num_features: int, num_classes: int,
                proj_scale: float | jax.Array,
                projection: str = DEFAULT_PROJECTION) -> tuple[jax.Array, jax.Array]:
  """Projection A_DxD with A_ij ~ N(0, proj_scale / D) and label permutation perm_C of one task.

  `projection` says how A is drawn from the task's key (see PROJECTIONS); the permutation
  is drawn the same way for all of them.
  """
  proj_key, perm_key = jax.random.split(jax.random.fold_in(task_key, task_id))
  a_DxD = NORMALS[projection](proj_key, (num_features, num_features)) * jnp.sqrt(
      proj_scale / num_features)
  perm_C = jax.random.permutation(perm_key, num_classes).astype(jnp.int32)
  return a_DxD, perm_C


def distinct_indices(key: jax.Array, n: int, t: int) -> jax.Array:
  """idx_T int32: `t` distinct indices in [0, n), every subset and order equally likely.

  Floyd's algorithm (Bentley and Floyd, "A sample of brilliance", CACM 1987), then a
  shuffle: for i = 0 .. t-1 and j_i = n - t + i, draw r_i uniform in [0, j_i] and take r_i,
  or j_i if r_i is taken already. Written as a loop it makes t dependent steps (t small
  kernels a batch on a GPU); here it is a handful of array operations with the very same
  result (`floyd_taken`), so runs from before keep their stream bit for bit.
  O(t log t) work and O(t) memory, where jax.random.choice(replace=False) permutes all n.
  """
  if not 0 <= t <= n:
    raise ValueError(f'Cannot draw {t} distinct indices from {n}.')
  draw_key, order_key = jax.random.split(key)
  j_T = jnp.arange(n - t, n, dtype=jnp.int32)
  r_T = jax.random.randint(draw_key, (t,), 0, j_T + 1, dtype=jnp.int32)
  chosen_T = jnp.where(floyd_taken(r_T, n), j_T, r_T)
  return jax.random.permutation(order_key, chosen_T)


def floyd_taken(r_T: jax.Array, n: int) -> jax.Array:
  """taken_T bool: whether Floyd's step i finds r_i taken (and so takes j_i = n - t + i).

  The values taken before step i are {r_k : k < i} and the j_k of the earlier steps that
  found theirs taken. So r_i is taken if it repeats an earlier r_k (`repeat`), or if it is
  j_k for k = r_i - (n - t) < i and step k found its r_k taken: a chain of strictly
  earlier steps, which pointer doubling follows in ceil(log2 t) rounds. Slot t is a
  sentinel that ends every chain (never taken, pointing at itself).
  """
  t = r_T.shape[0]
  if t == 0:
    return jnp.zeros(0, bool)
  # A repeat of an earlier r_k: in a stable sort, the equal values after the first one.
  order_T = jnp.argsort(r_T, stable=True)
  sorted_T = r_T[order_T]
  repeat_T = jnp.zeros(t, bool).at[order_T].set(
      jnp.concatenate([jnp.zeros(1, bool), sorted_T[1:] == sorted_T[:-1]]))
  k_T = r_T - (n - t)
  earlier_T = (k_T >= 0) & (k_T < jnp.arange(t))
  taken_S = jnp.concatenate([repeat_T, jnp.zeros(1, bool)])  # S = t + 1 slots.
  next_S = jnp.concatenate([jnp.where(earlier_T, k_T, t), jnp.full(1, t, k_T.dtype)])
  for _ in range(max(t - 1, 1).bit_length()):  # 2**rounds >= t steps of every chain.
    taken_S = taken_S | taken_S[next_S]
    next_S = next_S[next_S]
  return taken_S[:t]


def sample_episodes(key: jax.Array, task_key: jax.Array, x_NxD: jax.Array, y_N: jax.Array, *,
                    batch_size: int, seq_len: int, num_tasks: int | jax.Array,
                    num_classes: int, proj_scale: float | jax.Array = 1.0,
                    bias_fraction: float | jax.Array = 0.0, unseen: bool = False,
                    projection: str = DEFAULT_PROJECTION,
                    distinct: bool = False) -> Episode:
  """Samples B episodes of T examples, each from one task, entirely on device.

  `x_NxD` is the dataset's float32 rows, or any pytree that gathers them by `x_NxD[idx]`
  and has `.shape` (N, D): data.Pixels, a split kept on device as uint8 pixels plus the
  normalised value of each level, looks up only the T rows an episode gathers.

  `distinct`: an episode's T examples are T different rows of the split (config
  task.distinct_examples, the default of new runs). Otherwise they are drawn with
  replacement, as every run before that option did: then a late query is often an exact
  repeat of an earlier example (13% at position 49 on digits' 360 test images), which
  flatters every learner's late accuracy, 1-NN's most.

  `bias_fraction` of the batch (the first rows) keeps the identity permutation: the
  paper's biased data distribution that shortens the loss plateau.

  `num_tasks`, `proj_scale` and `bias_fraction` may be traced (per-run values of a group).
  """
  ids_key, examples_key = jax.random.split(key)
  ids_B = sample_task_ids(ids_key, batch_size, num_tasks, unseen)
  biased_B = jnp.arange(batch_size) < jnp.round(jnp.float32(bias_fraction) * batch_size)
  num_features = x_NxD.shape[1]

  def one(example_key, task_id, biased):
    a_DxD, perm_C = task_params(task_key, task_id, num_features, num_classes, proj_scale,
                                projection)
    perm_C = jnp.where(biased, jnp.arange(num_classes, dtype=jnp.int32), perm_C)
    if distinct:
      idx_T = distinct_indices(example_key, x_NxD.shape[0], seq_len)
    else:
      idx_T = jax.random.randint(example_key, (seq_len,), 0, x_NxD.shape[0])
    x_TxD = x_NxD[idx_T] @ a_DxD.T
    y_T = perm_C[y_N[idx_T]]
    return x_TxD, y_T

  keys_B = jax.random.split(examples_key, batch_size)
  x_BxTxD, y_BxT = jax.vmap(one)(keys_B, ids_B, biased_B)
  return Episode(x_BxTxD, y_BxT)


def sample(key: jax.Array, task_key: jax.Array, *, batch_size: int, seq_len: int,
           num_tasks: int | jax.Array, unseen: bool, options: TaskOptions | None = None,
           active_dim: int | jax.Array | None = None, x_NxD: jax.Array, y_N: jax.Array,
           num_classes: int, proj_scale: float | jax.Array = 1.0,
           bias_fraction: float | jax.Array = 0.0,
           projection: str = DEFAULT_PROJECTION, distinct: bool = False) -> Episode:
  """`sample_episodes` with the registry's keywords (tasks.FAMILIES['projected'].sample).

  The dataset supplies what the synthetic families take from `options`, so it is ignored.
  The curriculum does not apply (the config refuses it), so `active_dim` must be None.
  """
  del options
  if active_dim is not None:
    raise ValueError('The projected family has no curriculum: its inputs are the dataset\'s '
                     'projected examples, which have no active dimension to grow.')
  return sample_episodes(key, task_key, x_NxD, y_N, batch_size=batch_size, seq_len=seq_len,
                         num_tasks=num_tasks, num_classes=num_classes, proj_scale=proj_scale,
                         bias_fraction=bias_fraction, unseen=unseen, projection=projection,
                         distinct=distinct)
