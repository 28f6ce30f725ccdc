"""Pure, jit-able functions of (state, keys, arrays): initialisation, the train step, eval.

Static choices (prompt format, sizes, the model's graph) live in a hashable `Spec` that is
closed over; everything that changes between calls is an argument, so one compiled step
serves a whole run, and a sweep can vmap it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from icl_jax import models
from icl_jax import tasks

State = dict[str, Any]  # {'step': int32[], 'params': pure dict, 'opt_state': optax state}


@dataclasses.dataclass(frozen=True)
class Spec:
  """The static shape of a workload: what the sampler draws and what the model reads."""
  prompt: str
  num_features: int
  num_classes: int
  seq_len: int
  num_tasks: int
  proj_scale: float
  bias_fraction: float
  graphdef: Any  # nnx.GraphDef of the model.

  def sample(self, key, task_key, x_NxD, y_N, batch_size, unseen=False) -> tasks.Episode:
    return tasks.sample_episodes(
        key, task_key, x_NxD, y_N, batch_size=batch_size, seq_len=self.seq_len,
        num_tasks=self.num_tasks, num_classes=self.num_classes, proj_scale=self.proj_scale,
        bias_fraction=0.0 if unseen else self.bias_fraction, unseen=unseen)

  def logits(self, params, episode: tasks.Episode) -> jax.Array:
    """logits_BxTxC: the prediction of y_t from the examples before t and x_t."""
    tokens_BxSxF = tasks.tokens(episode, self.num_classes, self.prompt)
    mask_SxS = jnp.asarray(tasks.attention_mask(self.prompt, self.seq_len))
    outputs_BxSxC = nnx.merge(self.graphdef, params)(tokens_BxSxF, mask_SxS)
    return tasks.predictions(outputs_BxSxC, self.prompt)


def make_spec(config: ml_collections.ConfigDict, num_features: int, num_classes: int) -> Spec:
  model_fn = functools.partial(
      models.build, config.model, in_features=num_features + num_classes,
      out_features=num_classes, max_len=tasks.num_tokens(config.task.prompt, config.task.seq_len))
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: model_fn(rngs=nnx.Rngs(0))))
  return Spec(prompt=config.task.prompt, num_features=num_features, num_classes=num_classes,
              seq_len=config.task.seq_len, num_tasks=config.task.num_tasks,
              proj_scale=float(config.task.proj_scale),
              bias_fraction=float(config.task.bias_fraction), graphdef=graphdef)


def make_optimizer(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam after global-norm clipping, with linear warm-up then constant or cosine lr."""
  tc = train_config
  warmup = optax.linear_schedule(0.0, tc.lr, tc.warmup_steps) if tc.warmup_steps else None
  if tc.schedule == 'cosine':
    after = optax.cosine_decay_schedule(tc.lr, max(tc.steps - tc.warmup_steps, 1))
  else:
    after = optax.constant_schedule(tc.lr)
  schedule = optax.join_schedules([warmup, after], [tc.warmup_steps]) if warmup else after
  adam = optax.adam(schedule, b1=tc.b1, b2=tc.b2, eps=tc.eps)
  return optax.chain(optax.clip_by_global_norm(tc.grad_clip), adam) if tc.grad_clip else adam


def init_state(key: jax.Array, config: ml_collections.ConfigDict, spec: Spec,
               tx: optax.GradientTransformation) -> State:
  model = models.build(
      config.model, in_features=spec.num_features + spec.num_classes,
      out_features=spec.num_classes, max_len=tasks.num_tokens(spec.prompt, spec.seq_len),
      rngs=nnx.Rngs(params=key))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': tx.init(params)}


def train_step(state: State, data_key: jax.Array, task_key: jax.Array, x_NxD: jax.Array,
               y_N: jax.Array, *, spec: Spec, tx: optax.GradientTransformation,
               batch_size: int, batch_sharding: Any = None) -> tuple[State, dict[str, jax.Array]]:
  """One meta-training step on freshly sampled episodes; the data is a function of the step."""
  episode = spec.sample(jax.random.fold_in(data_key, state['step']), task_key, x_NxD, y_N,
                        batch_size)
  if batch_sharding is not None:
    # Each device samples only its own episodes; the rest of the step follows this layout.
    episode = jax.lax.with_sharding_constraint(episode, batch_sharding)

  def loss_fn(params):
    logits_BxTxC = spec.logits(params, episode)
    loss_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxC, episode.y_BxT)
    return loss_BxT.mean(), logits_BxTxC

  (loss, logits_BxTxC), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
  updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
  params = optax.apply_updates(state['params'], updates)
  metrics = {
      'loss': loss,
      'accuracy': (logits_BxTxC.argmax(-1) == episode.y_BxT).mean(),
      'grad_norm': optax.global_norm(grads),
      'param_norm': optax.global_norm(params),  # Non-finite params show up here too.
  }
  return {'step': state['step'] + 1, 'params': params, 'opt_state': opt_state}, metrics

