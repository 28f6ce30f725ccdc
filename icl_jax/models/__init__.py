"""Model families. Each is a Flax NNX module mapping (tokens_BxSxF, mask_SxS) to outputs_BxSxC.

  transformer  pre-LayerNorm softmax Transformer (transformer.py)
  lstm         stacked LSTM (lstm.py); recurrent: serves the causal gpicl prompt only
  outer_lstm   outer-product / matrix-memory LSTM (lstm.py); recurrent, as lstm
  mlp          MLP over the flattened context, the memorising reference (mlp.py)
  lsa          linear self-attention only, von Oswald et al. (lsa.py)
"""

from __future__ import annotations

import ml_collections
from flax import nnx

from icl_jax.models.lsa import LSA
from icl_jax.models.lsa import gd_construction
from icl_jax.models.lsa import lsa_predict
from icl_jax.models.lstm import LSTM
from icl_jax.models.lstm import OuterProductLSTM
from icl_jax.models.mlp import MLP
from icl_jax.models.transformer import Transformer


def build(model_config: ml_collections.ConfigDict, *, in_features: int, out_features: int,
          max_len: int, rngs: nnx.Rngs, prompt: str | None = None) -> nnx.Module:
  """Builds the model named by config.model.name for the given token and output sizes.

  With `prompt` (config.task.prompt), a recurrent model refuses a prompt it cannot serve
  here, at build time; the others serve every prompt and ignore it.
  """
  m = model_config
  if m.name == 'transformer':
    return Transformer(
        in_features, out_features, max_len, width=m.width, depth=m.depth,
        num_heads=m.num_heads, qkv_size=m.qkv_size, mlp_ratio=m.mlp_ratio,
        positions=m.positions, rngs=rngs)
  if m.name == 'lstm':
    return LSTM(in_features, out_features, max_len, width=m.width, depth=m.depth,
                prompt=prompt, rngs=rngs)
  if m.name == 'outer_lstm':
    return OuterProductLSTM(
        in_features, out_features, max_len, width=m.width, depth=m.depth,
        num_heads=m.num_heads, qkv_size=m.qkv_size, prompt=prompt, rngs=rngs)
  if m.name == 'mlp':
    return MLP(in_features, out_features, max_len, width=m.width, depth=m.depth, rngs=rngs)
  if m.name == 'lsa':
    return LSA(in_features, out_features, max_len, depth=m.depth, num_heads=m.num_heads,
               qkv_size=m.qkv_size, rngs=rngs, init_scale=m.get('init_scale', 1.0))
  raise ValueError(f'Unknown model {m.name!r}.')


def state_size(model_config: ml_collections.ConfigDict, max_len: int,
               in_features: int | None = None) -> int:
  """Floats of state per sequence that the next prediction can draw on (GPICL's measure).

  `max_len` is the number of tokens (tasks.num_tokens). The MLP's state is its stored
  input, so it also needs `in_features`; the other models ignore it.
  """
  m = model_config
  if m.name == 'transformer':
    return Transformer.state_size(depth=m.depth, num_heads=m.num_heads, qkv_size=m.qkv_size,
                                  max_len=max_len)
  if m.name == 'lstm':
    return LSTM.state_size(width=m.width, depth=m.depth)
  if m.name == 'outer_lstm':
    return OuterProductLSTM.state_size(depth=m.depth, num_heads=m.num_heads,
                                       qkv_size=m.qkv_size)
  if m.name == 'mlp':
    if in_features is None:
      raise ValueError('The MLP\'s state is its max_len x in_features input: pass in_features.')
    return MLP.state_size(in_features=in_features, max_len=max_len)
  if m.name == 'lsa':
    return LSA.state_size(depth=m.depth, num_heads=m.num_heads, qkv_size=m.qkv_size)
  raise ValueError(f'Unknown model {m.name!r}.')
