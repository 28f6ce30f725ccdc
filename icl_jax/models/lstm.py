"""Recurrent models: an LSTM and an outer-product (matrix-memory) LSTM.

Both read the tokens in order with jax.lax.scan, so they are causal by construction and
ignore every structure of the mask beyond causality: a recurrent state cannot keep one token
from the tokens after it. That serves the `gpicl` prompt, whose mask is exactly causal, but
not `context_query`, whose query tokens must stay unseen by later tokens. The models refuse
it when built with `prompt=` and when called outside jit with a mask that is not causal
(under jit the mask is traced and cannot be inspected, so the build-time check is the one
that counts).

`state_size` is the number of floats of recurrent state per sequence: the memory that the
next prediction can draw on, which GPICL (Kirsch et al. 2022) finds to bound in-context
learning better than the parameter count does.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from icl_jax.tasks.prompts import CAUSAL_PROMPTS

# What a recurrent state can serve: the prompts whose mask is exactly causal. The model
# registry (models.MODELS) and the config's validation read it from here.
SERVED_PROMPTS = CAUSAL_PROMPTS


def check_prompt(model_name: str, prompt: str | None) -> None:
  """Raises ValueError if a recurrent model is asked to serve a prompt it cannot."""
  if prompt is not None and prompt not in SERVED_PROMPTS:
    raise ValueError(
        f'The {model_name} model is recurrent and cannot serve the {prompt!r} prompt: its '
        f'state carries every token to all later ones, but that prompt needs its query tokens '
        f'hidden from later tokens. Use --config.task.prompt={" or ".join(SERVED_PROMPTS)}.')


def check_causal_mask(model_name: str, mask_SxS: jax.Array, seq_len: int) -> None:
  """Raises ValueError for a concrete mask that is not the full causal one."""
  if mask_SxS.shape != (seq_len, seq_len):
    raise ValueError(f'mask_SxS has shape {mask_SxS.shape}; expected ({seq_len}, {seq_len}).')
  if isinstance(mask_SxS, jax.core.Tracer):
    return  # Only a build-time `prompt=` can be checked under jit.
  causal_SxS = np.tril(np.ones((seq_len, seq_len), dtype=bool))
  if not np.array_equal(np.asarray(mask_SxS, dtype=bool), causal_SxS):
    raise ValueError(
        f'The {model_name} model is recurrent and can only serve the full causal mask; this '
        f'one hides some earlier tokens (as the context_query prompt does). Use '
        f'--config.task.prompt={" or ".join(SERVED_PROMPTS)}.')


def _forget_bias_one(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  # Gate order (i, f, g, o). A forget bias of 1 keeps the cell state early in training
  # (Jozefowicz et al. 2015), which long episodes need.
  del key
  width = shape[0] // 4
  return jnp.zeros(shape, dtype).at[width:2 * width].set(1.0)


class LSTMLayer(nnx.Module):
  """One LSTM layer (Hochreiter & Schmidhuber 1997; forget gate: Gers et al. 2000), scanned."""

  def __init__(self, width: int, *, rngs: nnx.Rngs):
    self.width = width
    self.input = nnx.Linear(width, 4 * width, bias_init=_forget_bias_one, rngs=rngs)
    self.recurrent = nnx.Linear(width, 4 * width, use_bias=False,
                                kernel_init=nnx.initializers.orthogonal(), rngs=rngs)

  def __call__(self, x_BxSxD: jax.Array) -> jax.Array:
    # The input part of the gates is one large matmul outside the sequential loop.
    gates_in_SxBxG = self.input(x_BxSxD).swapaxes(0, 1)
    w_hh_DxG = self.recurrent.kernel[...]

    def step(carry, gates_in_BxG):
      h_BxD, c_BxD = carry
      i_BxD, f_BxD, g_BxD, o_BxD = jnp.split(gates_in_BxG + h_BxD @ w_hh_DxG, 4, axis=-1)
      c_BxD = jax.nn.sigmoid(f_BxD) * c_BxD + jax.nn.sigmoid(i_BxD) * jnp.tanh(g_BxD)
      h_BxD = jax.nn.sigmoid(o_BxD) * jnp.tanh(c_BxD)
      return (h_BxD, c_BxD), h_BxD

    # zeros_like an input, not jnp.zeros: inside a sweep group's shard_map the carry must vary
    # over the `run` axis as the step's outputs do (scan checks that the two types agree).
    zeros_BxD = jnp.zeros_like(gates_in_SxBxG[0, :, :self.width])
    _, h_SxBxD = jax.lax.scan(step, (zeros_BxD, zeros_BxD), gates_in_SxBxG)
    return h_SxBxD.swapaxes(0, 1)


class LSTM(nnx.Module):
  """tokens_BxSxF -> outputs_BxSxC: linear read-in, `depth` stacked LSTM layers, read-out.

  Causal by construction; the mask is checked, not used (see the module docstring).
  `max_len` is accepted for the common interface only: a recurrent model runs any length.
  """

  def __init__(self, in_features: int, out_features: int, max_len: int, *, width: int,
               depth: int, prompt: str | None = None, rngs: nnx.Rngs):
    del max_len
    check_prompt('lstm', prompt)
    self.embed = nnx.Linear(in_features, width, rngs=rngs)
    self.layers = nnx.List([LSTMLayer(width, rngs=rngs) for _ in range(depth)])
    self.head = nnx.Linear(width, out_features, rngs=rngs)

  def __call__(self, tokens_BxSxF: jax.Array, mask_SxS: jax.Array) -> jax.Array:
    check_causal_mask('lstm', mask_SxS, tokens_BxSxF.shape[1])
    x_BxSxD = self.embed(tokens_BxSxF)
    for layer in self.layers:
      x_BxSxD = layer(x_BxSxD)
    return self.head(x_BxSxD)

  @staticmethod
  def state_size(*, width: int, depth: int) -> int:
    """Floats of recurrent state per sequence: h and c of every layer."""
    return 2 * depth * width


def _matrix_gate_bias(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  # Layout (input gates of H heads, forget gates of H heads). Forget biases spread over
  # [3, 6] as in the xLSTM paper: every head starts by keeping its memory, some for longer.
  del key
  num_heads = shape[0] // 2
  return jnp.concatenate([jnp.zeros((num_heads,), dtype),
                          jnp.linspace(3.0, 6.0, num_heads, dtype=dtype)])


class MatrixMemoryLayer(nnx.Module):
  """A residual mLSTM layer; the state of each head is a K x K matrix C and a K-vector n.

  With per-head scalar gates i_t, f_t and an output gate o_t computed from the input x_t:
    C_t = f_t C_{t-1} + i_t v_t k_t^T,   n_t = f_t n_{t-1} + i_t k_t,
    h_t = o_t * C_t q_t / max(|n_t . q_t|, 1),   k_t scaled by 1/sqrt(K).
  """

  def __init__(self, width: int, num_heads: int, qkv_size: int, *, rngs: nnx.Rngs):
    self.num_heads, self.qkv_size = num_heads, qkv_size
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.qkv = nnx.Linear(width, 3 * num_heads * qkv_size, rngs=rngs)
    self.gates = nnx.Linear(width, 2 * num_heads, bias_init=_matrix_gate_bias, rngs=rngs)
    self.output_gate = nnx.Linear(width, num_heads * qkv_size, rngs=rngs)
    self.out = nnx.Linear(num_heads * qkv_size, width, rngs=rngs)

  def __call__(self, x_BxSxD: jax.Array) -> jax.Array:
    b, s, _ = x_BxSxD.shape
    num_heads, qkv_size = self.num_heads, self.qkv_size
    u_BxSxD = self.norm(x_BxSxD)
    # Gates, queries, keys and values depend on x_t alone, so they are computed for all
    # steps at once; only the memory update is sequential.
    qkv_SxBx3xHxK = self.qkv(u_BxSxD).reshape(b, s, 3, num_heads, qkv_size).swapaxes(0, 1)
    gates_SxBx2xH = jax.nn.sigmoid(self.gates(u_BxSxD)).reshape(b, s, 2, num_heads).swapaxes(0, 1)

    def step(carry, inputs):
      c_BxHxKxK, n_BxHxK = carry
      qkv_Bx3xHxK, gates_Bx2xH = inputs
      q_BxHxK, k_BxHxK, v_BxHxK = (qkv_Bx3xHxK[:, j] for j in range(3))
      k_BxHxK = k_BxHxK / math.sqrt(qkv_size)
      i_BxH, f_BxH = gates_Bx2xH[:, 0], gates_Bx2xH[:, 1]
      c_BxHxKxK = (f_BxH[..., None, None] * c_BxHxKxK +
                   i_BxH[..., None, None] * v_BxHxK[..., :, None] * k_BxHxK[..., None, :])
      n_BxHxK = f_BxH[..., None] * n_BxHxK + i_BxH[..., None] * k_BxHxK
      read_BxHxK = jnp.einsum('bhvk,bhk->bhv', c_BxHxKxK, q_BxHxK)
      # The normaliser keeps the read-out bounded however much has been written.
      scale_BxH = jnp.maximum(jnp.abs(jnp.einsum('bhk,bhk->bh', n_BxHxK, q_BxHxK)), 1.0)
      return (c_BxHxKxK, n_BxHxK), read_BxHxK / scale_BxH[..., None]

    # Zeros shaped from an input, for the reason given in LSTMLayer.__call__.
    zeros_BxHxK = jnp.zeros_like(qkv_SxBx3xHxK[0, :, 0])
    init = (jnp.broadcast_to(zeros_BxHxK[..., None], (b, num_heads, qkv_size, qkv_size)),
            zeros_BxHxK)
    _, read_SxBxHxK = jax.lax.scan(step, init, (qkv_SxBx3xHxK, gates_SxBx2xH))
    read_BxSxE = read_SxBxHxK.swapaxes(0, 1).reshape(b, s, num_heads * qkv_size)
    return x_BxSxD + self.out(jax.nn.sigmoid(self.output_gate(u_BxSxD)) * read_BxSxE)


class OuterProductLSTM(nnx.Module):
  """tokens_BxSxF -> outputs_BxSxC with a matrix (fast-weight) memory per head and layer.

  GPICL compares an outer-product LSTM, whose state is a matrix, with the LSTM and the
  Transformer. The formulation here is the mLSTM of Beck et al. 2024 ("xLSTM: Extended Long
  Short-Term Memory", Sec. 2.3): the memory C is written with the outer product v_t k_t^T
  of gated value and key vectors and read with a query, C_t q_t, i.e. a gated fast-weight
  programmer (Schlag, Irie & Schmidhuber 2021). One deviation: the input gate is a sigmoid,
  not an exponential, so no stabiliser state is needed. Layers are pre-LayerNorm residual
  blocks (as xLSTM stacks them) between a linear read-in and a LayerNorm + linear read-out.

  Causal by construction; the mask is checked, not used (see the module docstring).
  `max_len` is accepted for the common interface only: a recurrent model runs any length.
  """

  def __init__(self, in_features: int, out_features: int, max_len: int, *, width: int,
               depth: int, num_heads: int, qkv_size: int, prompt: str | None = None,
               rngs: nnx.Rngs):
    del max_len
    check_prompt('outer_lstm', prompt)
    self.embed = nnx.Linear(in_features, width, rngs=rngs)
    self.layers = nnx.List([
        MatrixMemoryLayer(width, num_heads, qkv_size, rngs=rngs) for _ in range(depth)])
    self.ln_f = nnx.LayerNorm(width, rngs=rngs)
    self.head = nnx.Linear(width, out_features, rngs=rngs)

  def __call__(self, tokens_BxSxF: jax.Array, mask_SxS: jax.Array) -> jax.Array:
    check_causal_mask('outer_lstm', mask_SxS, tokens_BxSxF.shape[1])
    x_BxSxD = self.embed(tokens_BxSxF)
    for layer in self.layers:
      x_BxSxD = layer(x_BxSxD)
    return self.head(self.ln_f(x_BxSxD))

  @staticmethod
  def state_size(*, depth: int, num_heads: int, qkv_size: int) -> int:
    """Floats of recurrent state per sequence: C (K x K) and n (K) per head and layer."""
    return depth * num_heads * (qkv_size * qkv_size + qkv_size)
