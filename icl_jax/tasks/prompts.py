"""Prompt formats: how an episode becomes tokens, which tokens see which, where to read.

`gpicl` (the paper's): T tokens [x_t, onehot(y_{t-1})] with y_0 = 0, causal attention;
  the output at token t predicts y_t. Learning anything needs a previous-token circuit
  first (to pair x_{t-1} with y_{t-1}), which is why this format sits on a long plateau.

`context_query`: 2T tokens, interleaved q_1, c_1, q_2, c_2, ... with query q_j = [x_j, 0]
  and context c_j = [x_j, onehot(y_j)]. Context tokens attend causally to context tokens;
  q_j attends to c_1..c_{j-1} and itself. The output at q_j predicts y_j, so there is
  still a prediction at every position with exactly j-1 labelled examples behind it,
  but one attention layer can compare the query with the labelled context directly.

`interleaved` (Garg et al.'s): 2T tokens x_1, y_1, x_2, y_2, ... with x tokens [x_j, 0] and
  label tokens [0, label(y_j)], causal attention; the output at x_j predicts y_j. Like
  gpicl it needs a previous-token circuit to pair x_j with y_j; unlike context_query it is
  causal, so recurrent models serve it.

Labels become features by their dtype: an integer class y is onehot(y, num_classes), a
float regression target y is the single feature [y] (num_classes = 1 then).

Putting q_j before c_j makes every allowed key an earlier-or-equal position, so all three
masks are sub-masks of the causal one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.tasks.episode import Episode

# Every prompt format, in the order the config's error messages list them.
PROMPTS = ('gpicl', 'context_query', 'interleaved')
TWO_TOKEN_PROMPTS = ('context_query', 'interleaved')


def num_tokens(prompt: str, seq_len: int) -> int:
  return 2 * seq_len if prompt in TWO_TOKEN_PROMPTS else seq_len


def labels(y_BxT: jax.Array, num_classes: int, dtype) -> jax.Array:
  """label_BxTxC: onehot of class labels; a regression target as one feature (C = 1)."""
  if jnp.issubdtype(y_BxT.dtype, jnp.floating):
    return y_BxT[..., None].astype(dtype)
  return jax.nn.one_hot(y_BxT, num_classes, dtype=dtype)


def tokens(episode: Episode, num_classes: int, prompt: str) -> jax.Array:
  """tokens_BxSxF with F = D + num_classes (num_classes = 1 for regression targets)."""
  x_BxTxD, y_BxT = episode
  onehot_BxTxC = labels(y_BxT, num_classes, x_BxTxD.dtype)
  if prompt == 'gpicl':
    prev_BxTxC = jnp.pad(onehot_BxTxC[:, :-1], ((0, 0), (1, 0), (0, 0)))
    return jnp.concatenate([x_BxTxD, prev_BxTxC], axis=-1)
  if prompt == 'context_query':
    query_BxTxF = jnp.concatenate([x_BxTxD, jnp.zeros_like(onehot_BxTxC)], axis=-1)
    context_BxTxF = jnp.concatenate([x_BxTxD, onehot_BxTxC], axis=-1)
    b, t, f = query_BxTxF.shape
    return jnp.stack([query_BxTxF, context_BxTxF], axis=2).reshape(b, 2 * t, f)
  if prompt == 'interleaved':
    x_token_BxTxF = jnp.concatenate([x_BxTxD, jnp.zeros_like(onehot_BxTxC)], axis=-1)
    y_token_BxTxF = jnp.concatenate([jnp.zeros_like(x_BxTxD), onehot_BxTxC], axis=-1)
    b, t, f = x_token_BxTxF.shape
    return jnp.stack([x_token_BxTxF, y_token_BxTxF], axis=2).reshape(b, 2 * t, f)
  raise ValueError(f'Unknown prompt format {prompt!r}.')


def attention_mask(prompt: str, seq_len: int) -> np.ndarray:
  """mask_SxS[i, j]: token i may attend to token j. Static, so it is a numpy constant."""
  s = num_tokens(prompt, seq_len)
  causal_SxS = np.tril(np.ones((s, s), dtype=bool))
  if prompt in ('gpicl', 'interleaved'):
    return causal_SxS
  is_context_S = np.arange(s) % 2 == 1
  return causal_SxS & (is_context_S[None, :] | np.eye(s, dtype=bool))


def predictions(outputs_BxSxC: jax.Array, prompt: str) -> jax.Array:
  """The outputs that predict y_1..y_T: outputs_BxTxC."""
  return outputs_BxSxC[:, ::2] if prompt in TWO_TOKEN_PROMPTS else outputs_BxSxC


def _is_causal(prompt: str) -> bool:
  # Two examples suffice: each mask repeats one pattern per example.
  mask_SxS = attention_mask(prompt, seq_len=2)
  return np.array_equal(mask_SxS, np.tril(np.ones_like(mask_SxS)))


# The prompts whose mask is exactly the causal one: a recurrent model, whose state carries
# every token to all later ones, serves these and no others.
CAUSAL_PROMPTS = tuple(p for p in PROMPTS if _is_causal(p))
