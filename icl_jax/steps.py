"""Pure, jit-able functions of (state, run values, arrays): initialisation and the train step.

Two kinds of inputs, kept apart so that a sweep can train many runs as one program:
  `Spec`  the static shape of a workload (prompt format, sizes, the model's graph), closed
          over: every run of a vmapped group shares it;
  `Run`   the values that may differ between runs of a group (keys from the seed, task pool
          size, optimizer hyperparameters), passed as arrays: vmapped over, never compiled in.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from icl_jax import fields as fields_lib
from icl_jax import models
from icl_jax import rng
from icl_jax import tasks

State = dict[str, Any]  # {'step': int32[], 'params': pure dict, 'opt_state': optax state}

class Run(NamedTuple):
  """The per-run values of a workload; leaves get a leading run axis in a sweep group."""
  init_key: jax.Array
  data_key: jax.Array  # The episodes of step k come from fold_in(data_key, k).
  task_key: jax.Array  # Task i is derived from fold_in(task_key, i).
  eval_key: jax.Array
  hparams: dict[str, jax.Array]


def run_values(config: ml_collections.ConfigDict) -> Run:
  """The run's keys (from its seed) and fields.HPARAM_FIELDS, as arrays."""
  fields = fields_lib.flatten(config)
  # num_tasks = -1 (infinite) stays an integer: the sampler handles it.
  hparams = {name: (np.int32 if name == 'num_tasks' else np.float32)(fields[path])
             for name, path in fields_lib.HPARAM_FIELDS.items()}
  return Run(rng.key(config.seed, rng.INIT), rng.key(config.seed, rng.DATA),
             rng.key(config.seed, rng.TASKS), rng.key(config.seed, rng.EVAL), hparams)


def stack_runs(runs: list[Run]) -> Run:
  """One Run whose leaves have a leading axis of len(runs)."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *runs)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The static part of the optimizer (config.train); its values (lr, b1, b2, eps) are a
  Run's hparams, so the runs of a group share one optimizer program."""
  steps: int
  warmup_steps: int
  schedule: str  # 'constant' or 'cosine' after warm-up.
  grad_clip: float  # Global-norm clip; 0 disables it.

  @classmethod
  def from_config(cls, train_config: ml_collections.ConfigDict) -> Schedule:
    tc = train_config
    return cls(tc.steps, tc.warmup_steps, tc.schedule, tc.grad_clip)


@dataclasses.dataclass(frozen=True)
class Spec:
  """The static shape of a workload: what the sampler draws, what the model reads, how
  it is optimised. Closed over by the compiled step; every run of a group shares it.

  A family that reads a dataset (tasks.FAMILIES[family].reads_dataset: GPICL's 'projected')
  samples its tasks from the dataset arrays passed to `sample`; the synthetic families draw
  their own inputs and ignore those arrays.
  """
  prompt: str
  num_features: int
  num_classes: int  # 1 for regression families: the model outputs one number.
  seq_len: int
  graphdef: Any  # nnx.GraphDef of the model.
  family: str = 'projected'  # A name in tasks.FAMILIES.
  options: tasks.TaskOptions | None = None  # The synthetic family's settings.
  curriculum: tasks.Curriculum | None = None
  # How a projected task draws its projection (config.task.projection): part of the
  # program, and seen and unseen tasks draw theirs alike.
  projection: str = tasks.DEFAULT_PROJECTION
  # Whether an episode's examples are distinct rows of the split (config.task.
  # distinct_examples; False: drawn with replacement, as runs before that option were).
  distinct_examples: bool = False
  batch_size: int = 0  # Training episodes per step (global: split over the data axis).
  schedule: Schedule | None = None
  # The model's constructor, rngs -> module: the one place a model is built, both for
  # `graphdef` (abstractly) and for fresh parameters (`init_params`).
  new_model: Callable[[nnx.Rngs], nnx.Module] | None = dataclasses.field(
      default=None, compare=False, repr=False)

  def init_params(self, init_key: jax.Array) -> Any:
    """Fresh parameters (a pure dict) from `init_key`, of the structure `graphdef` reads."""
    model = self.new_model(nnx.Rngs(params=init_key))
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))

  @property
  def regression(self) -> bool:
    return tasks.FAMILIES[self.family].kind == 'regression'

  def sample(self, key, run: Run, x_NxD, y_N, batch_size, unseen=False, *,
             options: tasks.TaskOptions | None = None, active_dim=None,
             distinct: bool | None = None) -> tasks.Episode:
    """B episodes; `options` overrides the family's (shifted-input evaluation sets),
    `active_dim` keeps only the first coordinates of x (the curriculum) and `distinct`
    overrides distinct_examples (the random pool, whose examples recur by design).
    `x_NxD` is a split's float32 rows or its compact device form (data.Pixels, see
    Workload.device_inputs)."""
    hp = run.hparams
    family = tasks.FAMILIES[self.family]
    dataset = {}
    if family.reads_dataset:
      # Unseen tasks are measured unbiased: bias_fraction is a training intervention.
      dataset = dict(x_NxD=x_NxD, y_N=y_N, num_classes=self.num_classes,
                     proj_scale=hp['proj_scale'], projection=self.projection,
                     distinct=self.distinct_examples if distinct is None else distinct,
                     bias_fraction=0.0 if unseen else hp['bias_fraction'])
    return family.sample(
        key, run.task_key, batch_size=batch_size, seq_len=self.seq_len,
        num_tasks=hp['num_tasks'], unseen=unseen, options=options or self.options,
        active_dim=active_dim, **dataset)

  def logits(self, params, episode: tasks.Episode) -> jax.Array:
    """logits_BxTxC: the prediction of y_t from the examples before t and x_t (for a
    regression family C = 1 and the one output is the predicted y_t)."""
    tokens_BxSxF = tasks.tokens(episode, self.num_classes, self.prompt)
    # The episode's own T (<= seq_len; icl_jax.load's episodes may be shorter): every
    # prompt's mask for T examples is the top-left block of the mask for seq_len, and each
    # model reads positions [0, S), so the logits are those of the first T positions.
    t = episode.x_BxTxD.shape[1]
    mask_SxS = jnp.asarray(tasks.attention_mask(self.prompt, t))
    outputs_BxSxC = nnx.merge(self.graphdef, params)(tokens_BxSxF, mask_SxS)
    return tasks.predictions(outputs_BxSxC, self.prompt)

  def predict(self, params, episode: tasks.Episode) -> jax.Array:
    """pred_BxT: the predicted class, or the predicted value for a regression family."""
    logits_BxTxC = self.logits(params, episode)
    return logits_BxTxC[..., 0] if self.regression else logits_BxTxC.argmax(-1)


def task_options(config: ml_collections.ConfigDict) -> tasks.TaskOptions | None:
  """The synthetic family's settings from config.task; None for a family that reads a
  dataset ('projected'). It ignores them, and None keeps its Spec (a static argument of
  jit, and what a sweep groups runs by) independent of the synthetic fields."""
  t = config.task
  if tasks.FAMILIES[t.family].reads_dataset:
    return None
  return tasks.TaskOptions(**{f.name: t[f.name] for f in dataclasses.fields(tasks.TaskOptions)})


def synthetic_shape(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(num_features, num_classes) of a synthetic family: it has no dataset to ask."""
  family = tasks.FAMILIES[config.task.family]
  if family.reads_dataset:
    raise ValueError(f'The {config.task.family!r} family reads a dataset: its shape is the '
                     f'loaded dataset\'s, not a function of config.task.')
  options = task_options(config)
  return options.dim, family.num_classes(options)


def _build_model(config: ml_collections.ConfigDict, num_features: int, num_classes: int,
                 rngs: nnx.Rngs) -> nnx.Module:
  return models.build(
      config.model, in_features=num_features + num_classes, out_features=num_classes,
      max_len=tasks.num_tokens(config.task.prompt, config.task.seq_len), rngs=rngs,
      prompt=config.task.prompt)


def make_spec(config: ml_collections.ConfigDict, num_features: int, num_classes: int) -> Spec:
  """The Spec of `config` for inputs of `num_features` and `num_classes` outputs (from the
  dataset, or `synthetic_shape`); use workload.build(config), which finds them."""
  new_model = functools.partial(_build_model, config, num_features, num_classes)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: new_model(rngs=nnx.Rngs(0))))
  return Spec(prompt=config.task.prompt, num_features=num_features, num_classes=num_classes,
              seq_len=config.task.seq_len, graphdef=graphdef, family=config.task.family,
              options=task_options(config), curriculum=tasks.Curriculum.from_config(config.task),
              projection=config.task.projection,
              distinct_examples=config.task.distinct_examples,
              batch_size=config.train.batch_size,
              schedule=Schedule.from_config(config.train), new_model=new_model)


def make_optimizer(schedule: Schedule, hparams: dict[str, Any]) -> optax.GradientTransformation:
  """Adam after global-norm clipping, with linear warm-up then constant or cosine lr.

  `hparams` (lr, b1, b2, eps) are a Run's, possibly traced: the optimizer's state has the
  same structure whatever their values, so one program serves every run of a group.
  """
  s = schedule
  adam = optax.adam(learning_rate(s, hparams['lr']), b1=hparams['b1'], b2=hparams['b2'],
                    eps=hparams['eps'])
  return optax.chain(optax.clip_by_global_norm(s.grad_clip), adam) if s.grad_clip else adam


def learning_rate(schedule: Schedule, lr: Any) -> optax.Schedule:
  """The learning rate of the update that makes step k + 1, as a function of k: linear
  warm-up, then constant or cosine decay to 0 at schedule.steps."""
  s = schedule
  warmup = optax.linear_schedule(0.0, lr, s.warmup_steps) if s.warmup_steps else None
  if s.schedule == 'cosine':
    after = optax.cosine_decay_schedule(lr, max(s.steps - s.warmup_steps, 1))
  else:
    after = optax.constant_schedule(lr)
  return optax.join_schedules([warmup, after], [s.warmup_steps]) if warmup else after


def num_params(params: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def init_state(run: Run, spec: Spec) -> State:
  """Step 0 of one run: fresh parameters from its init key, a zero optimizer state."""
  params = spec.init_params(run.init_key)
  opt_state = make_optimizer(spec.schedule, run.hparams).init(params)
  return {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': opt_state}


def train_step(state: State, run: Run, x_NxD: Any, y_N: jax.Array, *, spec: Spec,
               batch_sharding: Any = None) -> tuple[State, dict[str, jax.Array]]:
  """One meta-training step on freshly sampled episodes; the data is a function of the step.

  Classification: cross-entropy at every position. Regression: squared error at every
  position counted by the curriculum (all of them without one), Garg et al.'s loss.
  """
  active_dim = active_points = None
  if spec.curriculum is not None:
    active_dim, active_points = spec.curriculum.at(state['step'])
  episode = spec.sample(jax.random.fold_in(run.data_key, state['step']), run, x_NxD, y_N,
                        spec.batch_size, active_dim=active_dim)
  if batch_sharding is not None:
    # Each device samples only its own episodes; the rest of the step follows this layout.
    episode = jax.lax.with_sharding_constraint(episode, batch_sharding)

  def loss_fn(params):
    logits_BxTxC = spec.logits(params, episode)
    if spec.regression:
      err_BxT = jnp.square(logits_BxTxC[..., 0] - episode.y_BxT)
      if active_points is None:
        return err_BxT.mean(), logits_BxTxC
      counted_T = (jnp.arange(spec.seq_len) < active_points).astype(err_BxT.dtype)
      return ((err_BxT * counted_T[None]).sum() / (err_BxT.shape[0] * counted_T.sum()),
              logits_BxTxC)
    loss_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxC, episode.y_BxT)
    return loss_BxT.mean(), logits_BxTxC

  (loss, logits_BxTxC), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
  tx = make_optimizer(spec.schedule, run.hparams)
  updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
  params = optax.apply_updates(state['params'], updates)
  metrics = {
      'loss': loss,
      # optax.tree.norm: what the deprecated optax.global_norm calls (optax >= 0.2.7), so the
      # logged figures are the same bits.
      'grad_norm': optax.tree.norm(grads),
      'param_norm': optax.tree.norm(params),  # Non-finite params show up here too.
  }
  if not spec.regression:
    metrics['accuracy'] = (logits_BxTxC.argmax(-1) == episode.y_BxT).mean()
  if spec.curriculum is not None:
    metrics['curriculum_dim'] = active_dim.astype(jnp.float32)
    metrics['curriculum_points'] = active_points.astype(jnp.float32)
  return {'step': state['step'] + 1, 'params': params, 'opt_state': opt_state}, metrics
