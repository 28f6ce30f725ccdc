"""The Evaluator: a score at every position of shared episodes, for a model and baselines.

Training evaluates with it every `train.eval_every_steps`; `icl_jax.evaluate` (the CLI)
runs the full meta-test with it and the classical learners. The sets it measures:
  seen          tasks from the training pool, on the training split;
  unseen        new tasks on the held-out split of the training dataset;
  unseen:NAME   new tasks on the held-out split of another dataset, resized to the model's
                input shape;
  unseen:x_scale=S / x_shift=S   (regression families) inputs scaled or shifted;
  random        random inputs with random labels, to be memorised in context.
Every episode gets its own task, so M episodes are M tasks.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Collection, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from icl_jax import baselines as baselines_lib
from icl_jax import data
from icl_jax import group as group_lib
from icl_jax import progress
from icl_jax import rng
from icl_jax import sharding
from icl_jax import steps
from icl_jax import tasks
from icl_jax import workload as workload_lib
from icl_jax.errors import UserError

SEEN, UNSEEN, RANDOM = 'seen', 'unseen', 'random'
# Size of the pool of random examples behind `random` episodes. Examples must recur
# within a sequence for anything to be memorised in context: with T = 50 draws from 20
# examples, most positions past the first ~20 repeat an earlier example.
RANDOM_POOL_SIZE = 20
# Episodes per compiled evaluation call: bounds memory, and one compilation serves all.
MAX_CHUNK = 256


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """Where the episodes of one column come from."""
  name: str  # 'seen', 'unseen', 'unseen:mnist', 'random'.
  x_NxD: jax.Array | data.Pixels  # As Workload.device_inputs places it.
  y_N: jax.Array
  unseen: bool  # Task ids outside the training pool.
  options: Any = None  # A synthetic family's TaskOptions for this set (shifted inputs).
  # Examples recur by design (the random pool): always drawn with replacement, whatever
  # config.task.distinct_examples says.
  recurring: bool = False


def random_dataset(seed: int, num_features: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """A pool of Gaussian inputs with uniformly random labels (the paper's Random column)."""
  key_x, key_y = jax.random.split(rng.key(seed, 'random_dataset'))
  x_NxD = jax.random.normal(key_x, (RANDOM_POOL_SIZE, num_features))
  y_N = jax.random.randint(key_y, (RANDOM_POOL_SIZE,), 0, num_classes, dtype=jnp.int32)
  return np.asarray(x_NxD), np.asarray(y_N)


def make_eval_sets(wl: workload_lib.Workload, mesh: jax.sharding.Mesh,
                   other_datasets: Sequence[str] = (), include_random: bool = False,
                   data_dir: str | None = None) -> list[EvalSet]:
  """The seen and unseen sets of the training dataset, then other datasets, then random.

  A synthetic family has no datasets: seen and unseen tasks, then its shifted-input sets.
  The training and held-out splits are the workload's device copies (training reads the
  same arrays).
  """
  config, train_ds, eval_ds = wl.config, wl.train_ds, wl.eval_ds
  sets = [EvalSet(SEEN, *wl.device_inputs(train_ds, mesh), unseen=False),
          EvalSet(UNSEEN, *wl.device_inputs(eval_ds, mesh), unseen=True)]
  if not wl.reads_dataset:
    extra = [d for d in other_datasets if d != config.task.family]
    if extra:
      raise UserError(f'The {config.task.family!r} family samples its own inputs; it cannot '
                      f'be meta-tested on datasets {extra}. Drop --datasets.')
    base = wl.spec.options
    for field in ('x_scale', 'x_shift'):
      for value in config.eval[field + 's']:
        sets.append(EvalSet(f'{UNSEEN}:{field}={value:g}', sets[1].x_NxD, sets[1].y_N,
                            unseen=True, options=dataclasses.replace(base, **{field: value})))
    return sets
  for name in other_datasets:
    if name == train_ds.name:
      continue
    ds = data.load(name, config.data.eval_split, tuple(config.data.image_shape),
                   data_dir or config.data.data_dir)
    if ds.num_classes > train_ds.num_classes:
      raise UserError(
          f'Dataset {name!r} has {ds.num_classes} classes but the model predicts '
          f'{train_ds.num_classes}; evaluate on datasets with at most '
          f'{train_ds.num_classes} classes.')
    ds.check_seq_len(config.task.seq_len)
    set_name = f'{UNSEEN}:{ds.short_name}'
    if set_name in {s.name for s in sets} or ds.short_name == train_ds.short_name:
      raise UserError(f'Two datasets to meta-test on are both named {ds.short_name!r} '
                      f'(the last is {name!r}); rename one folder or file.')
    sets.append(EvalSet(set_name, *wl.device_inputs(ds, mesh), unseen=True))
  if include_random:
    x_NxD, y_N = random_dataset(config.seed, train_ds.num_features, train_ds.num_classes)
    put = functools.partial(sharding.put_replicated, mesh=mesh)
    sets.append(EvalSet(RANDOM, put(x_NxD), put(y_N), unseen=True, recurring=True))
  return sets


class Evaluator:
  """A score at every position for the model and any baselines, on shared episodes: whether
  the prediction is correct (classification), or its normalised squared error (regression).

  The episodes of a set depend only on the seed and the set's name, so every method, and
  every evaluation of a run during training, sees the very same episodes (paired
  comparisons).
  """

  def __init__(self, wl: workload_lib.Workload, mesh: jax.sharding.Mesh,
               sets: Sequence[EvalSet], num_episodes: int,
               baselines: Mapping[str, Callable[..., jax.Array]] | None = None,
               host_baselines: Collection[str] = ()):
    """`baselines` run on the same episodes; those named in `host_baselines` are numpy
    functions (scikit-learn) called outside jit."""
    n = mesh.shape[sharding.DATA]  # Episodes split over `data`; any `run` axis replicates.
    chunk = min(_round_up(num_episodes, n), _round_up(MAX_CHUNK, n))
    spec = wl.spec
    self.config, self.spec, self.sets = wl.config, spec, list(sets)
    self.chunk, self.num_chunks = chunk, math.ceil(num_episodes / chunk)
    self.num_episodes = self.chunk * self.num_chunks
    batch_sharded = sharding.batch_sharded(mesh)

    def sample(key, run, x_NxD, y_N, unseen, options, recurring):
      episode = spec.sample(key, run, x_NxD, y_N, chunk, unseen=unseen, options=options,
                            distinct=False if recurring else None)
      return jax.lax.with_sharding_constraint(episode, batch_sharded)

    self._sample = jax.jit(sample, static_argnames=('unseen', 'options', 'recurring'))
    self._mesh = mesh
    self._group_fns: dict[tuple[str, str], Callable[..., jax.Array]] = {}
    if spec.regression:
      y_variance = tasks.FAMILIES[spec.family].y_variance(spec.options)
      score = lambda pred_BxT, ep: baselines_lib.normalized_squared_error_BxT(
          pred_BxT, ep.y_BxT, y_variance)
      call = lambda fn, ep: fn(ep.x_BxTxD, ep.y_BxT)
    else:
      score = lambda pred_BxT, ep: pred_BxT == ep.y_BxT
      call = lambda fn, ep: fn(ep.x_BxTxD, ep.y_BxT, spec.num_classes).argmax(-1)
    # Replicated results: every process can read all of them (`per_position`), which a
    # batch-sharded array spanning several processes does not allow.
    replicated = sharding.replicated(mesh)
    self._score = score
    self._model = jax.jit(lambda params, ep: score(spec.predict(params, ep), ep),
                          out_shardings=replicated)
    self._baselines = {}
    for name, fn in (baselines or {}).items():
      if name in host_baselines:
        self._baselines[name] = lambda ep, fn=fn: score(jnp.asarray(call(fn, ep)), ep)
      else:
        self._baselines[name] = jax.jit(lambda ep, fn=fn: score(call(fn, ep), ep),
                                        out_shardings=replicated)

  @property
  def model_scores(self) -> Callable[[Any, tasks.Episode], jax.Array]:
    """The compiled program that scores the model, (params, episode) -> score_BxT: what
    benchmarks/lowering.py lowers for other platforms."""
    return self._model

  def episodes(self, eval_set: EvalSet, run: steps.Run) -> list[tasks.Episode]:
    """The episodes of one set for one run (its seed's keys and its task pool)."""
    set_key = rng.fold_in_name(run.eval_key, eval_set.name)
    return [self._sample(jax.random.fold_in(set_key, i), run, eval_set.x_NxD, eval_set.y_N,
                         unseen=eval_set.unseen, options=eval_set.options,
                         recurring=eval_set.recurring)
            for i in range(self.num_chunks)]

  def per_position(self, params: Any, run: steps.Run, model_name: str = 'model',
                   show_progress: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """{set name: {method: score_MxT}} with M = self.num_episodes: correct (bool) for a
    classification family, normalised squared error (float) for a regression one.
    show_progress: one tick per column (a set and a method), naming it."""
    names = [model_name, *self._baselines]
    bar = progress.Progress(len(self.sets) * len(names), 'evaluate', unit='column',
                            disable=not show_progress)
    out = {}
    for eval_set in self.sets:
      episodes = self.episodes(eval_set, run)
      out[eval_set.name] = {}
      for name in names:
        bar.set_postfix(column=f'{eval_set.name} {name}')
        if name == model_name:
          scores = [self._model(params, ep) for ep in episodes]
        else:
          scores = [self._baselines[name](ep) for ep in episodes]
        out[eval_set.name][name] = np.concatenate(jax.device_get(scores))
        bar.update(1)
    bar.close()
    return out

  def group_summaries(self, params_R: Any, group: group_lib.Group) -> list[dict[str, float]]:
    """`summary` of every run of `group`, from the group's parameters (run axis first): one
    program per set and chunk for all the runs, laid out as the group's train step (vmapped,
    or one run after another on each device), so no run is gathered onto every device."""
    by_set = {}
    for eval_set in self.sets:
      fn = self._group_fn(eval_set, group.strategy)
      chunks = [fn(params_R, group.runs, eval_set.x_NxD, eval_set.y_N, i)
                for i in range(self.num_chunks)]
      by_set[eval_set.name] = np.concatenate(jax.device_get(chunks), axis=1)  # S x M x T
    return [summarize_positions({name: s[r].mean(0) for name, s in by_set.items()},
                                self.config.eval.first_positions,
                                self.config.eval.last_positions, metric=metric_name(self.spec))
            for r in range(group.num_runs)]

  def _group_fn(self, eval_set: EvalSet, how: str) -> Callable[..., jax.Array]:
    """(params_R, runs_R, x_NxD, y_N, chunk index) -> score_RxBxT, jit-ed, for one set."""
    if (eval_set.name, how) not in self._group_fns:
      spec, chunk = self.spec, self.chunk

      def one(batch_sharding, params, run, x_NxD, y_N, i):
        key = jax.random.fold_in(rng.fold_in_name(run.eval_key, eval_set.name), i)
        episode = spec.sample(key, run, x_NxD, y_N, chunk, unseen=eval_set.unseen,
                              options=eval_set.options,
                              distinct=False if eval_set.recurring else None)
        episode = jax.lax.with_sharding_constraint(episode, batch_sharding)
        return self._score(spec.predict(params, episode), episode)

      fn = group_lib.over_runs(one, self._mesh, how, (0, 0, None, None, None),
                               P(sharding.DATA))
      self._group_fns[eval_set.name, how] = jax.jit(
          fn, out_shardings=sharding.replicated(self._mesh))
    return self._group_fns[eval_set.name, how]

  def summary(self, params: Any, run: steps.Run) -> dict[str, float]:
    """'<set>/acc_first' and '<set>/acc_last' of the model ('<set>/err_first', '.../err_last'
    for regression), for logs and phase labels."""
    return summarize_positions(
        {s: c['model'].mean(0) for s, c in self.per_position(params, run).items()},
        self.config.eval.first_positions, self.config.eval.last_positions,
        metric=metric_name(self.spec))


def metric_name(spec: steps.Spec) -> str:
  """'err' (normalised squared error) for a regression family, else 'acc'."""
  return 'err' if spec.regression else 'acc'


def summarize_positions(score_by_set: Mapping[str, np.ndarray], first: int,
                        last: int, metric: str = 'acc') -> dict[str, float]:
  out = {}
  for name, score_T in score_by_set.items():
    out[f'{name}/{metric}_first'] = float(score_T[:first].mean())
    out[f'{name}/{metric}_last'] = float(score_T[-last:].mean())
  return out


def format_summary(step: int, summary: Mapping[str, float],
                   config: ml_collections.ConfigDict) -> str:
  first, last = config.eval.first_positions, config.eval.last_positions
  metric = 'err' if f'{SEEN}/err_first' in summary else 'acc'
  parts = [f'{name} tasks: {metric} first {first} = {summary[f"{name}/{metric}_first"]:.3f}, '
           f'last {last} = {summary[f"{name}/{metric}_last"]:.3f}' for name in (SEEN, UNSEEN)]
  return f'step {step} | ' + ' | '.join(parts)


def _round_up(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple
