"""The Transformer reads only what its prompt format allows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from icl_jax import models
from icl_jax import tasks
from icl_jax.config import base_config

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
