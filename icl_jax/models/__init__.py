"""Model families. Each is a Flax NNX module mapping (tokens_BxSxF, mask_SxS) to outputs_BxSxC."""

from __future__ import annotations

import ml_collections
from flax import nnx

from icl_jax.models.transformer import Transformer


def build(model_config: ml_collections.ConfigDict, *, in_features: int, out_features: int,
          max_len: int, rngs: nnx.Rngs) -> nnx.Module:
  """Builds the model named by config.model.name for the given token and output sizes."""
  if model_config.name == 'transformer':
    return Transformer(
        in_features, out_features, max_len, width=model_config.width,
        depth=model_config.depth, num_heads=model_config.num_heads,
        qkv_size=model_config.qkv_size, mlp_ratio=model_config.mlp_ratio,
        positions=model_config.positions, rngs=rngs)
  raise ValueError(f'Unknown model {model_config.name!r}.')
