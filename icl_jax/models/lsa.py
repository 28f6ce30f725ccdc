"""Linear self-attention (LSA) only: the model of von Oswald et al. 2023.

von Oswald et al., "Transformers learn in-context by gradient descent", ICML 2023
(arXiv 2212.07677), Sec. 2 and Prop. 1. No softmax, no LayerNorm, no MLP, no read-in:
the residual stream is the token itself, e_j = [x_j, y_j], and the query token is [x_q, 0].
A layer with heads h updates every token from the n_j tokens it may read (mask_SxS[j, i]):

  e_j <- e_j + sum_h P_h sum_i mask[j, i] (W_v,h e_i) (W_k,h e_i . W_q,h e_j) / n_j,

i.e. e_j + P W_v E^T E W_k^T W_q e_j / n for the rows E that j reads. The model's output is
minus the last C coordinates (the y-part) of the final tokens. The sign follows von Oswald
et al.'s construction: it writes y_j - w.x_j into each token's y-part, the residual of the
updated linear model, so the query's y-part becomes -w.x_q, and a stacked layer can take a
further step on the residuals.

`gd_construction(dim, lr)` gives one layer whose prediction for the query is one step of
gradient descent on L(w) = 1/(2n) sum_i (w.x_i - y_i)^2 from w = 0:
  w_1 = -lr grad L(0) = (lr / n) sum_i y_i x_i,   y_hat = w_1 . x_q.
With W_q = W_k = [[I_d, 0], [0, 0]], W_v = [[0, 0], [0, -1]] and P = lr [[0, 0], [0, 1]], the
update of the query's y-part is -(lr / n) sum_i y_i (x_i . x_q) = -y_hat, and the x-parts
are unchanged. Here lr sits in P and the 1/n in the layer, where von Oswald et al. put eta/N
in P. `lsa_predict` runs such parameters on one regression problem.

State size, read as a linear Transformer: per head and layer the running sum of
(W_v e_i)(W_k e_i)^T over the tokens that later tokens may read, a K x K matrix.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Params = Mapping[str, Any]  # {'layers': {0: {'query_HxKxF': ..., ...}, 1: ...}}.


def lsa_layer(e_BxSxF: jax.Array, mask_SxS: jax.Array, *, query_HxKxF: jax.Array,
              key_HxKxF: jax.Array, value_HxKxF: jax.Array,
              proj_HxFxK: jax.Array) -> jax.Array:
  """One LSA layer: e_j + sum_h P_h sum_i mask[j, i] W_v e_i (W_k e_i . W_q e_j) / n_j."""
  q_BxHxSxK = jnp.einsum('hkf,bsf->bhsk', query_HxKxF, e_BxSxF)
  k_BxHxSxK = jnp.einsum('hkf,bsf->bhsk', key_HxKxF, e_BxSxF)
  v_BxHxSxK = jnp.einsum('hkf,bsf->bhsk', value_HxKxF, e_BxSxF)
  mask_SxS = mask_SxS.astype(e_BxSxF.dtype)
  scores_BxHxSxS = jnp.einsum('bhjk,bhik->bhji', q_BxHxSxK, k_BxHxSxK) * mask_SxS[None, None]
  # Averaging over the tokens read (von Oswald et al. divide by the N context points) keeps
  # the update's scale the same at every position of a causal prompt.
  count_S = jnp.maximum(mask_SxS.sum(-1), 1.0)
  read_BxHxSxK = jnp.einsum('bhji,bhik->bhjk', scores_BxHxSxS, v_BxHxSxK)
  read_BxHxSxK = read_BxHxSxK / count_S[None, None, :, None]
  return e_BxSxF + jnp.einsum('hfk,bhsk->bsf', proj_HxFxK, read_BxHxSxK)


def normal(key: jax.Array, shape: tuple[int, ...], std: float) -> jax.Array:
  """N(0, std^2) samples, drawn as a matrix: XLA on CPU can take seconds to compile the
  sampler for some rank-3 shapes (e.g. (2, 4, 8))."""
  return std * jax.random.normal(key, (math.prod(shape[:-1]), shape[-1])).reshape(shape)


class LSALayer(nnx.Module):

  def __init__(self, features: int, num_heads: int, qkv_size: int, *, rngs: nnx.Rngs,
               init_scale: float = 1.0):
    # No normalisation anywhere, so the scales at initialisation decide whether deeper
    # stacks stay finite: unit-variance projections, a small write-back. `init_scale`
    # shrinks all four: the update is cubic in the tokens, and with large inputs its random
    # x-x-x terms swamp the gradient (one layer on d = 10 Gaussian regression sat at the
    # zero predictor for 2000 steps at scale 1, and reached one GD step's loss within 500
    # at scale 0.1; small U(-1, 1) inputs in d = 3 train at scale 1).
    std = init_scale / math.sqrt(features)
    proj_std = init_scale * 0.1 / math.sqrt(num_heads * qkv_size)
    shape_HxKxF = (num_heads, qkv_size, features)
    self.query_HxKxF = nnx.Param(normal(rngs.params(), shape_HxKxF, std))
    self.key_HxKxF = nnx.Param(normal(rngs.params(), shape_HxKxF, std))
    self.value_HxKxF = nnx.Param(normal(rngs.params(), shape_HxKxF, std))
    self.proj_HxFxK = nnx.Param(
        normal(rngs.params(), (num_heads, features, qkv_size), proj_std))

  def __call__(self, e_BxSxF: jax.Array, mask_SxS: jax.Array) -> jax.Array:
    return lsa_layer(e_BxSxF, mask_SxS, query_HxKxF=self.query_HxKxF[...],
                     key_HxKxF=self.key_HxKxF[...], value_HxKxF=self.value_HxKxF[...],
                     proj_HxFxK=self.proj_HxFxK[...])


class LSA(nnx.Module):
  """tokens_BxSxF -> outputs_BxSxC: `depth` LSA layers on the tokens, read out as -y-part.

  The y-part is the last C = out_features coordinates of a token, where the prompts put
  the label ([x, onehot(y)]). Honours any mask, so it serves every prompt format; it is
  made for context_query, whose query tokens [x_j, 0] are von Oswald et al.'s. `max_len`
  is accepted for the common interface only: LSA has no positions.
  """

  def __init__(self, in_features: int, out_features: int, max_len: int, *, depth: int,
               num_heads: int, qkv_size: int, rngs: nnx.Rngs, init_scale: float = 1.0):
    del max_len
    if out_features > in_features:
      raise ValueError(f'LSA reads its {out_features} outputs from the last coordinates of '
                       f'the {in_features}-feature tokens, so it needs out_features <= '
                       f'in_features.')
    self.out_features = out_features
    self.layers = nnx.List([
        LSALayer(in_features, num_heads, qkv_size, rngs=rngs, init_scale=init_scale)
        for _ in range(depth)])

  def __call__(self, tokens_BxSxF: jax.Array, mask_SxS: jax.Array) -> jax.Array:
    e_BxSxF = tokens_BxSxF
    for layer in self.layers:
      e_BxSxF = layer(e_BxSxF, mask_SxS)
    return -e_BxSxF[..., -self.out_features:]

  @staticmethod
  def state_size(*, depth: int, num_heads: int, qkv_size: int) -> int:
    """Floats of state per sequence: one K x K key-value sum per head and layer."""
    return depth * num_heads * qkv_size * qkv_size


def gd_construction(dim: int, lr: float | jax.Array) -> dict[str, Any]:
  """Parameters of LSA(dim + 1, 1, ..., depth=1, num_heads=1, qkv_size=dim + 1) that take one
  gradient-descent step from w = 0 with learning rate lr on the squared loss of the context.

  In the pure-dict layout of nnx.to_pure_dict(nnx.state(model, nnx.Param)), so it can be put
  into a model with nnx.replace_by_pure_dict or passed to `lsa_predict`.
  """
  f = dim + 1
  x_part_FxF = np.diag(np.r_[np.ones(dim), 0.0]).astype(np.float32)
  y_part_FxF = np.zeros((f, f), np.float32)
  y_part_FxF[dim, dim] = 1.0
  layer = {
      'query_HxKxF': x_part_FxF[None],
      'key_HxKxF': x_part_FxF[None],
      'value_HxKxF': -y_part_FxF[None],
      'proj_HxFxK': lr * y_part_FxF[None],  # float32 for a Python lr, traced for a traced one.
  }
  return {'layers': {0: layer}}


def lsa_predict(params: Params, x_context_NxD: jax.Array, y_context_N: jax.Array,
                x_query_D: jax.Array) -> jax.Array:
  """The LSA's prediction for one query: minus the query token's final y-coordinate.

  Tokens are [x_i, y_i] for the context and [x_q, 0] for the query; the context reads
  itself causally and the query reads exactly the N context tokens (von Oswald et al.'s
  sum over the context), so with `gd_construction` the result is one GD step's w_1 . x_q.
  """
  n = x_context_NxD.shape[0]
  context_NxF = jnp.concatenate([x_context_NxD, y_context_N[:, None]], axis=-1)
  query_1xF = jnp.concatenate([x_query_D, jnp.zeros((1,), x_query_D.dtype)])[None]
  e_1xSxF = jnp.concatenate([context_NxF, query_1xF], axis=0)[None]
  mask_SxS = np.tril(np.ones((n + 1, n + 1), dtype=bool))
  mask_SxS[n, n] = False
  # Keys are ints from nnx.to_pure_dict, strings after a round trip through a checkpoint.
  for name in sorted(params['layers'], key=int):
    e_1xSxF = lsa_layer(e_1xSxF, jnp.asarray(mask_SxS), **params['layers'][name])
  return -e_1xSxF[0, n, -1]
