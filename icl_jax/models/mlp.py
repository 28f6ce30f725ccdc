"""An MLP over the flattened context: the memorising reference among the black boxes.

GPICL (Kirsch et al. 2022) uses an MLP as the model that memorises but does not learn in
context. For the prediction at position i the input is the whole max_len x F token block,
flattened, with every token that i may not read (mask_SxS[i, j] false: later tokens, and
the hidden queries of the context_query prompt) set to zero, plus a one-hot of i so the
network knows which position it answers. Because the first layer is linear, it is computed
without building those max_len inputs: each token is projected by its own slot's weights
once and the mask sums the projections, h_i = sum_j mask[i, j] W_j token_j.

Why it memorises and does not learn in context: each slot j has its own weights W_j, and
the slots' contributions are added before the nonlinearity. A learning algorithm has to
compare the query with each labelled example and combine the results the same way for
every example; here nothing is shared between slots, so that comparison would have to be
built from sums by the hidden layers separately for each of the max_len slots. What an MLP
finds instead is a lookup: recognise a task (or instance) seen in meta-training from the
context and apply a stored classifier. It still fits seen tasks, so it marks the
memorisation end of the phase diagram.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from icl_jax.models.lsa import normal


class MLP(nnx.Module):
  """tokens_BxSxF -> outputs_BxSxC; output i is an MLP of the tokens that i may read.

  Honours any mask (not only causal), so it serves every prompt format. The token being
  predicted enters a second time through weights shared over positions, so that one
  function of it (e.g. a memorised task's classifier) serves every position instead of
  being learnt once per slot. `depth` hidden layers of `width` units, GELU.
  """

  def __init__(self, in_features: int, out_features: int, max_len: int, *, width: int,
               depth: int, rngs: nnx.Rngs):
    self.max_len = max_len
    # Initialised as one dense layer with fan-in max_len * F, which it is.
    std = 1.0 / math.sqrt(max_len * in_features)
    self.slots_SxFxH = nnx.Param(normal(rngs.params(), (max_len, in_features, width), std))
    self.current = nnx.Linear(in_features, width, rngs=rngs)
    # The one-hot position input's weights: which position is being answered.
    self.position_SxH = nnx.Param(jnp.zeros((max_len, width)))
    self.hidden = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(depth - 1)])
    self.head = nnx.Linear(width, out_features, rngs=rngs)

  def __call__(self, tokens_BxSxF: jax.Array, mask_SxS: jax.Array) -> jax.Array:
    s = tokens_BxSxF.shape[1]
    if s > self.max_len:
      raise ValueError(f'Sequence of {s} tokens is longer than the model\'s '
                       f'{self.max_len} positions.')
    per_slot_BxSxH = jnp.einsum('bsf,sfh->bsh', tokens_BxSxF, self.slots_SxFxH[:s])
    context_BxSxH = jnp.einsum('ij,bjh->bih', mask_SxS.astype(per_slot_BxSxH.dtype),
                               per_slot_BxSxH)
    h_BxSxH = jax.nn.gelu(context_BxSxH + self.current(tokens_BxSxF) +
                          self.position_SxH[:s][None])
    for layer in self.hidden:
      h_BxSxH = jax.nn.gelu(layer(h_BxSxH))
    return self.head(h_BxSxH)

  @staticmethod
  def state_size(*, in_features: int, max_len: int) -> int:
    """Floats the next prediction can draw on: the stored context itself."""
    return max_len * in_features
