"""Every model family: the common interface, causality, training, prompts, state sizes, and
the LSA's gradient-descent construction."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from icl_jax import config as config_lib
from icl_jax import models
from icl_jax import tasks
from icl_jax.errors import UserError

D, C, T, B = 5, 3, 6, 2  # Features, classes, examples, batch.
F = D + C
FAMILIES = ('transformer', 'lstm', 'outer_lstm', 'mlp', 'lsa')
RECURRENT = ('lstm', 'outer_lstm')


def model_config(name, depth=1):
  # One layer: compiling is most of this file's time, and every layer runs the same code.
  c = config_lib.base_config().model
  c.name = name
  c.width, c.depth, c.num_heads, c.qkv_size, c.mlp_ratio = 8, depth, 2, 4, 2
  return c


def model_fn(name, prompt):
  """rngs -> the model named `name`, sized for the test's tokens in the `prompt` format."""
  return lambda rngs: models.build(model_config(name), in_features=F, out_features=C,
                                   max_len=tasks.num_tokens(prompt, T), rngs=rngs,
                                   prompt=prompt)


def episode(seed):
  # numpy, not jax.random: eager jax sampling compiles a program per shape, seconds in all.
  rng = np.random.default_rng(seed)
  return tasks.Episode(jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32),
                       jnp.asarray(rng.integers(0, C, (B, T)), jnp.int32))


def init(make_model):
  """(graphdef, params) as icl_jax/steps.py holds a model: a graph and a pure dict.

  Initialised in one compiled call, as steps.py does: op by op it takes seconds.
  """
  graphdef = nnx.split(nnx.eval_shape(lambda: make_model(nnx.Rngs(0))))[0]
  # XLA's RngBitGenerator compiles in a fraction of the time that threefry takes.
  key = jax.random.key(0, impl='rbg')
  params = jax.jit(lambda: nnx.to_pure_dict(nnx.state(make_model(nnx.Rngs(key)), nnx.Param)))()
  return graphdef, params


@functools.cache
def built(name, prompt):
  return init(model_fn(name, prompt))


def jitted_forward(name, prompt):
  """tokens_BxSxF -> outputs_BxSxC through a pure jit-ed function of the model's params."""
  graphdef, params = built(name, prompt)
  mask_SxS = jnp.asarray(tasks.attention_mask(prompt, T))
  forward = jax.jit(lambda p, tokens_BxSxF: nnx.merge(graphdef, p)(tokens_BxSxF, mask_SxS))
  return lambda tokens_BxSxF: forward(params, tokens_BxSxF)


TX = optax.adam(1e-2)
CHANGED_AT = (0, 3, T - 1)


@functools.cache
def train_step(name):
  """One jit-ed Adam step on the gpicl prompt, pure in (params, opt_state) as steps.py's is.

  Returns (params, opt_state, loss, outputs_BxSxC before the update); one compilation per
  family serves both tests below.
  """
  graphdef, _ = built(name, 'gpicl')
  mask_SxS = jnp.asarray(tasks.attention_mask('gpicl', T))

  def loss_fn(params, tokens_BxSxF, y_BxS):
    outputs_BxSxC = nnx.merge(graphdef, params)(tokens_BxSxF, mask_SxS)
    loss_BxS = optax.softmax_cross_entropy_with_integer_labels(outputs_BxSxC, y_BxS)
    return loss_BxS.mean(), outputs_BxSxC

  @jax.jit
  def step(params, opt_state, tokens_BxSxF, y_BxS):
    (loss, outputs_BxSxC), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, tokens_BxSxF, y_BxS)
    updates, opt_state = TX.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, outputs_BxSxC

  return step


def variants():
  """tokens_VxBxSxF, y_VxBxS: an episode, then copies with token t changed, t in CHANGED_AT."""
  ep = episode(1)
  tokens_BxSxF = np.asarray(tasks.tokens(ep, C, 'gpicl'))
  rng = np.random.default_rng(1)
  changed = []
  for t in CHANGED_AT:
    changed.append(tokens_BxSxF.copy())
    changed[-1][:, t] += rng.normal(size=(B, F)).astype(np.float32)
  tokens_VxBxSxF = jnp.asarray(np.stack([tokens_BxSxF] + changed))
  return tokens_VxBxSxF, jnp.stack([ep.y_BxT] * (len(CHANGED_AT) + 1))


@pytest.mark.parametrize('name', FAMILIES)
def test_maps_tokens_to_outputs_causally_under_jit(name):
  _, params = built(name, 'gpicl')
  tokens_VxBxSxF, y_VxBxS = variants()
  v = len(CHANGED_AT) + 1
  *_, outputs_VBxSxC = train_step(name)(params, TX.init(params),
                                        tokens_VxBxSxF.reshape(v * B, T, F),
                                        y_VxBxS.reshape(v * B, T))
  assert outputs_VBxSxC.shape == (v * B, T, C)
  assert np.isfinite(outputs_VBxSxC).all()
  outputs_VxBxSxC = outputs_VBxSxC.reshape(v, B, T, C)
  base_BxSxC = outputs_VxBxSxC[0]
  for out_BxSxC, t in zip(outputs_VxBxSxC[1:], CHANGED_AT):
    np.testing.assert_allclose(out_BxSxC[:, :t], base_BxSxC[:, :t], rtol=1e-6, atol=1e-6)
    # The check has teeth: the change does reach the output at t.
    assert not np.allclose(out_BxSxC[:, t], base_BxSxC[:, t], atol=1e-6)


@pytest.mark.parametrize('name', FAMILIES)
def test_adam_steps_on_a_tiny_batch_lower_the_loss(name):
  _, params = built(name, 'gpicl')
  tokens_VxBxSxF, y_VxBxS = variants()
  tokens_BxSxF, y_BxS = tokens_VxBxSxF.reshape(-1, T, F), y_VxBxS.reshape(-1, T)
  opt_state = TX.init(params)
  losses = []  # losses[k]: the loss before step k.
  for _ in range(10):
    params, opt_state, loss, _ = train_step(name)(params, opt_state, tokens_BxSxF, y_BxS)
    losses.append(float(loss))
  assert np.isfinite(losses).all()
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))
  assert losses[-1] < losses[0]


@pytest.mark.parametrize('name', ('mlp', 'lsa'))  # The Transformer's is in test_model.py.
def test_masked_models_keep_context_query_queries_hidden(name):
  tokens_BxSxF = tasks.tokens(episode(2), C, 'context_query')
  query = 4  # Token 4 is the query q_3; only its own output may change.
  changed_BxSxF = tokens_BxSxF.at[:, query, :D].add(1.0)
  outputs_2BxSxC = jitted_forward(name, 'context_query')(
      jnp.concatenate([tokens_BxSxF, changed_BxSxF]))
  base_BxSxC, out_BxSxC = outputs_2BxSxC[:B], outputs_2BxSxC[B:]
  others = np.arange(2 * T) != query
  np.testing.assert_allclose(out_BxSxC[:, others], base_BxSxC[:, others], rtol=1e-6,
                             atol=1e-6)
  assert not np.allclose(out_BxSxC[:, query], base_BxSxC[:, query], atol=1e-6)


@pytest.mark.parametrize('name', RECURRENT)
def test_recurrent_models_refuse_context_query(name):
  with pytest.raises(ValueError, match='task.prompt=gpicl'):
    model_fn(name, 'context_query')(nnx.Rngs(0))
  # Built without a prompt, the model still refuses a non-causal mask outside jit.
  model = nnx.merge(*built(name, 'gpicl'))
  tokens_BxSxF = tasks.tokens(episode(4), C, 'context_query')
  with pytest.raises(ValueError, match='task.prompt=gpicl'):
    model(tokens_BxSxF, jnp.asarray(tasks.attention_mask('context_query', T)))
  c = config_lib.base_config()
  c.model.name, c.task.prompt = name, 'context_query'
  with pytest.raises(UserError, match='task.prompt=gpicl'):
    config_lib.validate(c)
  c.task.prompt = 'gpicl'
  config_lib.validate(c)


def test_state_sizes_by_hand():
  # width 8, depth 2, 2 heads of size 4, 10 tokens of 8 features.
  expected = {
      'transformer': 2 * 2 * 2 * 4 * 10,  # K and V per layer, head, token: 320.
      'lstm': 2 * 2 * 8,  # h and c per layer: 32.
      'outer_lstm': 2 * 2 * (4 * 4 + 4),  # C (4x4) and n (4) per layer and head: 80.
      'mlp': 10 * 8,  # The stored context: 80.
      'lsa': 2 * 2 * 4 * 4,  # One 4x4 key-value sum per layer and head: 64.
  }
  for name, size in expected.items():
    assert models.state_size(model_config(name, depth=2), 10, in_features=8) == size, name
  with pytest.raises(ValueError, match='in_features'):
    models.state_size(model_config('mlp', depth=2), 10)


def one_layer_lsa(dim, max_len, rngs=None):
  """The LSA that gd_construction(dim, lr) parameterises: tokens [x, y], output y."""
  c = model_config('lsa')
  c.depth, c.num_heads, c.qkv_size = 1, 1, dim + 1
  return models.build(c, in_features=dim + 1, out_features=1, max_len=max_len,
                      rngs=rngs or nnx.Rngs(0))


def regression_problem(rng, dim, n):
  x_NxD = rng.uniform(-1, 1, (n, dim))
  w_D = rng.normal(size=dim)
  return x_NxD, x_NxD @ w_D, rng.uniform(-1, 1, dim)


@pytest.mark.parametrize('dim', [1, 3, 10])
@pytest.mark.parametrize('lr', [0.1, 0.7, 3.0])
def test_lsa_gd_construction_predicts_one_gd_step(dim, lr):
  rng = np.random.default_rng(dim * 100 + int(10 * lr))
  n = 10
  x_NxD, y_N, x_query_D = regression_problem(rng, dim, n)
  # One step from w = 0 on L(w) = 1/(2n) sum (w.x_i - y_i)^2: w_1 = -lr grad L(0).
  grad_D = (x_NxD @ np.zeros(dim) - y_N) @ x_NxD / n
  expected = (-lr * grad_D) @ x_query_D
  params = models.gd_construction(dim, lr)
  predicted = models.lsa_predict(params, jnp.asarray(x_NxD, jnp.float32),
                                 jnp.asarray(y_N, jnp.float32),
                                 jnp.asarray(x_query_D, jnp.float32))
  np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-5)

  # The same parameters in the LSA model class give the same prediction.
  model = nnx.merge(nnx.split(nnx.eval_shape(lambda: one_layer_lsa(dim, n + 1)))[0], params)
  e_1xSxF = np.concatenate([np.c_[x_NxD, y_N], np.r_[x_query_D, 0.0][None]])[None]
  mask_SxS = np.tril(np.ones((n + 1, n + 1), bool))
  mask_SxS[n, n] = False
  out_1xSx1 = model(jnp.asarray(e_1xSxF, jnp.float32), jnp.asarray(mask_SxS))
  np.testing.assert_allclose(out_1xSx1[0, n, 0], expected, rtol=1e-5, atol=1e-5)


def test_lsa_trained_on_linear_regression_approaches_gd():
  """A one-layer LSA meta-trained on regression comes to predict what one GD step predicts,
  up to the step size: von Oswald et al.'s finding, in miniature."""
  dim, n, batch, steps = 3, 10, 64, 1000
  _, params = init(lambda rngs: one_layer_lsa(dim, n + 1, rngs))
  rng = np.random.default_rng(0)
  # Problems for every training step and one test batch: x ~ U(-1, 1)^d, w ~ N(0, I).
  x_RxBxNxD = rng.uniform(-1, 1, (steps + 1, batch, n, dim)).astype(np.float32)
  x_query_RxBxD = rng.uniform(-1, 1, (steps + 1, batch, dim)).astype(np.float32)
  w_RxBxD = rng.normal(size=(steps + 1, batch, dim)).astype(np.float32)
  y_RxBxN = np.einsum('rbnd,rbd->rbn', x_RxBxNxD, w_RxBxD)
  target_RxB = np.einsum('rbd,rbd->rb', x_query_RxBxD, w_RxBxD)
  predict = jax.vmap(models.lsa_predict, in_axes=(None, 0, 0, 0))
  tx = optax.adam(1e-2)

  def loss_fn(p, x_BxNxD, y_BxN, x_query_BxD, target_B):
    return jnp.mean((predict(p, x_BxNxD, y_BxN, x_query_BxD) - target_B)**2)

  @jax.jit
  def train(p, data):
    def step(carry, batch_data):
      p, opt_state = carry
      updates, opt_state = tx.update(jax.grad(loss_fn)(p, *batch_data), opt_state, p)
      return (optax.apply_updates(p, updates), opt_state), None
    (p, _), _ = jax.lax.scan(step, (p, tx.init(p)), data)
    return p

  trained = train(params, (x_RxBxNxD[:-1], y_RxBxN[:-1], x_query_RxBxD[:-1], target_RxB[:-1]))
  test_predict = jax.jit(predict)
  test_problems = (x_RxBxNxD[-1], y_RxBxN[-1], x_query_RxBxD[-1])
  gd_B = test_predict(models.gd_construction(dim, 1.0), *test_problems)  # The step at lr 1.

  def misfit(p):  # Share of the predictions that no GD step size explains.
    p_B = test_predict(p, *test_problems)
    lr = jnp.dot(p_B, gd_B) / jnp.dot(gd_B, gd_B)
    return float(jnp.sum((p_B - lr * gd_B)**2) / jnp.sum(p_B**2))

  before, after = misfit(params), misfit(trained)
  assert after < 0.05 and after < 0.2 * before, (before, after)


@pytest.mark.parametrize('name', ['lstm', 'outer_lstm'])
def test_recurrent_models_train_through_the_group_step(data_dir, tmp_path, name):
  """A run trains inside its group's shard_map (the `map` strategy on a CPU). A scan carry
  made with jnp.zeros there did not vary over `run` as the step's outputs do, and every
  recurrent run failed (found running experiments/state_size.py)."""
  from helpers import tiny_config  # pylint: disable=g-import-not-at-top
  from icl_jax import train  # pylint: disable=g-import-not-at-top
  config = tiny_config(data_dir, model__name=name, task__prompt='interleaved',
                       train__steps=4, train__checkpoint_every_steps=4)
  summary = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert summary and all(np.isfinite(v) for v in summary.values())
