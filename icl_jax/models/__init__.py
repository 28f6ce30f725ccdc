"""Model families. Each is a Flax NNX module mapping (tokens_BxSxF, mask_SxS) to outputs_BxSxC.

  transformer  pre-LayerNorm softmax Transformer (transformer.py)
  lstm         stacked LSTM (lstm.py); recurrent: serves the causal prompts only
  outer_lstm   outer-product / matrix-memory LSTM (lstm.py); recurrent, as lstm
  mlp          MLP over the flattened context, the memorising reference (mlp.py)
  lsa          linear self-attention only, von Oswald et al. (lsa.py)

`MODELS` is the one registry: each model's constructor, its state size and the prompts it
serves. `build`, `state_size`, the config's validation and the docs' table (docs/experiments.md) read it. A
model of one's own is one file, `models/<name>.py` (the package imports every module in
it) or a plugin (icl_jax/plugins.py), that calls `register`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, NamedTuple, TypeAlias

import ml_collections
from flax import nnx

from icl_jax.models import lstm
from icl_jax.models.lsa import LSA
from icl_jax.models.lsa import gd_construction
from icl_jax.models.lsa import lsa_predict
from icl_jax.models.lstm import LSTM
from icl_jax.models.lstm import OuterProductLSTM
from icl_jax.models.mlp import MLP
from icl_jax.models.transformer import ATTENTION
from icl_jax.models.transformer import DTYPES
from icl_jax.models.transformer import Transformer
from icl_jax.tasks.prompts import CAUSAL_PROMPTS
from icl_jax.tasks.prompts import PROMPTS

# Re-exported: what users and tests reach through `icl_jax.models`.
__all__ = ['ATTENTION', 'DTYPES', 'LSA', 'LSTM', 'MLP', 'MODELS', 'ModelEntry', 'OuterProductLSTM',
           'Transformer', 'build', 'gd_construction', 'lsa_predict', 'register', 'state_size']

ModelConfig: TypeAlias = ml_collections.ConfigDict  # config.model


class ModelEntry(NamedTuple):
  # (config.model, in_features, out_features, max_len, prompt, rngs) -> the module. A
  # model that serves fewer than all prompts refuses the others here, at build time.
  build: Callable[[ModelConfig, int, int, int, str | None, nnx.Rngs], nnx.Module]
  # (config.model, max_len, in_features or None) -> floats of state per sequence.
  state_size: Callable[[ModelConfig, int, int | None], int]
  prompts: tuple[str, ...]  # The prompt formats it serves (tasks.prompts.PROMPTS).
  # The compute dtypes it serves (config.model.dtype; DTYPES); parameters are float32.
  dtypes: tuple[str, ...] = ('float32',)

  def check(self, config: ml_collections.ConfigDict) -> str | None:
    """What this model asks of a config (config.validate calls it): the problem and its
    fix, or None."""
    m, prompt = config.model, config.task.prompt
    if prompt not in self.prompts:
      # Only the recurrent models serve fewer than all prompts: a state cannot hide a
      # token from the tokens after it.
      return (f'config.model.name={m.name!r} is recurrent and cannot serve the {prompt!r} '
              f'prompt (its query tokens must stay hidden from later tokens); use '
              f'--config.task.prompt={" or ".join(self.prompts)}.')
    if m.dtype not in self.dtypes:
      return (f'config.model.name={m.name!r} computes in {" or ".join(self.dtypes)} only; '
              f'set --config.model.dtype={self.dtypes[0]} (bfloat16 is the transformer\'s).')
    if m.attention == 'cudnn' and m.dtype != 'bfloat16':
      return ('config.model.attention=\'cudnn\' needs --config.model.dtype=bfloat16 (cuDNN\'s '
              'fused attention takes 16-bit inputs); or use \'auto\'.')
    return None


def _mlp_state_size(m: ModelConfig, max_len: int, in_features: int | None) -> int:
  if in_features is None:
    raise ValueError('The MLP\'s state is its max_len x in_features input: pass in_features.')
  return MLP.state_size(in_features=in_features, max_len=max_len)


MODELS: dict[str, ModelEntry] = {
    'transformer': ModelEntry(
        lambda m, i, o, max_len, prompt, rngs: Transformer(
            i, o, max_len, width=m.width, depth=m.depth, num_heads=m.num_heads,
            qkv_size=m.qkv_size, mlp_ratio=m.mlp_ratio, positions=m.positions, rngs=rngs,
            dtype=m.get('dtype', 'float32'), attention=m.get('attention', 'auto'),
            causal=prompt in CAUSAL_PROMPTS),
        lambda m, max_len, in_features: Transformer.state_size(
            depth=m.depth, num_heads=m.num_heads, qkv_size=m.qkv_size, max_len=max_len),
        PROMPTS, tuple(DTYPES)),
    'lstm': ModelEntry(
        lambda m, i, o, max_len, prompt, rngs: LSTM(
            i, o, max_len, width=m.width, depth=m.depth, prompt=prompt, rngs=rngs),
        lambda m, max_len, in_features: LSTM.state_size(width=m.width, depth=m.depth),
        lstm.SERVED_PROMPTS),
    'outer_lstm': ModelEntry(
        lambda m, i, o, max_len, prompt, rngs: OuterProductLSTM(
            i, o, max_len, width=m.width, depth=m.depth, num_heads=m.num_heads,
            qkv_size=m.qkv_size, prompt=prompt, rngs=rngs),
        lambda m, max_len, in_features: OuterProductLSTM.state_size(
            depth=m.depth, num_heads=m.num_heads, qkv_size=m.qkv_size),
        lstm.SERVED_PROMPTS),
    'mlp': ModelEntry(
        lambda m, i, o, max_len, prompt, rngs: MLP(
            i, o, max_len, width=m.width, depth=m.depth, rngs=rngs),
        _mlp_state_size,
        PROMPTS),
    'lsa': ModelEntry(
        lambda m, i, o, max_len, prompt, rngs: LSA(
            i, o, max_len, depth=m.depth, num_heads=m.num_heads, qkv_size=m.qkv_size,
            rngs=rngs, init_scale=m.get('init_scale', 1.0)),
        lambda m, max_len, in_features: LSA.state_size(
            depth=m.depth, num_heads=m.num_heads, qkv_size=m.qkv_size),
        PROMPTS),
}


def register(name: str, entry: ModelEntry) -> ModelEntry:
  """Adds a model; `config.model.name` may then name it."""
  if name in MODELS and MODELS[name] is not entry:
    raise ValueError(f'Two models are named {name!r}.')
  MODELS[name] = entry
  return entry


def _entry(model_config: ModelConfig) -> ModelEntry:
  if model_config.name not in MODELS:
    raise ValueError(f'Unknown model {model_config.name!r}.')
  return MODELS[model_config.name]


def build(model_config: ModelConfig, *, in_features: int, out_features: int, max_len: int,
          rngs: nnx.Rngs, prompt: str | None = None) -> nnx.Module:
  """Builds the model named by config.model.name for the given token and output sizes.

  With `prompt` (config.task.prompt), a recurrent model refuses a prompt it cannot serve
  here, at build time; the others serve every prompt and ignore it.
  """
  return _entry(model_config).build(model_config, in_features, out_features, max_len, prompt,
                                    rngs)


def state_size(model_config: ModelConfig, max_len: int, in_features: int | None = None) -> int:
  """Floats of state per sequence that the next prediction can draw on (GPICL's measure).

  `max_len` is the number of tokens (tasks.num_tokens). The MLP's state is its stored
  input, so it also needs `in_features`; the other models ignore it.
  """
  return _entry(model_config).state_size(model_config, max_len, in_features)


for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f'{__name__}.{_module.name}')
