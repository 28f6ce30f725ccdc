"""The Transformer reads only what its prompt format allows."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from icl_jax import models
from icl_jax import tasks
from icl_jax.config import base_config
from icl_jax.errors import UserError

D, C, T = 6, 4, 8


def make(prompt):
  c = base_config().model
  c.width, c.depth, c.num_heads, c.qkv_size = 16, 2, 2, 8
  model = models.build(c, in_features=D + C, out_features=C,
                       max_len=tasks.num_tokens(prompt, T), rngs=nnx.Rngs(0))
  mask = jnp.asarray(tasks.attention_mask(prompt, T))
  return lambda ep: tasks.predictions(model(tasks.tokens(ep, C, prompt), mask), prompt)


@pytest.mark.parametrize('prompt', ['gpicl', 'context_query'])
@pytest.mark.parametrize('t', [0, 3, T - 1])
def test_prediction_for_y_t_ignores_y_t_and_everything_later(prompt, t):
  predict = make(prompt)
  kx, ky, kx2, ky2 = jax.random.split(jax.random.key(t), 4)
  x = jax.random.normal(kx, (2, T, D))
  y = jax.random.randint(ky, (2, T), 0, C)
  later_x = x.at[:, t + 1:].set(jax.random.normal(kx2, (2, T - t - 1, D)))
  changed_y = y.at[:, t:].set((y[:, t:] + 1 + jax.random.randint(ky2, (2, T - t), 0, C - 1)) % C)
  base = predict(tasks.Episode(x, y))
  changed = predict(tasks.Episode(later_x, changed_y))
  np.testing.assert_allclose(changed[:, :t + 1], base[:, :t + 1], rtol=1e-5, atol=1e-5)
  # The check has teeth: the changes do reach later predictions.
  if t < T - 1:
    assert not np.allclose(changed[:, t + 1:], base[:, t + 1:], atol=1e-5)


@pytest.mark.parametrize('prompt', ['gpicl', 'context_query'])
def test_prediction_reads_earlier_labels(prompt):
  predict = make(prompt)
  x = jax.random.normal(jax.random.key(0), (2, T, D))
  y = jnp.zeros((2, T), jnp.int32)
  base = predict(tasks.Episode(x, y))
  changed = predict(tasks.Episode(x, y.at[:, 2].set(3)))
  assert not np.allclose(changed[:, 3], base[:, 3], atol=1e-6)


def test_sequence_longer_than_positions_is_refused():
  predict_len = tasks.num_tokens('gpicl', T)
  c = base_config().model
  c.width, c.depth, c.num_heads, c.qkv_size = 16, 1, 2, 8
  model = models.build(c, in_features=D + C, out_features=C, max_len=predict_len,
                       rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='longer than'):
    model(jnp.zeros((1, T + 1, D + C)), jnp.ones((T + 1, T + 1), bool))


# --- Mixed precision and the attention implementation. ---


def test_causal_and_masked_attention_agree():
  """is_causal (what cuDNN gets) and the dense causal mask (what XLA gets) are one function."""
  kq, kk, kv = jax.random.split(jax.random.key(0), 3)
  shape = (2, 12, 2, 8)
  q, k, v = (jax.random.normal(key, shape) for key in (kq, kk, kv))
  mask_SxS = jnp.asarray(tasks.attention_mask('gpicl', 12))
  for dtype, tol in ((jnp.float32, 1e-6), (jnp.bfloat16, 1e-2)):
    causal = jax.nn.dot_product_attention(*(a.astype(dtype) for a in (q, k, v)),
                                          is_causal=True, implementation='xla')
    masked = jax.nn.dot_product_attention(*(a.astype(dtype) for a in (q, k, v)),
                                          mask=mask_SxS[None, None], implementation='xla')
    np.testing.assert_allclose(np.float32(causal), np.float32(masked), atol=tol, rtol=tol)


@pytest.mark.parametrize('requested,dtype,causal,expected', [
    ('auto', 'bfloat16', True, 'by_platform'),  # cuDNN where lowered for CUDA, else XLA.
    ('auto', 'bfloat16', False, 'xla'),  # context_query's mask is not causal.
    ('auto', 'float32', True, 'xla'),  # cuDNN's fused kernel takes 16-bit inputs.
    ('xla', 'bfloat16', True, 'xla'),
    ('cudnn', 'bfloat16', True, 'cudnn'),
])
def test_attention_implementation_follows_dtype_and_prompt_not_the_host(requested, dtype,
                                                                        causal, expected):
  assert models.transformer.attention_implementation(requested, dtype, causal) == expected


@pytest.mark.parametrize('dtype,causal', [('float32', True), ('bfloat16', False)])
def test_explicit_cudnn_where_it_cannot_compute_the_layer_is_refused_at_build(dtype, causal):
  with pytest.raises(UserError, match=r"attention='cudnn' needs config\.model\.dtype="
                                      r"'bfloat16' and a causal prompt"):
    models.transformer.attention_implementation('cudnn', dtype, causal)


def test_auto_attention_on_a_host_without_cudnn_is_xlas_everywhere():
  """Without cuDNN in the host's jaxlib (this CPU host), 'auto' stages out XLA's attention
  alone: the bfloat16 program is the one earlier versions built, for every platform."""
  q = jnp.ones((2, 12, 2, 8), jnp.bfloat16)
  if models.transformer.cudnn_refusal(q) is None:
    pytest.skip('this host\'s jaxlib has cuDNN')
  mask_SxS = jnp.asarray(tasks.attention_mask('gpicl', 12))
  auto = jax.jit(lambda q: models.transformer.attend(q, q, q, mask_SxS, 'by_platform'))
  assert 'case' not in auto.lower(q).as_text()  # No platform_dependent.
  with pytest.raises(UserError, match=r"attention='cudnn' cannot run here \(RuntimeError: "
                                      r"cuDNN is not detected"):
    models.transformer.attend(q, q, q, mask_SxS, 'cudnn')


def _hlo_and_dtypes(dtype):
  c = base_config().model
  c.width, c.depth, c.num_heads, c.qkv_size, c.dtype = 16, 2, 2, 8, dtype
  model = models.build(c, in_features=D + C, out_features=C,
                       max_len=tasks.num_tokens('gpicl', T), rngs=nnx.Rngs(0), prompt='gpicl')
  graphdef, params = nnx.split(model)
  mask = jnp.asarray(tasks.attention_mask('gpicl', T))
  tokens = jnp.ones((2, T, D + C))
  fn = jax.jit(lambda p: nnx.merge(graphdef, p)(tokens, mask))
  return fn.lower(params).as_text(), params, fn(params)


def test_bfloat16_computes_in_bfloat16_but_keeps_float32_params_and_logits():
  hlo, params, logits = _hlo_and_dtypes('bfloat16')
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype('float32')}
  assert logits.dtype == jnp.float32
  # The blocks' matmuls read bfloat16 operands.
  dots = [line for line in hlo.splitlines() if 'dot_general' in line]
  assert sum('bf16' in line for line in dots) >= 4, dots
  hlo32, _, _ = _hlo_and_dtypes('float32')
  assert 'bf16' not in hlo32


def test_bfloat16_run_trains_like_the_float32_run(data_dir):
  """A bfloat16 run's loss curve follows the float32 run's: within 0.05 nats at every one
  of 40 steps (measured: 0.0012 at most, loss 2.80 -> 1.44) on the tiny memorisation
  config."""
  from helpers import tiny_config  # pylint: disable=g-import-not-at-top
  from icl_jax import steps  # pylint: disable=g-import-not-at-top
  from icl_jax import workload  # pylint: disable=g-import-not-at-top
  curves = {}
  for dtype in ('float32', 'bfloat16'):
    config = tiny_config(data_dir, model__dtype=dtype)
    wl = workload.build(config)
    run = steps.run_values(config)
    x_NxD, y_N = jnp.asarray(wl.train_ds.x_NxD), jnp.asarray(wl.train_ds.y_N)
    step = jax.jit(lambda s, wl=wl, run=run, x=x_NxD, y=y_N: steps.train_step(
        s, run, x, y, spec=wl.spec))
    state, losses = jax.jit(wl.init)(run), []
    for _ in range(config.train.steps):
      state, m = step(state)
      losses.append(float(m['loss']))
    assert {x.dtype for x in jax.tree.leaves(state)} <= {np.dtype('float32'), np.dtype('int32')}
    curves[dtype] = np.array(losses)
  gap = np.abs(curves['bfloat16'] - curves['float32'])
  assert gap.max() < 0.05, gap
  assert curves['bfloat16'][-5:].mean() < 0.7 * curves['bfloat16'][:5].mean(), curves


_ON_NVIDIA = jax.default_backend() == 'gpu' and 'nvidia' in jax.devices()[0].device_kind.lower()


@pytest.mark.skipif(not _ON_NVIDIA, reason='cuDNN\'s attention runs on an NVIDIA GPU '
                                           '(benchmarks/device_check.py runs this file there)')
def test_cudnn_attention_matches_xlas_on_the_gpu():
  """The fused kernel that 'auto' picks on CUDA computes XLA's attention, forward and
  backward, at the paper's head shape (T = 100, 8 heads of 32) in bfloat16; and the
  compiled 'auto' program really calls it."""
  kq, kk, kv, kw = jax.random.split(jax.random.key(0), 4)
  q, k, v, w = (jax.random.normal(key, (4, 100, 8, 32), jnp.bfloat16) for key in (kq, kk, kv, kw))
  mask_SxS = jnp.asarray(tasks.attention_mask('gpicl', 100))

  def loss(impl, q, k, v):
    out = models.transformer.attend(q, k, v, mask_SxS, impl)
    return (out.astype(jnp.float32) * w.astype(jnp.float32)).sum(), out

  results = {}
  for impl in ('xla', 'cudnn'):
    (_, out), grads = jax.jit(jax.value_and_grad(functools.partial(loss, impl), (0, 1, 2),
                                                 has_aux=True))(q, k, v)
    results[impl] = [out, *grads]
  for ours, theirs in zip(results['cudnn'], results['xla']):
    np.testing.assert_allclose(np.float32(ours), np.float32(theirs), atol=0.05, rtol=0.05)
  auto = jax.jit(lambda q: models.transformer.attend(q, k, v, mask_SxS, 'by_platform'))
  assert '__cudnn$fmha' in auto.lower(q).compile().as_text()
