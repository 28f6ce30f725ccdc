"""The synthetic task families: shapes, priors, task pools and the input transforms."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_jax.tasks import families
from icl_jax.tasks import parity
from icl_jax.tasks import projected

D, T, B = 8, 32, 512  # T > D: least squares recovers a linear task from one episode.
OPTS = families.TaskOptions(dim=D)
TASK_KEY = 99
REGRESSION = ['linear', 'sparse_linear', 'relu2nn', 'tree', 'gp']
GAUSSIAN_X = ['linear', 'sparse_linear', 'relu2nn', 'tree']

# Jitted once per family and reused: compiling dominates these tests' time. num_tasks and
# active_dim are traced, so one program serves every pool size and truncation; except for
# gp, whose program for a traced num_tasks computes both of its paths: its tests compile
# one program per pool size to run only the path they test.
_STATIC = ('batch_size', 'seq_len', 'unseen', 'options')
_SAMPLE = {name: jax.jit(family.sample, static_argnames=_STATIC)
           for name, family in families.SYNTHETIC_FAMILIES.items()}
_SAMPLE_STATIC_POOL = {name: jax.jit(family.sample, static_argnames=_STATIC + ('num_tasks',))
                       for name, family in families.SYNTHETIC_FAMILIES.items()}


def draw(name, key=1, *, num_tasks=-1, unseen=False, options=OPTS, active_dim=None,
         static_pool=None):
  """One batch of B episodes of T points; `static_pool` defaults to True for gp only."""
  if static_pool is None:
    static_pool = name == 'gp'
  if static_pool:
    fn = _SAMPLE_STATIC_POOL[name]
  else:
    fn, num_tasks = _SAMPLE[name], jnp.int32(num_tasks)
  if active_dim is not None:
    active_dim = jnp.int32(active_dim)
  return fn(jax.random.key(key), jax.random.key(TASK_KEY), batch_size=B, seq_len=T,
            num_tasks=num_tasks, unseen=unseen, options=options, active_dim=active_dim)


@functools.cache
def sample(name, key=1, **kw):
  """draw() as numpy (x_BxTxD, y_BxT), memoised: several tests read the same batch."""
  x_BxTxD, y_BxT = draw(name, key, **kw)
  return np.asarray(x_BxTxD), np.asarray(y_BxT)


def least_squares(x_BxTxD, y_BxT):
  """(w_BxD, residual_BxT) of the per-episode least-squares fit y = x.w, in float64."""
  x, y = x_BxTxD.astype(np.float64), y_BxT.astype(np.float64)
  w_BxD = np.stack([np.linalg.lstsq(x_TxD, y_T, rcond=None)[0] for x_TxD, y_T in zip(x, y)])
  return w_BxD, y - np.einsum('btd,bd->bt', x, w_BxD)


@pytest.mark.parametrize('name', list(families.SYNTHETIC_FAMILIES))
def test_shapes_and_dtypes(name):
  family = families.SYNTHETIC_FAMILIES[name]
  x_BxTxD, y_BxT = draw(name)
  assert x_BxTxD.shape == (B, T, D) and x_BxTxD.dtype == jnp.float32
  assert y_BxT.shape == (B, T)
  if family.kind == 'regression':
    assert y_BxT.dtype == jnp.float32
  else:
    assert y_BxT.dtype == jnp.int32
    assert 0 <= int(y_BxT.min()) and int(y_BxT.max()) < family.num_classes(OPTS)
  assert np.isfinite(np.asarray(x_BxTxD)).all() and np.isfinite(np.asarray(y_BxT)).all()


@pytest.mark.parametrize('name', list(families.SYNTHETIC_FAMILIES))
def test_deterministic_for_a_key_and_different_across_keys(name):
  a, b, c = sample(name, key=1), draw(name, key=1), sample(name, key=2)
  np.testing.assert_array_equal(a[0], b.x_BxTxD)
  np.testing.assert_array_equal(a[1], b.y_BxT)
  assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_registry_declares_kind_classes_and_variance():
  o = families.TaskOptions(dim=5, sparsity=2, noise_std=0.5, num_classes=7)
  expected = {  # name: (kind, num_classes, y_variance)
      'linear': ('regression', 1, 5.25), 'sparse_linear': ('regression', 1, 2.25),
      'relu2nn': ('regression', 1, 5.25), 'tree': ('regression', 1, 1.25),
      'gp': ('regression', 1, 1.25), 'parity': ('classification', 2, 1.0),
      'recall': ('classification', 7, 1.0)}
  assert set(families.SYNTHETIC_FAMILIES) == set(expected)
  for name, (kind, num_classes, y_variance) in expected.items():
    family = families.SYNTHETIC_FAMILIES[name]
    assert family.kind == kind
    assert family.num_classes(o) == num_classes
    assert family.y_variance(o) == pytest.approx(y_variance)
  hash(o)  # A static argument of jit.


@pytest.mark.parametrize('name', GAUSSIAN_X)
def test_regression_inputs_are_standard_normal(name):
  x_BxTxD, _ = sample(name)
  assert abs(x_BxTxD.mean()) < 0.02
  np.testing.assert_allclose(x_BxTxD.var(), 1.0, rtol=0.03)


def test_gp_inputs_are_uniform():
  x_BxTxD, _ = sample('gp')
  assert x_BxTxD.min() >= 0.0 and x_BxTxD.max() <= 1.0
  np.testing.assert_allclose(x_BxTxD.mean(), 0.5, atol=0.01)
  np.testing.assert_allclose(x_BxTxD.var(), 1 / 12, rtol=0.03)


@pytest.mark.parametrize('name', REGRESSION)
def test_second_moment_of_y_is_y_variance(name):
  y = np.concatenate([sample(name, key)[1] for key in (1, 2)]).astype(np.float64)
  y_variance = families.SYNTHETIC_FAMILIES[name].y_variance(OPTS)
  np.testing.assert_allclose((y**2).mean(), y_variance, rtol=0.1)


def test_linear_episodes_are_exactly_linear():
  _, residual_BxT = least_squares(*sample('linear'))
  assert np.abs(residual_BxT).max() < 1e-4


def test_sparse_linear_depends_on_exactly_sparsity_coordinates():
  w_BxD, residual_BxT = least_squares(*sample('sparse_linear'))
  assert np.abs(residual_BxT).max() < 1e-4
  nonzero_B = (np.abs(w_BxD) > 1e-4).sum(-1)
  assert nonzero_B.max() <= OPTS.sparsity
  # A true weight can itself be below the threshold, with probability ~1e-4 per weight.
  assert (nonzero_B == OPTS.sparsity).mean() > 0.99
  assert len({tuple(np.flatnonzero(np.abs(w) > 1e-4)) for w in w_BxD}) > 40  # Supports vary.


def test_tree_takes_at_most_two_to_the_depth_values_per_task():
  _, y_BxT = sample('tree')
  distinct_B = np.array([len(np.unique(y_T)) for y_T in y_BxT])
  assert distinct_B.max() <= 2**OPTS.tree_depth < T
  assert distinct_B.mean() > 4  # Not a constant either.


def test_noise_std_sets_residual_variance():
  options = families.TaskOptions(dim=D, noise_std=0.5)
  _, residual_BxT = least_squares(*sample('linear', options=options))
  # The least-squares residual of T points and D weights has T - D degrees of freedom.
  np.testing.assert_allclose((residual_BxT**2).sum() / (B * (T - D)), 0.25, rtol=0.05)


# One program serves the input-transform tests: x_scale and x_shift with a traced active_dim.
SHIFTED = families.TaskOptions(dim=D, x_scale=2.0, x_shift=1.0)


def test_x_scale_and_shift_apply_before_y():
  x_BxTxD, y_BxT = sample('linear', options=SHIFTED, active_dim=D)
  np.testing.assert_allclose(x_BxTxD.mean(), 1.0, atol=0.05)
  np.testing.assert_allclose(x_BxTxD.var(), 4.0, rtol=0.03)
  # y = w.z would be affine in the shifted x, not linear: no exact fit without an intercept.
  _, residual_BxT = least_squares(x_BxTxD, y_BxT)
  assert np.abs(residual_BxT).max() < 1e-3


@pytest.mark.parametrize('name,options', [('linear', SHIFTED), ('gp', OPTS)])
def test_active_dim_zeroes_trailing_coordinates_before_y(name, options):
  active = 3
  x_BxTxD, y_BxT = sample(name, options=options, active_dim=active)
  assert (x_BxTxD[..., active:] == 0).all()  # Zeroed after the shift, as in Garg et al.
  assert (x_BxTxD[..., :active] != 0).mean() > 0.99
  assert np.isfinite(y_BxT).all()
  if name == 'linear':
    _, residual_BxT = least_squares(x_BxTxD[..., :active], y_BxT)
    assert np.abs(residual_BxT).max() < 1e-3


def distinct_rows(a_BxD, decimals=3):
  return {tuple(row) for row in np.round(a_BxD, decimals).tolist()}


def test_finite_pool_reuses_its_tasks_and_unseen_tasks_are_new():
  seen_w, _ = least_squares(*sample('linear', num_tasks=4))
  unseen_w, _ = least_squares(*sample('linear', num_tasks=4, unseen=True))
  assert len(distinct_rows(seen_w)) == 4  # 512 draws from 4 tasks reach all of them.
  assert len(distinct_rows(unseen_w)) > B - 5  # Unseen ids come from a range of 2**31.
  assert not distinct_rows(seen_w) & distinct_rows(unseen_w)


def parity_consistent_subsets(x_BxTxD, y_BxT, k):
  """For each episode, the k-subsets S with y == parity of the -1 bits in S."""
  negative_BxTxD = x_BxTxD < 0
  found = [[] for _ in range(x_BxTxD.shape[0])]
  for subset in itertools.combinations(range(x_BxTxD.shape[-1]), k):
    labels_BxT = negative_BxTxD[..., list(subset)].sum(-1) % 2
    for b in np.flatnonzero((labels_BxT == y_BxT).all(-1)):
      found[b].append(subset)
  return found


def test_parity_labels_are_the_parity_of_the_task_subset():
  x_BxTxD, y_BxT = sample('parity')
  assert set(np.unique(x_BxTxD).tolist()) == {-1.0, 1.0}
  assert abs(y_BxT.mean() - 0.5) < 0.02
  found = parity_consistent_subsets(x_BxTxD, y_BxT, OPTS.sparsity)
  # 32 random points leave one consistent subset of the 56, up to a chance of ~1e-8.
  assert all(len(subsets) == 1 for subsets in found)
  ids_B = projected.sample_task_ids(jax.random.split(jax.random.key(1))[0], B, -1, False)
  for b in range(4):
    subset = parity.parity_subset(jax.random.key(TASK_KEY), ids_B[b], OPTS)
    assert found[b][0] == tuple(sorted(np.asarray(subset).tolist()))
  assert len({subsets[0] for subsets in found}) > 40  # Subsets vary across tasks.


def test_parity_finite_pool():
  found = parity_consistent_subsets(*sample('parity', num_tasks=4), OPTS.sparsity)
  assert 1 < len({subsets[0] for subsets in found}) <= 4


def test_recall_values_repeat_with_their_keys():
  x_BxTxD, y_BxT = sample('recall')
  np.testing.assert_array_equal(x_BxTxD.sum(-1), 1.0)  # One-hot keys.
  key_BxT = x_BxTxD.argmax(-1)
  same_key_BxTxT = key_BxT[:, :, None] == key_BxT[:, None, :]
  same_value_BxTxT = y_BxT[:, :, None] == y_BxT[:, None, :]
  assert (same_value_BxTxT | ~same_key_BxTxT).all()
  np.testing.assert_allclose(np.bincount(key_BxT.ravel(), minlength=D) / key_BxT.size,
                             1 / D, rtol=0.1)
  counts_C = np.bincount(y_BxT.ravel(), minlength=OPTS.num_classes)
  np.testing.assert_allclose(counts_C / y_BxT.size, 1 / OPTS.num_classes, rtol=0.2)
  assert np.mean([len(np.unique(y_T)) for y_T in y_BxT]) > 3  # Values differ across keys.


def test_recall_finite_pool():
  x_BxTxD, y_BxT = sample('recall', num_tasks=4)
  key_BxT = x_BxTxD.argmax(-1)
  value_BxD = np.full((B, D), -1)
  for b in range(B):
    value_BxD[b, key_BxT[b]] = y_BxT[b]
  full = [v for v in value_BxD if (v >= 0).all()]  # Episodes that showed every key.
  assert len(full) > 100 and len(distinct_rows(np.array(full))) <= 4


GP_POOLS = [-1, 2**20]  # The exact joint draw; fixed random-Fourier-feature functions.
GP_1D = families.TaskOptions(dim=1, length_scale=0.3)


def test_traced_num_tasks_matches_python_int():
  traced = sample('linear', num_tasks=4)
  static = sample('linear', num_tasks=4, static_pool=True)
  np.testing.assert_array_equal(traced[0], static[0])
  np.testing.assert_array_equal(traced[1], static[1])


@pytest.mark.parametrize('num_tasks', GP_POOLS)
def test_gp_traced_num_tasks_selects_the_path_of_python_int(num_tasks):
  """A traced num_tasks computes both of gp's paths and must keep the one a Python int runs."""
  traced = sample('gp', num_tasks=num_tasks, options=GP_1D, static_pool=False)
  static = sample('gp', num_tasks=num_tasks, options=GP_1D)
  np.testing.assert_array_equal(traced[0], static[0])
  np.testing.assert_allclose(traced[1], static[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('num_tasks', GP_POOLS)
def test_gp_identical_inputs_share_one_function_value(num_tasks):
  """With x_1 = ... = x_T, y_t = f(x) + e_t: Var f(x) = k(x, x) = 1 and Var e_t = noise^2."""
  options = families.TaskOptions(dim=1, x_low=0.5, x_high=0.5, noise_std=0.3)
  y_BxT = np.concatenate(
      [sample('gp', key, num_tasks=num_tasks, options=options)[1] for key in (1, 2)])
  np.testing.assert_allclose(y_BxT.var(axis=1, ddof=1).mean(), 0.09, rtol=0.1)
  np.testing.assert_allclose(y_BxT.mean(axis=1).var(), 1 + 0.09 / T, rtol=0.2)


@pytest.mark.parametrize('num_tasks', GP_POOLS)
def test_gp_covariance_is_the_kernel(num_tasks):
  """E[y_s y_t] / E[y^2] over episodes, binned by |x_s - x_t|, against exp(-d^2 / (2 l^2)).

  Dividing by E[y^2] (itself checked to be 1) cancels the fluctuation common to all bins
  (the spread of the episodes' overall scale), so the kernel's shape is measured to ~0.015.
  """
  d_list, prod_list, y_list = [], [], []
  for key in (1, 2):
    x_BxTx1, y_BxT = sample('gp', key, num_tasks=num_tasks, options=GP_1D)
    assert np.isfinite(y_BxT).all()  # 32 points on [0, 1] make K numerically singular.
    s, t = np.triu_indices(T, 1)
    d_list.append(np.abs(x_BxTx1[:, s, 0] - x_BxTx1[:, t, 0]).ravel())
    prod_list.append((y_BxT[:, s] * y_BxT[:, t]).ravel())
    y_list.append(y_BxT)
  d, prod = np.concatenate(d_list), np.concatenate(prod_list)
  second_moment = (np.concatenate(y_list).astype(np.float64)**2).mean()
  np.testing.assert_allclose(second_moment, 1.0, rtol=0.1)
  edges = [0.0, 0.05, 0.15, 0.25, 0.35, 0.5, 0.7]
  for low, high in zip(edges[:-1], edges[1:]):
    in_bin = (d >= low) & (d < high)
    kernel = np.exp(-d[in_bin]**2 / (2 * GP_1D.length_scale**2)).mean()
    np.testing.assert_allclose(prod[in_bin].mean() / second_moment, kernel, atol=0.08,
                               err_msg=f'|x_s - x_t| in [{low}, {high})')


def test_gp_pool_tasks_are_fixed_functions():
  """One task: all B*T points lie on one smooth function; fresh draws do not."""
  def gaps(num_tasks):
    x_BxTx1, y_BxT = sample('gp', num_tasks=num_tasks, options=GP_1D, static_pool=False)
    order = np.argsort(x_BxTx1.ravel())
    return np.abs(np.diff(y_BxT.ravel()[order]))  # Neighbours, mostly from other episodes.
  assert gaps(1).max() < 0.05
  assert np.median(gaps(-1)) > 0.3


@pytest.mark.parametrize('name', ['sparse_linear', 'parity'])
def test_sparsity_above_dim_is_refused(name):
  with pytest.raises(ValueError, match='sparsity'):
    families.SYNTHETIC_FAMILIES[name].sample(
        jax.random.key(0), jax.random.key(1), batch_size=2, seq_len=3, num_tasks=-1,
        unseen=False, options=families.TaskOptions(dim=2, sparsity=3))
