"""Bad input, round three (issue 27), class 6: the Python API (`icl_jax.load`, `Trained`).

A table of arguments a notebook user might pass, each giving a correct result or one
UserError that names the expected type or shape; then a hypothesis fuzzer of random
arguments to load / logits / predict / sample_episodes against one small trained run
(conftest's `trained_run`, shared by the session), with the property: a correct result
(right shapes, finite, labels in range) or exactly one UserError line, never another
exception. Shapes are drawn from a few values, so the programs compile once each.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Any, Callable

from hypothesis import HealthCheck
from hypothesis import event
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import icl_jax
from icl_jax import api
from icl_jax.errors import UserError

B, T, D, C = 4, 10, 64, 10  # trained_run: tiny_config on digits at 8x8.


@pytest.fixture(scope='module')
def trained(trained_run):
  return icl_jax.load(trained_run[0])


@pytest.fixture(scope='module')
def episode(trained):
  ep = trained.sample_episodes(jax.random.key(0), B)
  return np.asarray(ep.x_BxTxD), np.asarray(ep.y_BxT)


def outcome(call: Callable[[], Any]) -> Any:
  """call()'s result, or its UserError's message (one line, asserted)."""
  try:
    return call()
  except UserError as e:
    assert str(e) and '\n' not in str(e), str(e)
    return str(e)


def check_logits(result, b, t):
  assert result.shape == (b, t, C) and result.dtype == jnp.float32, result.shape
  assert np.isfinite(np.asarray(result)).all()


def check_predict(result, b, t):
  assert result.shape == (b, t) and jnp.issubdtype(result.dtype, jnp.integer), result.shape
  assert 0 <= int(result.min()) and int(result.max()) < C


def check_episode(result, b):
  assert result.x_BxTxD.shape == (b, T, D) and result.y_BxT.shape == (b, T)
  assert np.isfinite(np.asarray(result.x_BxTxD)).all()
  assert 0 <= int(result.y_BxT.min()) and int(result.y_BxT.max()) < C


# ---------------------------------------------------------------------------------------
# The table: (id, call(trained, x, y, workdir, data_dir), message regex or a check).
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
  id: str
  call: Callable[..., Any]
  expect: str | Callable[[Any], None]  # A regex of the UserError, or a check of the result.


def _loads(step):
  return lambda result: (isinstance(result, api.Trained) and result.step == step) or _fail(result)


def _fail(result):
  raise AssertionError(f'unexpected result {result!r}')


KEY = jax.random.key(1)
AVAILABLE = r"has steps 20, 40\."
CASES = [
    # icl_jax.load's arguments.
    Case('load_pathlib_path', lambda tr, x, y, w, d: icl_jax.load(pathlib.Path(w)), _loads(40)),
    Case('load_int_workdir', lambda tr, x, y, w, d: icl_jax.load(5),
         r'workdir must be a str or os\.PathLike \(e\.g\. pathlib\.Path\) naming a run\'s '
         r'workdir; got int 5\.'),
    Case('load_bytes_workdir', lambda tr, x, y, w, d: icl_jax.load(w.encode()),
         r'workdir must be a str or os\.PathLike .*got bytes'),
    Case('load_nul_in_workdir', lambda tr, x, y, w, d: icl_jax.load(w + '\0'),
         r'contains a NUL character'),
    Case('load_step_as_str', lambda tr, x, y, w, d: icl_jax.load(w, '20'),
         r"step must be None \(the newest checkpoint\) or an int >= 0, a checkpoint's step; got "
         r"str '20'; .*" + AVAILABLE),
    Case('load_step_as_whole_float', lambda tr, x, y, w, d: icl_jax.load(w, 20.0),
         r'got float 20\.0; .*' + AVAILABLE),
    Case('load_step_as_bool', lambda tr, x, y, w, d: icl_jax.load(w, True), r'got bool True'),
    Case('load_negative_step', lambda tr, x, y, w, d: icl_jax.load(w, -1),
         r'got int -1; .*' + AVAILABLE),
    Case('load_numpy_int_step', lambda tr, x, y, w, d: icl_jax.load(w, np.int64(20)), _loads(20)),
    Case('load_step_not_saved', lambda tr, x, y, w, d: icl_jax.load(w, 7),
         r'no checkpoint at step 7; available steps: 20, 40'),
    Case('load_data_dir_as_int', lambda tr, x, y, w, d: icl_jax.load(w, data_dir=3),
         r'data_dir must be a str or os\.PathLike .*got int 3'),
    Case('load_data_dir_as_path', lambda tr, x, y, w, d: icl_jax.load(
        w, 20, data_dir=pathlib.Path(d)), _loads(20)),
    # logits / predict: shapes, dtypes, values.
    Case('logits_shorter_episode', lambda tr, x, y, w, d: (tr.logits(x[:, :4], y[:, :4]),
                                                           tr.logits(x, y)),
         lambda r: np.testing.assert_allclose(r[0], r[1][:, :4], rtol=2e-5, atol=2e-5)),
    Case('logits_longer_than_seq_len', lambda tr, x, y, w, d: tr.logits(
        np.concatenate([x, x], 1), np.concatenate([y, y], 1)),
         r'x_BxTxD must have shape B x T x 64 \(B >= 1 episodes, 1 <= T <= 10 examples each, '
         r"64 features: the model's num_features and seq_len\); got shape \(4, 20, 64\)\."),
    Case('logits_wrong_features', lambda tr, x, y, w, d: tr.logits(x[..., :60], y),
         r'got shape \(4, 10, 60\)'),
    Case('logits_one_episode_without_batch_axis', lambda tr, x, y, w, d: tr.logits(x[0], y[0]),
         r'B x T x 64 .*got shape \(10, 64\)'),
    Case('logits_empty_batch', lambda tr, x, y, w, d: tr.logits(x[:0], y[:0]),
         r'B >= 1 episodes.*got shape \(0, 10, 64\)'),
    Case('logits_labels_of_another_batch', lambda tr, x, y, w, d: tr.logits(x, y[:2]),
         r'y_BxT must have shape B x T = \(4, 10\), one label per example of x_BxTxD; got '
         r'shape \(2, 10\)'),
    Case('logits_float_labels', lambda tr, x, y, w, d: tr.logits(x, y.astype(np.float32)),
         r'y_BxT must hold integer class labels in \[0, 10\) for this classification model; '
         r'got dtype float32'),
    Case('logits_labels_out_of_range', lambda tr, x, y, w, d: tr.logits(x, y + 10),
         r'y_BxT must hold class labels in \[0, 10\); it holds labels from 1\d to 19'),
    Case('predict_negative_labels', lambda tr, x, y, w, d: tr.predict(x, y - 10),
         r'labels from -10 to -\d'),
    Case('logits_labels_out_of_range_on_device', lambda tr, x, y, w, d: tr.logits(
        jnp.asarray(x), jnp.asarray(y).at[0, 0].set(99)), r'labels from 0 to 99'),
    Case('logits_nan_input', lambda tr, x, y, w, d: tr.logits(np.where(x > 1, np.nan, x), y),
         r'x_BxTxD holds NaN or inf .*Pass finite inputs'),
    Case('logits_float64_beyond_float32', lambda tr, x, y, w, d: tr.logits(
        x.astype(np.float64) * 1e300, y),
         r"beyond float32's range"),
    Case('logits_complex_input', lambda tr, x, y, w, d: tr.logits(x.astype(np.complex64), y),
         r'x_BxTxD must hold real numbers \(integers or floats\); got dtype complex64'),
    Case('logits_bool_labels', lambda tr, x, y, w, d: tr.logits(x, y > 4),
         r'y_BxT must hold real numbers .*got dtype bool'),
    Case('logits_string_input', lambda tr, x, y, w, d: tr.logits('x', y),
         r"x_BxTxD must be an array \(numpy or jax\); got str 'x'"),
    Case('logits_ragged_lists', lambda tr, x, y, w, d: tr.logits([[[0.0] * 64], [[0.0]]], y),
         r'x_BxTxD must be an array \(numpy or jax\); got list that numpy cannot read'),
    Case('logits_nested_lists', lambda tr, x, y, w, d: tr.logits(x.tolist(), y.tolist()),
         lambda r: check_logits(r, B, T)),
    Case('logits_int_and_float16_inputs', lambda tr, x, y, w, d: (
        tr.logits(x.astype(np.float16), y.astype(np.uint8)), tr.logits(np.zeros((B, T, D), int),
                                                                        y)),
         lambda r: [check_logits(v, B, T) for v in r]),
    Case('logits_under_jit', lambda tr, x, y, w, d: jax.jit(tr.logits)(x, y),
         lambda r: check_logits(r, B, T)),
    # sample_episodes.
    Case('sample_int_key', lambda tr, x, y, w, d: tr.sample_episodes(0, 2),
         r'key must be one JAX random key, e\.g\. jax\.random\.key\(0\) \(or '
         r'jax\.random\.PRNGKey\(0\)\); got int 0\.'),
    Case('sample_batch_of_keys', lambda tr, x, y, w, d: tr.sample_episodes(
        jax.random.split(KEY, 2), 2), r'got a key array of shape \(2,\)'),
    Case('sample_raw_key_is_the_typed_one', lambda tr, x, y, w, d: (
        tr.sample_episodes(jax.random.key_data(KEY), 2), tr.sample_episodes(KEY, 2)),
         lambda r: np.testing.assert_array_equal(r[0].x_BxTxD, r[1].x_BxTxD)),
    Case('sample_float_batch_size', lambda tr, x, y, w, d: tr.sample_episodes(KEY, 2.0),
         r'batch_size must be a positive int \(episodes to sample\), e\.g\. 8; got float 2\.0'),
    Case('sample_zero_batch_size', lambda tr, x, y, w, d: tr.sample_episodes(KEY, 0),
         r'batch_size must be a positive int .*got int 0'),
    Case('sample_bool_batch_size', lambda tr, x, y, w, d: tr.sample_episodes(KEY, True),
         r'got bool True'),
    Case('sample_unseen_as_str', lambda tr, x, y, w, d: tr.sample_episodes(KEY, 2, unseen='no'),
         r"unseen must be True \(held-out tasks on the held-out split\) or False \(tasks of the "
         r"training pool\); got str 'no'"),
    Case('sample_numpy_arguments', lambda tr, x, y, w, d: tr.sample_episodes(
        KEY, np.int32(2), unseen=np.bool_(False)), lambda r: check_episode(r, 2)),
]


@pytest.mark.parametrize('case', CASES, ids=[c.id for c in CASES])
def test_api_case(trained, episode, trained_run, data_dir, case):
  result = outcome(lambda: case.call(trained, *episode, trained_run[0], data_dir))
  if isinstance(case.expect, str):
    assert isinstance(result, str), f'returned {result!r}, expected {case.expect!r}'
    assert re.search(case.expect, result), result
  else:
    assert not isinstance(result, str), result
    case.expect(result)


def test_the_table_has_at_least_thirty_cases():
  assert len(CASES) >= 30


def test_a_regression_model_reads_finite_real_targets():
  """The regression branch of the checks, without training a regression run."""
  sizes = dict(num_features=3, seq_len=5, num_classes=1, regression=True)
  x = np.zeros((2, 5, 3), np.float32)
  ep = api.checked_episode(x, np.arange(10).reshape(2, 5), **sizes)  # Integer targets: cast.
  assert ep.y_BxT.dtype == np.float32 and ep.x_BxTxD.dtype == np.float32
  with pytest.raises(UserError, match=r'y_BxT holds NaN or inf .*finite real targets'):
    api.checked_episode(x, np.full((2, 5), np.inf), **sizes)
  with pytest.raises(UserError, match=r'y_BxT must have shape B x T = \(2, 5\)'):
    api.checked_episode(x, np.zeros(5), **sizes)


# ---------------------------------------------------------------------------------------
# The fuzzer.
# ---------------------------------------------------------------------------------------
def mostly(good, bad):
  """One of `good` 9 times in 10, else one of `bad`: about half the calls are correct."""
  return st.integers(0, 9).flatmap(lambda i: st.sampled_from(good if i else bad))


@st.composite
def arrays(draw, rank_shape, good_dtypes, bad_dtypes, values):
  """(container, dtype, shape, values) of an array argument, and the array."""
  shape = draw(rank_shape)
  dtype = draw(mostly(good_dtypes, bad_dtypes))
  fill = draw(values)
  rng = np.random.default_rng(draw(st.integers(0, 2**16)))
  base = rng.integers(0, C, shape) if fill == 'labels' else rng.normal(size=shape)
  base = {'labels': base, 'normal': base, 'nan': np.where(base > 1, np.nan, base),
          'inf': np.where(base > 1, -np.inf, base), 'huge': base * 1e300,
          'negative': base - C, 'too_large': base + C}[fill]
  with np.errstate(all='ignore'):
    value = base.astype(dtype) if dtype not in ('str', 'object') else base.astype(
        'U8' if dtype == 'str' else object)
  container = draw(mostly(['numpy', 'jax'], ['list', 'scalar']))
  if container == 'jax' and value.dtype.kind in 'iufb' and value.dtype.itemsize <= 4:
    return jnp.asarray(value)
  if container == 'list':
    return value.tolist()
  if container == 'scalar':
    return draw(st.sampled_from([None, 3, 'x', b'x', 1.5]))
  return value


# Few shapes that run (each compiles once): B = 2, T = 10 or 5; the rare others include
# valid ones (B = 1, T = 1) and invalid ones.
BATCHES = mostly([2], [0, 1])
LENGTHS = mostly([T, 5], [0, 1, T + 1])
SHAPES_X = st.tuples(BATCHES, LENGTHS, mostly([D], [D - 1, 1])).flatmap(
    lambda s: mostly([s], [s[1:], (*s, 1), s[:1]]))


@st.composite
def logits_arguments(draw):
  x = draw(arrays(SHAPES_X, ['float32', 'float64', 'float16', 'int32'], ['bool', 'complex64',
                                                                          'str', 'object'],
                  mostly(['normal'], ['nan', 'inf', 'huge'])))
  shape = np.shape(x) if not isinstance(x, (str, bytes)) else ()
  y_shape = mostly([tuple(shape[:2])], [tuple(shape[:1]), (*shape[:2], 1), (2, 2)])
  y = draw(arrays(y_shape, ['int32', 'int64', 'uint8'], ['float32', 'bool', 'str'],
                  mostly(['labels'], ['negative', 'too_large'])))
  return x, y


KEYS = mostly(['key', 'raw'], ['int', 'keys', 'float', 'str', 'none', 'raw_wrong_shape'])


def _key(kind):
  return {'key': jax.random.key(2), 'raw': jax.random.PRNGKey(2), 'int': 2,
          'keys': jax.random.split(jax.random.key(2), 3), 'float': jnp.zeros(2),
          'str': 'key', 'none': None, 'raw_wrong_shape': jnp.zeros(3, jnp.uint32)}[kind]


@st.composite
def calls(draw):
  """(method, arguments) of one call."""
  # load restores a checkpoint (a second each): drawn less often than the others.
  method = draw(st.sampled_from(['load'] + ['logits', 'predict', 'sample'] * 3))
  if method == 'load':
    return method, (draw(mostly(['str', 'path'], ['bytes', 'int', 'none', 'missing', 'empty',
                                                  'nul', 'url'])),
                    draw(mostly([None, 20, 40], [7, -1, '20', 20.0, True, 2**70, np.int64(40)])),
                    draw(mostly(['none', 'str', 'path'], ['int', 'list'])))
  if method in ('logits', 'predict'):
    return method, draw(logits_arguments())
  return method, (draw(KEYS), draw(mostly([2], [0, -1, 2.0, '2', True, np.int64(3)])),
                  draw(mostly([True, False], ['no', 1, None, np.bool_(True)])))


def _call(trained, workdir, data_dir, method, args):
  if method == 'load':
    w, step, d = args
    w = {'str': workdir, 'path': pathlib.Path(workdir), 'bytes': workdir.encode(), 'int': 1,
         'none': None, 'missing': workdir + '_missing', 'empty': '', 'nul': workdir + '\0',
         'url': 'gs://bucket/run'}[w]
    d = {'none': None, 'str': data_dir, 'path': pathlib.Path(data_dir), 'int': 1,
         'list': [data_dir]}[d]
    return icl_jax.load(w, step, data_dir=d)
  if method in ('logits', 'predict'):
    return getattr(trained, method)(*args)
  key, batch_size, unseen = args
  return trained.sample_episodes(_key(key), batch_size, unseen=unseen)


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(call=calls())
def test_any_api_call_is_correct_or_one_user_error(trained, trained_run, data_dir, call):
  method, args = call
  result = outcome(lambda: _call(trained, trained_run[0], data_dir, method, args))
  event(f'{method}: ' + ('refused' if isinstance(result, str) else 'ran'))
  if isinstance(result, str):
    return
  if method == 'load':
    assert isinstance(result, api.Trained) and result.step in (20, 40)
  elif method == 'sample':
    check_episode(result, int(args[1]))
  else:
    b, t = np.shape(args[0])[:2]
    (check_logits if method == 'logits' else check_predict)(result, b, t)
