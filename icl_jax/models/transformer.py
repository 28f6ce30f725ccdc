"""A pre-LayerNorm Transformer over a token sequence with an explicit attention mask.

The prompt format owns the mask (see icl_jax/tasks/prompts.py), so one model serves the
causal GPICL format and the context/query format alike.
"""

from __future__ import annotations

import jax
from flax import nnx


class Attention(nnx.Module):
  """Multi-head softmax attention with a per-head key/query/value size."""

  def __init__(self, width: int, num_heads: int, qkv_size: int, *, rngs: nnx.Rngs):
    self.num_heads, self.qkv_size = num_heads, qkv_size
    # One fused projection gives XLA one large matmul instead of three small ones.
    self.qkv = nnx.Linear(width, 3 * num_heads * qkv_size, rngs=rngs)
    self.out = nnx.Linear(num_heads * qkv_size, width, rngs=rngs)

  def __call__(self, x_BxSxD: jax.Array, mask_SxS: jax.Array) -> jax.Array:
    b, s, _ = x_BxSxD.shape
    qkv_BxSx3xHxK = self.qkv(x_BxSxD).reshape(b, s, 3, self.num_heads, self.qkv_size)
    q_BxSxHxK, k_BxSxHxK, v_BxSxHxK = (qkv_BxSx3xHxK[:, :, i] for i in range(3))
    out_BxSxHxK = jax.nn.dot_product_attention(
        q_BxSxHxK, k_BxSxHxK, v_BxSxHxK, mask=mask_SxS[None, None])
    return self.out(out_BxSxHxK.reshape(b, s, self.num_heads * self.qkv_size))


class Block(nnx.Module):

  def __init__(self, width: int, num_heads: int, qkv_size: int, mlp_ratio: int, *,
               rngs: nnx.Rngs):
    self.ln1 = nnx.LayerNorm(width, rngs=rngs)
    self.attn = Attention(width, num_heads, qkv_size, rngs=rngs)
    self.ln2 = nnx.LayerNorm(width, rngs=rngs)
    self.mlp_in = nnx.Linear(width, mlp_ratio * width, rngs=rngs)
    self.mlp_out = nnx.Linear(mlp_ratio * width, width, rngs=rngs)

  def __call__(self, x_BxSxD: jax.Array, mask_SxS: jax.Array) -> jax.Array:
    x_BxSxD = x_BxSxD + self.attn(self.ln1(x_BxSxD), mask_SxS)
    return x_BxSxD + self.mlp_out(jax.nn.gelu(self.mlp_in(self.ln2(x_BxSxD))))


class Transformer(nnx.Module):
  """tokens_BxSxF -> outputs_BxSxC: linear read-in, positions, L blocks, linear read-out.

  positions='none' leaves order to the mask alone: right for the context/query prompt,
  whose context is a set (as in PFNs); the causal GPICL prompt needs 'learned'.
  """

  def __init__(self, in_features: int, out_features: int, max_len: int, *, width: int,
               depth: int, num_heads: int, qkv_size: int, mlp_ratio: int,
               positions: str = 'learned', rngs: nnx.Rngs):
    self.max_len = max_len
    self.embed = nnx.Linear(in_features, width, rngs=rngs)
    self.pos_SxD = (nnx.Param(0.02 * jax.random.normal(rngs.params(), (max_len, width)))
                    if positions == 'learned' else None)
    self.blocks = nnx.List([
        Block(width, num_heads, qkv_size, mlp_ratio, rngs=rngs) for _ in range(depth)])
    self.ln_f = nnx.LayerNorm(width, rngs=rngs)
    self.head = nnx.Linear(width, out_features, rngs=rngs)

  def __call__(self, tokens_BxSxF: jax.Array, mask_SxS: jax.Array) -> jax.Array:
    s = tokens_BxSxF.shape[1]
    if s > self.max_len:
      raise ValueError(f'Sequence of {s} tokens is longer than the model\'s '
                       f'{self.max_len} positions.')
    x_BxSxD = self.embed(tokens_BxSxF)
    if self.pos_SxD is not None:
      x_BxSxD = x_BxSxD + self.pos_SxD[:s][None]
    for block in self.blocks:
      x_BxSxD = block(x_BxSxD, mask_SxS)
    return self.head(self.ln_f(x_BxSxD))

  @staticmethod
  def state_size(*, depth: int, num_heads: int, qkv_size: int, max_len: int) -> int:
    """Floats of state per sequence: the KV cache, a key and a value per head, layer, token."""
    return 2 * depth * num_heads * qkv_size * max_len
