"""The GPICL sampler and the prompt formats."""

import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special as scipy_special

from icl_jax import tasks
from icl_jax.tasks import projected

N, D, C, T, B = 200, 16, 10, 12, 64

# Jitted once and reused: eager op-by-op dispatch would dominate these tests' time.
_sample = jax.jit(tasks.sample_episodes, static_argnames=(
    'batch_size', 'seq_len', 'num_tasks', 'num_classes', 'proj_scale', 'bias_fraction', 'unseen',
    'projection', 'distinct'))
_task_params = jax.jit(jax.vmap(tasks.task_params, in_axes=(None, 0, None, None, None, None)),
                       static_argnums=(2, 3, 4, 5))
_task_ids = jax.jit(tasks.sample_task_ids, static_argnums=(1, 2, 3))


@pytest.fixture(scope='module')
def dataset():
  x_NxD = jax.random.normal(jax.random.key(0), (N, D))
  y_N = jnp.arange(N, dtype=jnp.int32) % C
  return x_NxD, y_N


def sample(dataset, key=1, **kw):
  args = dict(batch_size=B, seq_len=T, num_tasks=16, num_classes=C)
  args.update(kw)
  return _sample(jax.random.key(key), jax.random.key(99), *dataset, **args)


def test_shapes_and_dtypes(dataset):
  ep = sample(dataset)
  assert ep.x_BxTxD.shape == (B, T, D) and ep.x_BxTxD.dtype == jnp.float32
  assert ep.y_BxT.shape == (B, T) and ep.y_BxT.dtype == jnp.int32
  assert int(ep.y_BxT.min()) >= 0 and int(ep.y_BxT.max()) < C


def test_deterministic_for_a_key_and_different_across_keys(dataset):
  a, b, c = sample(dataset, key=1), sample(dataset, key=1), sample(dataset, key=2)
  np.testing.assert_array_equal(a.x_BxTxD, b.x_BxTxD)
  np.testing.assert_array_equal(a.y_BxT, b.y_BxT)
  assert not np.array_equal(a.x_BxTxD, c.x_BxTxD)


def _frozen_sample_episodes(key, task_key, x_NxD, y_N, *, batch_size, seq_len, num_tasks,
                            num_classes, unseen):
  """The sampler as it was before config.task.projection existed (commit 15de6f7), verbatim
  but for names: the default stream must stay this one, bit for bit."""
  ids_key, examples_key = jax.random.split(key)
  ids_B = projected.sample_task_ids(ids_key, batch_size, num_tasks, unseen)
  d = x_NxD.shape[1]

  def one(example_key, task_id):
    proj_key, perm_key = jax.random.split(jax.random.fold_in(task_key, task_id))
    a_DxD = jax.random.normal(proj_key, (d, d)) * jnp.sqrt(1.0 / d)
    perm_C = jax.random.permutation(perm_key, num_classes).astype(jnp.int32)
    idx_T = jax.random.randint(example_key, (seq_len,), 0, x_NxD.shape[0])
    return x_NxD[idx_T] @ a_DxD.T, perm_C[y_N[idx_T]]

  return jax.vmap(one)(jax.random.split(examples_key, batch_size), ids_B)


# Figures of `sample(dataset, key=1)` computed before config.task.projection existed:
# sha256 of y_BxT (integers: exact on any machine); sum, sum of |x|, x[0,0,0], x[-1,-1,-1].
_BEFORE = {False: ('2ed1587e0b227c1d', -147.79996763542295, 9614.702109213918,
                   -0.6773953437805176, -0.8407751321792603),
           True: ('6bfe991292457965', -45.02301345951855, 9771.177890071645,
                  0.6719662547111511, 0.4827110171318054)}


@pytest.mark.parametrize('unseen', [False, True])
def test_default_projection_is_the_stream_of_earlier_runs(dataset, unseen):
  ep = sample(dataset, unseen=unseen)
  explicit = sample(dataset, unseen=unseen, projection='threefry')  # The default, named.
  np.testing.assert_array_equal(ep.x_BxTxD, explicit.x_BxTxD)
  frozen_x, frozen_y = jax.jit(_frozen_sample_episodes, static_argnames=(
      'batch_size', 'seq_len', 'num_tasks', 'num_classes', 'unseen'))(
          jax.random.key(1), jax.random.key(99), *dataset, batch_size=B, seq_len=T,
          num_tasks=16, num_classes=C, unseen=unseen)
  np.testing.assert_array_equal(ep.x_BxTxD, frozen_x)  # Bit for bit.
  np.testing.assert_array_equal(ep.y_BxT, frozen_y)
  y_hash, x_sum, x_abs_sum, x_first, x_last = _BEFORE[unseen]
  assert hashlib.sha256(np.asarray(ep.y_BxT).tobytes()).hexdigest()[:16] == y_hash
  x = np.asarray(ep.x_BxTxD, np.float64)
  # A changed stream moves these by O(1); float noise across machines by ~1e-6.
  np.testing.assert_allclose([x.sum(), np.abs(x).sum(), x[0, 0, 0], x[-1, -1, -1]],
                             [x_sum, x_abs_sum, x_first, x_last], rtol=1e-5, atol=1e-4)


def test_distinct_indices_never_repeat_and_cover_a_whole_split():
  draw = jax.jit(jax.vmap(projected.distinct_indices, in_axes=(0, None, None)),
                 static_argnums=(1, 2))
  idx = np.asarray(draw(jax.random.split(jax.random.key(0), 500), 60, 50))
  assert idx.min() >= 0 and idx.max() < 60
  assert all(len(set(row)) == 50 for row in idx)
  whole = np.asarray(draw(jax.random.split(jax.random.key(1), 4), 7, 7))
  assert all(sorted(row) == list(range(7)) for row in whole)  # t = n: a permutation.
  with pytest.raises(ValueError, match='Cannot draw 8 distinct indices from 7'):
    projected.distinct_indices(jax.random.key(0), 7, 8)


def test_distinct_indices_draw_every_ordered_pair_equally_often():
  """Floyd's algorithm with the final shuffle: all 5 * 4 ordered pairs of 5 indices are
  equally likely. A bug that biases the set (r from [0, j) instead of [0, j]) or the order
  (no shuffle: j comes last) fails this chi-square test at p < 1e-6."""
  draws = 40_000
  idx = np.asarray(jax.jit(jax.vmap(projected.distinct_indices, in_axes=(0, None, None)),
                           static_argnums=(1, 2))(
                               jax.random.split(jax.random.key(3), draws), 5, 2))
  counts = np.zeros((5, 5))
  np.add.at(counts, (idx[:, 0], idx[:, 1]), 1)
  observed = counts[~np.eye(5, dtype=bool)]
  expected = draws / 20
  chi2 = ((observed - expected)**2 / expected).sum()
  assert scipy_special.chdtrc(19, chi2) > 1e-6, (chi2, counts)


def _frozen_floyd(key, n, t):
  """distinct_indices as it was before it was vectorised (Floyd's algorithm as a loop of t
  steps, then the shuffle), verbatim: the vectorised draw must give these very indices."""
  draw_key, order_key = jax.random.split(key)
  j_T = jnp.arange(n - t, n, dtype=jnp.int32)
  r_T = jax.random.randint(draw_key, (t,), 0, j_T + 1, dtype=jnp.int32)

  def take(i, chosen_T):
    taken = jnp.any(chosen_T == r_T[i])  # Unfilled slots hold -1, never an index.
    return chosen_T.at[i].set(jnp.where(taken, j_T[i], r_T[i]))

  chosen_T = jax.lax.fori_loop(0, t, take, jnp.full_like(r_T, -1))
  return jax.random.permutation(order_key, chosen_T)


@pytest.mark.parametrize('n,t', [(1, 1), (5, 2), (7, 7), (10, 9), (60, 50), (200, 12),
                                 (129, 128), (360, 100), (60_000, 100)])
def test_distinct_indices_are_floyds_loop_bit_for_bit(n, t):
  keys = jax.random.split(jax.random.key(n + t), 1000)
  draw = lambda fn: np.asarray(jax.jit(jax.vmap(fn, in_axes=(0, None, None)),
                                       static_argnums=(1, 2))(keys, n, t))
  np.testing.assert_array_equal(draw(projected.distinct_indices), draw(_frozen_floyd))
  assert projected.distinct_indices(jax.random.key(0), 3, 0).shape == (0,)


@pytest.mark.parametrize('n,t', [(6, 3), (5, 5)])
def test_distinct_indices_draw_every_ordered_tuple_equally_often(n, t):
  """Uniform without replacement: each of the n! / (n - t)! ordered t-tuples of distinct
  indices is equally likely (chi-square, 500 draws per tuple expected); no tuple repeats an
  index. 6 of 3 exercises the chains of taken values that the vectorised draw resolves
  (r_i hitting an earlier j_k), 5 of 5 every permutation."""
  tuples = math.perm(n, t)
  draws = 500 * tuples
  idx = np.asarray(jax.jit(jax.vmap(projected.distinct_indices, in_axes=(0, None, None)),
                           static_argnums=(1, 2))(
                               jax.random.split(jax.random.key(7), draws), n, t))
  assert all(len(set(row)) == t for row in idx[:5000])
  codes = (idx * n**np.arange(t)).sum(1)
  _, counts = np.unique(codes, return_counts=True)
  assert len(counts) == tuples  # Every ordered tuple occurs.
  chi2 = ((counts - 500)**2 / 500).sum()
  assert scipy_special.chdtrc(tuples - 1, chi2) > 1e-6, (chi2, counts)


def test_threefry_projection_is_jax_random_normal_bit_for_bit():
  """'threefry' draws with the hash unrolled: the stream of jax.random.normal, every bit,
  for a task's D x D and for odd shapes, under vmap (as the sampler draws them) too."""
  keys = jax.random.split(jax.random.key(11), 8)
  for shape in [(784, 784), (16, 16), (3, 1001), (1,)]:
    ours = jax.jit(jax.vmap(lambda k, shape=shape: projected.threefry_normal(k, shape)))(keys)
    theirs = jax.jit(jax.vmap(lambda k, shape=shape: jax.random.normal(k, shape)))(keys)
    np.testing.assert_array_equal(ours, theirs)
  assert projected.NORMALS['threefry'] is projected.threefry_normal


def test_distinct_episodes_have_no_repeated_example_and_the_same_tasks(dataset):
  small = (dataset[0][:40], dataset[1][:40])  # T = 12 of 40 rows: many repeats drawn freely.
  free = sample(small, seq_len=30)
  distinct = sample(small, seq_len=30, distinct=True)
  rows = lambda ep: [len({tuple(np.round(x, 4)) for x in ep_x}) for ep_x in
                     np.asarray(ep.x_BxTxD)]
  assert min(rows(distinct)) == 30
  assert min(rows(free)) < 30  # Would pass vacuously if `distinct` were ignored.
  # The same task ids and projections; only which rows are drawn changed.
  label_sets = lambda ep: [sorted(set(y)) for y in np.asarray(ep.y_BxT)]
  assert np.asarray(distinct.y_BxT).shape == np.asarray(free.y_BxT).shape
  assert sum(a == b for a, b in zip(label_sets(free), label_sets(distinct))) > B // 2


def test_fast_projection_is_another_stream_of_the_same_tasks(dataset):
  threefry, fast = sample(dataset), sample(dataset, projection='threefry_fast')
  np.testing.assert_array_equal(fast.y_BxT, threefry.y_BxT)  # Same ids, examples, labels.
  assert not np.allclose(fast.x_BxTxD, threefry.x_BxTxD)  # Other projections.


def test_threefry_fast_hashes_as_jax_threefry():
  from jax.extend import random as jax_random  # pylint: disable=g-import-not-at-top
  key_2 = jnp.array([0x13198A2E, 0x03707344], jnp.uint32)
  ctr_2xM = jnp.stack([jnp.arange(1000, dtype=jnp.uint32) * 7919,
                       jnp.arange(1000, dtype=jnp.uint32)])
  ours = projected.threefry2x32(key_2[0], key_2[1], ctr_2xM[0], ctr_2xM[1])
  theirs = jax_random.threefry_2x32(key_2, ctr_2xM.reshape(-1)).reshape(2, -1)
  np.testing.assert_array_equal(np.stack(ours), theirs)
  # Random123's known answer for Threefry-2x32-20, key 0 and counter 0.
  zero = jnp.zeros((), jnp.uint32)
  assert [int(w) for w in projected.threefry2x32(zero, zero, zero, zero)] == [
      0x6B200159, 0x99BA4EFE]


def test_fast_normal_grid_is_symmetric_and_bounded():
  z = np.asarray(jax.jit(projected.fast_normal, static_argnums=1)(jax.random.key(0),
                                                                   (1001, 999)))
  assert z.shape == (1001, 999) and z.dtype == np.float32
  assert np.all(np.isfinite(z)) and np.abs(z).max() <= 5.3
  # Exactly the draws of block i's two words, each through the midpoint grid.
  words = projected.threefry2x32(*jax.random.key_data(jax.random.key(0)),
                                 jnp.zeros(2, jnp.uint32), jnp.arange(2, dtype=jnp.uint32))
  u = ((np.asarray(words[0]) >> 9) + 0.5) * 2.0**-22 - 1
  np.testing.assert_allclose(z.reshape(-1)[:2], np.sqrt(2) * scipy_special.erfinv(u), rtol=1e-5)


@pytest.mark.parametrize('projection', ['threefry', 'threefry_fast'])
@pytest.mark.parametrize('num_tasks', [1, 4, 64])
def test_finite_pool_yields_at_most_num_tasks_projections(num_tasks, projection):
  # With the one-row dataset x = e_0, every input of an episode is column 0 of its task's
  # A, so the distinct input vectors of a batch are its distinct projections. (A PRNG whose
  # vmap draws a batch from one key, as jax's rbg does, fails this: not a finite pool.)
  x_1xD = jnp.zeros((1, D)).at[0, 0].set(1.0)
  ep = _sample(jax.random.key(1), jax.random.key(99), x_1xD, jnp.zeros((1,), jnp.int32),
               batch_size=512, seq_len=2, num_tasks=num_tasks, num_classes=C,
               projection=projection)
  columns = {tuple(np.round(np.asarray(v), 5)) for v in ep.x_BxTxD.reshape(-1, D)}
  assert len(columns) <= num_tasks
  assert len(columns) >= min(num_tasks, 40)  # 512 draws from the pool reach most of it.


def test_large_pool_is_large():
  ids = _task_ids(jax.random.key(3), 4096, 2**20, False)
  assert len(set(np.asarray(ids).tolist())) > 4000  # Large pools really are large.


@pytest.mark.parametrize('projection', ['threefry', 'threefry_fast'])
def test_episode_inputs_are_projected_dataset_rows(dataset, projection):
  """x_t = A x_i for a dataset row i, with the A of the episode's task."""
  x_NxD, y_N = dataset
  ids_key, _ = jax.random.split(jax.random.key(1))
  ids_B = _task_ids(ids_key, B, 16, False)
  ep = sample(dataset, projection=projection)
  a_BxDxD, perm_BxC = _task_params(jax.random.key(99), ids_B, D, C, 1.0, projection)
  a_DxD, perm_C = a_BxDxD[0], perm_BxC[0]
  recovered_TxD = ep.x_BxTxD[0] @ jnp.linalg.inv(a_DxD).T
  dist_TxN = jnp.linalg.norm(recovered_TxD[:, None] - x_NxD[None], axis=-1)
  idx_T = dist_TxN.argmin(-1)
  np.testing.assert_allclose(dist_TxN.min(-1), 0, atol=1e-3)
  np.testing.assert_array_equal(ep.y_BxT[0], perm_C[y_N[idx_T]])


def test_permutations_are_valid():
  _, perm_KxC = _task_params(jax.random.key(0), jnp.arange(64, dtype=jnp.uint32), D, C, 1.0,
                             'threefry')
  np.testing.assert_array_equal(np.sort(np.asarray(perm_KxC), axis=1), np.tile(np.arange(C), (64, 1)))
  assert len({tuple(p) for p in np.asarray(perm_KxC).tolist()}) > 50  # Not all the same.


def test_seen_and_unseen_ids_are_disjoint():
  for num_tasks in (1, 2**10, -1):
    seen = np.asarray(_task_ids(jax.random.key(0), 4096, num_tasks, False))
    unseen = np.asarray(_task_ids(jax.random.key(0), 4096, num_tasks, True))
    assert seen.max() < projected.UNSEEN_OFFSET <= unseen.min()
    assert not set(seen.tolist()) & set(unseen.tolist())


@pytest.mark.parametrize('projection', ['threefry', 'threefry_fast'])
@pytest.mark.parametrize('scale', [1.0, 4.0])
def test_projection_statistics_match_scale(scale, projection):
  """A_ij ~ N(0, scale / d): over n = 16 tasks x 64 x 64 entries the estimates' standard
  errors are sqrt(scale / d / n) for the mean, sqrt(2 / n) = 0.55% (relative) for the
  variance and sqrt(24 / n) = 0.019 for the kurtosis; the bounds are 5 of them."""
  d, k = 64, 16
  a_KxDxD = np.asarray(_task_params(jax.random.key(0), jnp.arange(k, dtype=jnp.uint32), d, C,
                                    scale, projection)[0], np.float64)
  n, var = a_KxDxD.size, scale / d
  assert abs(a_KxDxD.mean()) < 5 * np.sqrt(var / n)
  np.testing.assert_allclose(a_KxDxD.var(), var, rtol=5 * np.sqrt(2 / n))
  np.testing.assert_allclose((a_KxDxD**4).mean() / a_KxDxD.var()**2, 3.0,
                             atol=5 * np.sqrt(24 / n))  # Gaussian tails, not uniform ones.
  # Each task's own projection has the variance too (no task drawn from a shared stream).
  np.testing.assert_allclose(a_KxDxD.var(axis=(1, 2)), var, rtol=5 * np.sqrt(2 / (d * d)))
  assert len({a.tobytes() for a in a_KxDxD}) == k


def test_bias_fraction_keeps_identity_permutation():
  x_NxD = jax.random.normal(jax.random.key(0), (N, D))
  y_N = jnp.arange(N, dtype=jnp.int32) % C
  ep = _sample(jax.random.key(1), jax.random.key(99), x_NxD, y_N, batch_size=8,
               seq_len=T, num_tasks=-1, num_classes=C, bias_fraction=0.5)
  ids_B = _task_ids(jax.random.split(jax.random.key(1))[0], 8, -1, False)
  a_BxDxD, perm_BxC = _task_params(jax.random.key(99), ids_B, D, C, 1.0, 'threefry')
  for b in range(8):
    a_DxD, perm_C = a_BxDxD[b], perm_BxC[b]
    x_TxD = ep.x_BxTxD[b] @ jnp.linalg.inv(a_DxD).T
    idx_T = jnp.linalg.norm(x_TxD[:, None] - x_NxD[None], axis=-1).argmin(-1)
    expected = y_N[idx_T] if b < 4 else perm_C[y_N[idx_T]]
    np.testing.assert_array_equal(ep.y_BxT[b], expected)


def test_gpicl_tokens_carry_previous_label():
  ep = tasks.Episode(jnp.ones((2, 3, 4)), jnp.array([[1, 2, 0], [0, 0, 1]], jnp.int32))
  tok = tasks.tokens(ep, 3, 'gpicl')
  assert tok.shape == (2, 3, 7)
  np.testing.assert_array_equal(tok[0, :, 4:], [[0, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_context_query_tokens_interleave_query_then_context():
  x = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
  ep = tasks.Episode(x, jnp.array([[1, 2, 0], [0, 0, 1]], jnp.int32))
  tok = tasks.tokens(ep, 3, 'context_query')
  assert tok.shape == (2, 6, 7)
  np.testing.assert_array_equal(tok[0, 0::2, :4], x[0])  # Queries: x_j ...
  np.testing.assert_array_equal(tok[0, 0::2, 4:], 0)  # ... with no label.
  np.testing.assert_array_equal(tok[0, 1::2, :4], x[0])  # Contexts: x_j with onehot(y_j).
  np.testing.assert_array_equal(tok[0, 1::2, 4:], np.eye(3)[[1, 2, 0]])


def test_context_query_mask():
  m = tasks.attention_mask('context_query', 4)
  for j in range(4):
    q, c = 2 * j, 2 * j + 1
    # Query j sees exactly contexts 0..j-1 and itself.
    assert set(np.flatnonzero(m[q])) == {2 * i + 1 for i in range(j)} | {q}
    # Context j sees exactly contexts 0..j.
    assert set(np.flatnonzero(m[c])) == {2 * i + 1 for i in range(j + 1)}
  np.testing.assert_array_equal(tasks.attention_mask('gpicl', 4), np.tril(np.ones((4, 4), bool)))


def test_interleaved_tokens_alternate_inputs_and_regression_targets():
  x = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4) + 1
  y = jnp.array([[0.5, -1.0, 2.0], [1.0, 0.0, 3.0]], jnp.float32)
  tok = tasks.tokens(tasks.Episode(x, y), 1, 'interleaved')
  assert tok.shape == (2, 6, 5)
  np.testing.assert_array_equal(tok[0, 0::2, :4], x[0])  # x tokens [x_j, 0] ...
  np.testing.assert_array_equal(tok[0, 0::2, 4], 0)
  np.testing.assert_array_equal(tok[0, 1::2, :4], 0)  # ... then label tokens [0, y_j].
  np.testing.assert_array_equal(tok[0, 1::2, 4], y[0])
  np.testing.assert_array_equal(tasks.attention_mask('interleaved', 3), np.tril(np.ones((6, 6), bool)))
  outputs = jnp.arange(6.0)[None, :, None]
  np.testing.assert_array_equal(tasks.predictions(outputs, 'interleaved')[0, :, 0], [0, 2, 4])


def test_interleaved_class_labels_are_onehot():
  ep = tasks.Episode(jnp.ones((1, 2, 3)), jnp.array([[2, 0]], jnp.int32))
  tok = tasks.tokens(ep, 4, 'interleaved')
  np.testing.assert_array_equal(tok[0, 1::2, 3:], np.eye(4)[[2, 0]])


@pytest.mark.parametrize('prompt', ['gpicl', 'interleaved', 'context_query'])
def test_prediction_at_t_ignores_labels_from_t_on(prompt):
  """A model's prediction of y_t may not see y_t or anything later, in every prompt."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from icl_jax import models  # pylint: disable=g-import-not-at-top
  from icl_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  mc = config_lib.base_config().model
  mc.width, mc.depth, mc.num_heads, mc.qkv_size = 16, 2, 2, 8
  t, d = 5, 3
  model = models.build(mc, in_features=d + 1, out_features=1,
                       max_len=tasks.num_tokens(prompt, t), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (1, t, d))
  y = jax.random.normal(jax.random.key(1), (1, t))
  mask = jnp.asarray(tasks.attention_mask(prompt, t))
  predict = lambda y: tasks.predictions(model(tasks.tokens(tasks.Episode(x, y), 1, prompt),
                                              mask), prompt)[0, :, 0]
  base = predict(y)
  for j in range(t):
    changed = predict(y.at[0, j].add(10.0))
    np.testing.assert_allclose(changed[:j + 1], base[:j + 1], atol=1e-5)
    if j + 1 < t:
      assert not np.allclose(changed[j + 1:], base[j + 1:])  # Later ones do use y_j.
