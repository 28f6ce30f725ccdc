"""A pre-LayerNorm Transformer over a token sequence with an explicit attention mask.

The prompt format owns the mask (see icl_jax/tasks/prompts.py), so one model serves the
causal GPICL format and the context/query format alike.

Mixed precision: `dtype` is the compute dtype of the blocks (their matmuls, activations and
residual stream). Parameters stay float32 (so do the gradients and Adam's moments), layer
norms reduce in float32, attention's softmax runs in float32, and the read-out layer
computes the logits in float32, so the loss never sees bfloat16 rounding.

Attention's implementation follows the platform the program is lowered for, not the host
that builds it (`attention_implementation`, `attend`): with model.attention='auto', a 16-bit
layer with a causal prompt holds both cuDNN's fused kernel (given `is_causal` rather than a
dense mask, so it skips the masked half) and XLA's attention, in
`jax.lax.platform_dependent`; lowering keeps the first for CUDA and the second for the CPU,
TPU and ROCm. So a program lowered on a CPU host for a GPU gets cuDNN, and the CPU runs the
very XLA attention it always ran.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from icl_jax.errors import UserError

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
ATTENTION = ('auto', 'xla', 'cudnn')
# Compute dtypes that cuDNN's fused attention takes.
FUSED_DTYPES = ('bfloat16', 'float16')
# attention_implementation's third answer: cuDNN where lowered for CUDA, XLA elsewhere.
BY_PLATFORM = 'by_platform'


def attention_implementation(requested: str, dtype: str, causal: bool) -> str:
  """'xla', 'cudnn' or BY_PLATFORM for config.model.attention ('auto', 'xla' or 'cudnn').

  Decided from the layer alone, never from the host's backend: 'auto' asks for cuDNN's
  kernel where it applies (a 16-bit compute dtype, a causal prompt; the context/query mask
  is not causal), chosen by the platform the program is lowered for (`attend`). An explicit
  'cudnn' where it cannot compute this layer raises here, at build time, with the reason.
  """
  if requested == 'xla':
    return 'xla'
  applies = dtype in FUSED_DTYPES and causal
  if requested == 'cudnn':
    if not applies:
      raise UserError(
          f'config.model.attention=\'cudnn\' needs config.model.dtype=\'bfloat16\' and a '
          f'causal prompt such as task.prompt=\'gpicl\' (here: dtype {dtype!r}, causal '
          f'{causal}); use \'auto\', which picks cuDNN where it applies.')
    return 'cudnn'
  return BY_PLATFORM if applies else 'xla'


def xla_attention(q_BxSxHxK, k_BxSxHxK, v_BxSxHxK, mask_SxS):
  # The dense mask even for causal prompts: it is what float32 runs always computed, so
  # their results stay bit for bit those of earlier versions.
  return jax.nn.dot_product_attention(q_BxSxHxK, k_BxSxHxK, v_BxSxHxK,
                                      mask=mask_SxS[None, None], implementation='xla')


def cudnn_attention(q_BxSxHxK, k_BxSxHxK, v_BxSxHxK, mask_SxS=None):
  # The prompt's mask is then exactly the causal one; the fused kernel skips its zeros.
  del mask_SxS
  return jax.nn.dot_product_attention(q_BxSxHxK, k_BxSxHxK, v_BxSxHxK, is_causal=True,
                                      implementation='cudnn')


def cudnn_refusal(q_BxSxHxK: jax.Array) -> str | None:
  """Why cuDNN's attention cannot be traced here for queries (and keys, values) shaped like
  `q_BxSxHxK`, or None if it can. jax asks the host's jaxlib for cuDNN while tracing (a
  jaxlib without its CUDA plugin has none) and checks the head size against cuDNN's limits,
  so a layer whose cuDNN branch would not trace keeps XLA's attention on every platform."""
  spec = jax.ShapeDtypeStruct(q_BxSxHxK.shape, q_BxSxHxK.dtype)
  try:
    # A fresh function each time: eval_shape caches what traced, and the answer may change
    # within a process (benchmarks/lowering.py's bypass of the presence check).
    jax.eval_shape(lambda *qkv: cudnn_attention(*qkv), spec, spec, spec)
  except Exception as e:  # pylint: disable=broad-except  (RuntimeError, NotImplementedError)
    return f'{type(e).__name__}: {e}'
  return None


def attend(q_BxSxHxK: jax.Array, k_BxSxHxK: jax.Array, v_BxSxHxK: jax.Array,
           mask_SxS: jax.Array, implementation: str) -> jax.Array:
  """out_BxSxHxK: softmax attention by `implementation` (attention_implementation's).

  BY_PLATFORM stages both kernels out and lets lowering keep one: cuDNN's for 'cuda', XLA's
  for every other platform ('rocm' included: cuDNN is NVIDIA's).
  """
  qkv = (q_BxSxHxK, k_BxSxHxK, v_BxSxHxK)
  if implementation == 'xla':
    return xla_attention(*qkv, mask_SxS)
  refusal = cudnn_refusal(q_BxSxHxK)
  if implementation == 'cudnn':
    if refusal:
      raise UserError(f'config.model.attention=\'cudnn\' cannot run here ({refusal}); it '
                      f'needs jax with its CUDA plugin (pip install \'jax[cuda12]\') and a '
                      f'head size (model.qkv_size) cuDNN takes; or use \'auto\'.')
    return cudnn_attention(*qkv)
  if refusal:
    return xla_attention(*qkv, mask_SxS)
  return jax.lax.platform_dependent(*qkv, mask_SxS, cuda=cudnn_attention,
                                    default=xla_attention)


class Attention(nnx.Module):
  """Multi-head softmax attention with a per-head key/query/value size."""

  def __init__(self, width: int, num_heads: int, qkv_size: int, *, rngs: nnx.Rngs,
               dtype=jnp.float32, implementation: str = 'xla', causal: bool = False):
    self.num_heads, self.qkv_size = num_heads, qkv_size
    self.implementation, self.causal = implementation, causal
    # One fused projection gives XLA one large matmul instead of three small ones.
    self.qkv = nnx.Linear(width, 3 * num_heads * qkv_size, dtype=dtype, rngs=rngs)
    self.out = nnx.Linear(num_heads * qkv_size, width, dtype=dtype, rngs=rngs)

  def __call__(self, x_BxSxD: jax.Array, mask_SxS: jax.Array) -> jax.Array:
    b, s, _ = x_BxSxD.shape
    qkv_BxSx3xHxK = self.qkv(x_BxSxD).reshape(b, s, 3, self.num_heads, self.qkv_size)
    q_BxSxHxK, k_BxSxHxK, v_BxSxHxK = (qkv_BxSx3xHxK[:, :, i] for i in range(3))
    out_BxSxHxK = attend(q_BxSxHxK, k_BxSxHxK, v_BxSxHxK, mask_SxS, self.implementation)
    return self.out(out_BxSxHxK.reshape(b, s, self.num_heads * self.qkv_size))


class Block(nnx.Module):

  def __init__(self, width: int, num_heads: int, qkv_size: int, mlp_ratio: int, *,
               rngs: nnx.Rngs, dtype=jnp.float32, implementation: str = 'xla',
               causal: bool = False):
    self.ln1 = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
    self.attn = Attention(width, num_heads, qkv_size, rngs=rngs, dtype=dtype,
                          implementation=implementation, causal=causal)
    self.ln2 = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
    self.mlp_in = nnx.Linear(width, mlp_ratio * width, dtype=dtype, rngs=rngs)
    self.mlp_out = nnx.Linear(mlp_ratio * width, width, dtype=dtype, rngs=rngs)

  def __call__(self, x_BxSxD: jax.Array, mask_SxS: jax.Array) -> jax.Array:
    x_BxSxD = x_BxSxD + self.attn(self.ln1(x_BxSxD), mask_SxS)
    return x_BxSxD + self.mlp_out(jax.nn.gelu(self.mlp_in(self.ln2(x_BxSxD))))


class Transformer(nnx.Module):
  """tokens_BxSxF -> outputs_BxSxC: linear read-in, positions, L blocks, linear read-out.

  positions='none' leaves order to the mask alone: right for the context/query prompt,
  whose context is a set (as in PFNs); the causal GPICL prompt needs 'learned'.

  `dtype` ('float32' or 'bfloat16') and `attention` ('auto', 'xla', 'cudnn') are
  config.model's; `causal` says whether the prompt's mask is exactly the causal one.
  """

  def __init__(self, in_features: int, out_features: int, max_len: int, *, width: int,
               depth: int, num_heads: int, qkv_size: int, mlp_ratio: int,
               positions: str = 'learned', rngs: nnx.Rngs, dtype: str = 'float32',
               attention: str = 'auto', causal: bool = False):
    self.max_len = max_len
    compute = DTYPES[dtype]
    implementation = attention_implementation(attention, dtype, causal)
    self.embed = nnx.Linear(in_features, width, dtype=compute, rngs=rngs)
    self.pos_SxD = (nnx.Param(0.02 * jax.random.normal(rngs.params(), (max_len, width)))
                    if positions == 'learned' else None)
    self.blocks = nnx.List([
        Block(width, num_heads, qkv_size, mlp_ratio, rngs=rngs, dtype=compute,
              implementation=implementation, causal=causal) for _ in range(depth)])
    self.ln_f = nnx.LayerNorm(width, dtype=compute, rngs=rngs)
    # float32 logits: the softmax and the loss see no bfloat16 rounding.
    self.head = nnx.Linear(width, out_features, dtype=jnp.float32, rngs=rngs)

  def __call__(self, tokens_BxSxF: jax.Array, mask_SxS: jax.Array) -> jax.Array:
    s = tokens_BxSxF.shape[1]
    if s > self.max_len:
      raise ValueError(f'Sequence of {s} tokens is longer than the model\'s '
                       f'{self.max_len} positions.')
    x_BxSxD = self.embed(tokens_BxSxF)
    if self.pos_SxD is not None:
      x_BxSxD = x_BxSxD + self.pos_SxD[:s][None].astype(x_BxSxD.dtype)
    for block in self.blocks:
      x_BxSxD = block(x_BxSxD, mask_SxS)
    return self.head(self.ln_f(x_BxSxD))

  @staticmethod
  def state_size(*, depth: int, num_heads: int, qkv_size: int, max_len: int) -> int:
    """Floats of state per sequence: the KV cache, a key and a value per head, layer, token."""
    return 2 * depth * num_heads * qkv_size * max_len
