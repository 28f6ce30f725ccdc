r"""Meta-test a trained model from its workdir, beside classical learners on the same episodes.

  python -m icl_jax.evaluate --workdir DIR [--step N] [--datasets digits,mnist,...] \
      [--num_tasks_eval M] [--out DIR] [--baselines sgd,logreg,...|none]

Restores the latest (or given) checkpoint and the config stored with it onto whatever
devices exist now, then measures in-context accuracy at every position on:
  seen          tasks from the training pool, on the training split;
  unseen        new tasks on the held-out split of the training dataset;
  unseen:NAME   new tasks on the held-out split of every other requested dataset,
                resized to the model's input shape;
  random        random inputs with random labels, to be memorised in context.
Every episode gets its own task, so M episodes are M tasks. Writes
`<out>/results.json`, `<out>/results.csv` and `<out>/accuracy.png` (default out:
`<workdir>/eval/<step>`) and prints a Table-1 style table.

A run of a regression family (linear, sparse_linear, relu2nn, tree, gp) is measured by
the normalised squared error at every position instead: (prediction - y)^2 divided by the
prior's E[y^2] (the error of predicting 0; for linear regression that is D, Garg et al.'s
normalisation), on seen and unseen tasks and on every shifted-input set of
config.eval.x_scales / x_shifts, beside least squares, ridge, Lasso, tuned gradient descent,
3-NN, averaging, the exact GP posterior mean (gp) and scikit-learn trees (tree). It writes
`error.png` instead of `accuracy.png`.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import os
import sys
import zlib
from typing import Any, Callable, Collection, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from icl_jax import checkpoint as checkpoint_lib
from icl_jax import data
from icl_jax import diagnose
from icl_jax import metrics as metrics_lib
from icl_jax import rng
from icl_jax import sharding
from icl_jax import steps
from icl_jax import tasks
from icl_jax.errors import UserError

SEEN, UNSEEN, RANDOM = 'seen', 'unseen', 'random'
# Size of the pool of random examples behind `random` episodes. Examples must recur
# within a sequence for anything to be memorised in context: with T = 50 draws from 20
# examples, most positions past the first ~20 repeat an earlier example.
RANDOM_POOL_SIZE = 20
# Episodes per compiled evaluation call: bounds memory, and one compilation serves all.
MAX_CHUNK = 256
Z_95 = 1.96


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """Where the episodes of one column come from."""
  name: str  # 'seen', 'unseen', 'unseen:mnist', 'random'.
  x_NxD: jax.Array
  y_N: jax.Array
  unseen: bool  # Task ids outside the training pool.
  options: Any = None  # A synthetic family's TaskOptions for this set (shifted inputs).


def display_name(set_name: str, train_dataset: str) -> str:
  if set_name == SEEN:
    return f'{train_dataset} (seen tasks)'
  if set_name == UNSEEN:
    return train_dataset
  name = set_name.split(':', 1)[-1]
  return f'{train_dataset}, {name}' if name.startswith('x_') else name


def random_dataset(seed: int, num_features: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """A pool of Gaussian inputs with uniformly random labels (the paper's Random column)."""
  key_x, key_y = jax.random.split(rng.key(seed, 'random_dataset'))
  x_NxD = jax.random.normal(key_x, (RANDOM_POOL_SIZE, num_features))
  y_N = jax.random.randint(key_y, (RANDOM_POOL_SIZE,), 0, num_classes, dtype=jnp.int32)
  return np.asarray(x_NxD), np.asarray(y_N)


def make_eval_sets(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                   train_ds: data.Dataset, eval_ds: data.Dataset,
                   other_datasets: Sequence[str] = (), include_random: bool = False,
                   data_dir: str | None = None) -> list[EvalSet]:
  """The seen and unseen sets of the training dataset, then other datasets, then random.

  A synthetic family has no datasets: seen and unseen tasks, then its shifted-input sets.
  """
  put = functools.partial(sharding.put_replicated, mesh=mesh)
  sets = [EvalSet(SEEN, put(train_ds.x_NxD), put(train_ds.y_N), unseen=False),
          EvalSet(UNSEEN, put(eval_ds.x_NxD), put(eval_ds.y_N), unseen=True)]
  if config.task.family != 'projected':
    extra = [d for d in other_datasets if d != config.task.family]
    if extra:
      raise UserError(f'The {config.task.family!r} family samples its own inputs; it cannot '
                      f'be meta-tested on datasets {extra}. Drop --datasets.')
    base = steps.task_options(config)
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
    sets.append(EvalSet(f'{UNSEEN}:{name}', put(ds.x_NxD), put(ds.y_N), unseen=True))
  if include_random:
    x_NxD, y_N = random_dataset(config.seed, train_ds.num_features, train_ds.num_classes)
    sets.append(EvalSet(RANDOM, put(x_NxD), put(y_N), unseen=True))
  return sets


class Evaluator:
  """A score at every position for the model and any baselines, on shared episodes: whether
  the prediction is correct (classification), or its normalised squared error (regression).

  The episodes of a set depend only on the seed and the set's name, so every method, and
  every evaluation of a run during training, sees the very same episodes (paired
  comparisons).
  """

  def __init__(self, config: ml_collections.ConfigDict, spec: steps.Spec,
               mesh: jax.sharding.Mesh, sets: Sequence[EvalSet], num_episodes: int,
               baselines: Mapping[str, Callable[..., jax.Array]] | None = None,
               host_baselines: Collection[str] = ()):
    """`baselines` run on the same episodes; those named in `host_baselines` are numpy
    functions (scikit-learn) called outside jit."""
    n = mesh.shape[sharding.DATA]  # Episodes split over `data`; any `run` axis replicates.
    chunk = min(_round_up(num_episodes, n), _round_up(MAX_CHUNK, n))
    self.config, self.spec, self.sets = config, spec, list(sets)
    self.chunk, self.num_chunks = chunk, math.ceil(num_episodes / chunk)
    self.num_episodes = self.chunk * self.num_chunks
    batch_sharded = sharding.batch_sharded(mesh)

    def sample(key, run, x_NxD, y_N, unseen, options):
      episode = spec.sample(key, run, x_NxD, y_N, chunk, unseen=unseen, options=options)
      return jax.lax.with_sharding_constraint(episode, batch_sharded)

    self._sample = jax.jit(sample, static_argnames=('unseen', 'options'))
    if spec.regression:
      y_variance = tasks.FAMILIES[spec.family].y_variance(spec.options)
      score = lambda pred_BxT, ep: jnp.square(pred_BxT - ep.y_BxT) / y_variance
      call = lambda fn, ep: fn(ep.x_BxTxD, ep.y_BxT)
    else:
      score = lambda pred_BxT, ep: pred_BxT == ep.y_BxT
      call = lambda fn, ep: fn(ep.x_BxTxD, ep.y_BxT, spec.num_classes).argmax(-1)
    # Replicated results: every process can read all of them (`per_position`), which a
    # batch-sharded array spanning several processes does not allow.
    replicated = sharding.replicated(mesh)
    self._model = jax.jit(lambda params, ep: score(spec.predict(params, ep), ep),
                          out_shardings=replicated)
    self._baselines = {}
    for name, fn in (baselines or {}).items():
      if name in host_baselines:
        self._baselines[name] = lambda ep, fn=fn: score(jnp.asarray(call(fn, ep)), ep)
      else:
        self._baselines[name] = jax.jit(lambda ep, fn=fn: score(call(fn, ep), ep),
                                        out_shardings=replicated)

  def episodes(self, eval_set: EvalSet, run: steps.Run) -> list[tasks.Episode]:
    """The episodes of one set for one run (its seed's keys and its task pool)."""
    set_key = jax.random.fold_in(run.eval_key, zlib.crc32(eval_set.name.encode()) & 0x7FFFFFFF)
    return [self._sample(jax.random.fold_in(set_key, i), run, eval_set.x_NxD, eval_set.y_N,
                         unseen=eval_set.unseen, options=eval_set.options)
            for i in range(self.num_chunks)]

  def per_position(self, params: Any, run: steps.Run,
                   model_name: str = 'model') -> dict[str, dict[str, np.ndarray]]:
    """{set name: {method: score_MxT}} with M = self.num_episodes: correct (bool) for a
    classification family, normalised squared error (float) for a regression one."""
    out = {}
    for eval_set in self.sets:
      episodes = self.episodes(eval_set, run)
      methods = {model_name: [self._model(params, ep) for ep in episodes]}
      for name, fn in self._baselines.items():
        methods[name] = [fn(ep) for ep in episodes]
      out[eval_set.name] = {m: np.concatenate(jax.device_get(c)) for m, c in methods.items()}
    return out

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


# ---------------------------------------------------------------------------------------
# Results: JSON, CSV, figure, table
# ---------------------------------------------------------------------------------------
def curves(score_MxT: np.ndarray) -> dict[str, list[float]]:
  """Mean score per position and the half-width of its 95% normal interval."""
  m = score_MxT.shape[0]
  mean_T = score_MxT.mean(0)
  if score_MxT.dtype == bool:
    half_T = Z_95 * np.sqrt(mean_T * (1 - mean_T) / max(m - 1, 1))
  else:
    half_T = Z_95 * score_MxT.std(0, ddof=1) / np.sqrt(m) if m > 1 else np.zeros_like(mean_T)
  return {'mean': mean_T.tolist(), 'ci95': half_T.tolist()}


def write_csv(path: str, results: Mapping[str, Mapping[str, Mapping[str, list[float]]]],
              metric: str = 'accuracy') -> None:
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['set', 'method', 'examples_in_context', metric, 'ci95'])
    for set_name, methods in results.items():
      for method, c in methods.items():
        for t, (mean, half) in enumerate(zip(c['mean'], c['ci95'])):
          w.writerow([set_name, method, t, f'{mean:.6f}', f'{half:.6f}'])


def plot(path: str, results: Mapping[str, Mapping[str, Mapping[str, list[float]]]],
         titles: Mapping[str, str], chance: float | None, regression: bool = False) -> None:
  """One panel per set, one curve per method; `chance` draws a reference line (for
  regression: 1.0, the error of predicting the prior mean)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  n = len(results)
  fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False, sharey=True)
  for ax, (set_name, methods) in zip(axes[0], results.items()):
    for method, c in methods.items():
      mean, half = np.asarray(c['mean']), np.asarray(c['ci95'])
      t = np.arange(len(mean))
      style = dict(lw=2.2, zorder=3) if method == next(iter(methods)) else dict(lw=1.2)
      ax.plot(t, mean, label=method, **style)
      ax.fill_between(t, mean - half, mean + half, alpha=0.15)
    if chance is not None:
      ax.axhline(chance, color='gray', ls='--', lw=1,
                 label='predict 0' if regression else 'chance')
    ax.set_title(titles[set_name])
    ax.set_xlabel('examples in context')
    if regression:
      top = max(max(c['mean']) for c in methods.values())
      ax.set_ylim(0, min(max(top, 1.0) * 1.05, 2.0))
    else:
      ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel('normalised squared error' if regression else 'accuracy')
  axes[0][-1].legend(fontsize=8, loc='upper right' if regression else 'lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def table(results: Mapping[str, Mapping[str, Mapping[str, list[float]]]],
          titles: Mapping[str, str], regression: bool = False,
          positions: Sequence[int] = ()) -> str:
  """Accuracy (%) after T-1 examples: one row per method, one column per set.

  Regression: the normalised squared error after T-1 examples, and first at each of
  `positions` (e.g. D/2 and D examples, where least squares reaches 0) for the first set.
  """
  sets = list(results)
  methods = list(next(iter(results.values())))
  seq_len = len(next(iter(next(iter(results.values())).values()))['mean'])
  if regression:
    ks = [k for k in positions if 0 <= k < seq_len - 1]
    head = (['normalised error'] + [f'{titles[sets[0]]}, k={k}' for k in ks] +
            [f'{titles[s]}, k={seq_len - 1}' for s in sets])
    rows = [[m] + [f'{results[sets[0]][m]["mean"][k]:.3f}' for k in ks] +
            [f'{results[s][m]["mean"][-1]:.3f}' for s in sets] for m in methods]
  else:
    head = [f'after {seq_len - 1} examples'] + [titles[s] for s in sets]
    rows = [[m] + [f'{100 * results[s][m]["mean"][-1]:.2f}' for s in sets] for m in methods]
  widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
  fmt = lambda r: '  '.join(c.ljust(w) if i == 0 else c.rjust(w)
                            for i, (c, w) in enumerate(zip(r, widths)))
  return '\n'.join([fmt(head), '  '.join('-' * w for w in widths)] + [fmt(r) for r in rows])


# ---------------------------------------------------------------------------------------
# Restore and evaluate
# ---------------------------------------------------------------------------------------
def restore(workdir: str, step: int | None = None, mesh: jax.sharding.Mesh | None = None):
  """(config, checkpointer, step, mesh) for a workdir's checkpoint; mesh: all devices now."""
  if not os.path.isdir(checkpoint_lib.directory(workdir)):
    raise UserError(f'No checkpoints in {workdir!r}: expected {checkpoint_lib.directory(workdir)}. '
                    f'Pass the --workdir of a training run.')
  ckpt = checkpoint_lib.Checkpointer(workdir, read_only=True)
  available = ckpt.all_steps()
  if not available:
    raise UserError(f'Workdir {workdir!r} has no complete checkpoint yet.')
  if step is None:
    step, config = ckpt.latest_config()  # Skips (with a warning) configs that do not read back.
  elif step not in available:
    raise UserError(f'Workdir {workdir!r} has no checkpoint at step {step}; available steps: '
                    f'{", ".join(map(str, sorted(available)))}.')
  else:
    config = ckpt.restore_config(step)
  config.mesh.data = config.mesh.run = -1  # Whatever devices exist now.
  mesh = mesh or sharding.make_mesh(config.mesh)
  return config, ckpt, step, mesh


def evaluate_workdir(workdir: str, step: int | None = None, datasets: Sequence[str] = (),
                     num_episodes: int | None = None, out: str | None = None,
                     baseline_names: Sequence[str] | None = None,
                     data_dir: str | None = None) -> dict[str, Any]:
  """Runs the whole meta-test of a checkpoint and writes results.json/.csv/.png."""
  from icl_jax import baselines as baselines_lib  # pylint: disable=g-import-not-at-top
  from icl_jax import train  # pylint: disable=g-import-not-at-top
  requested_step = step
  config, ckpt, step, mesh = restore(workdir, step)
  if data_dir:
    config.data.data_dir = data_dir
  num_episodes = num_episodes or config.eval.num_episodes
  if num_episodes < 1:
    raise UserError(f'--num_tasks_eval must be >= 1, got {num_episodes}.')

  train_ds, eval_ds = train.load_splits(config)
  spec = steps.make_spec(config, train_ds.num_features, train_ds.num_classes)
  available = _available_baselines(config, spec)
  unknown = [b for b in (baseline_names or ()) if b not in available]
  if unknown:
    raise UserError(f'Unknown baselines {unknown} for the {config.task.family!r} family; '
                    f'choose from {", ".join(available)} or none.')
  # No --step: the newest checkpoint that restores (damaged ones are skipped, not moved).
  state = train.restore_state(config, spec, ckpt, requested_step, mesh)
  step = int(jax.device_get(state['step']))
  sets = make_eval_sets(config, mesh, train_ds, eval_ds, datasets,
                        include_random=not spec.regression and config.task.family == 'projected',
                        data_dir=data_dir)
  run = sharding.put(steps.run_values(config), sharding.replicated(mesh))

  chosen = {}
  names = _default_baselines(config, spec) if baseline_names is None else list(baseline_names)
  fns = {name: available[name] for name in names}
  tuned = {'sgd': (baselines_lib.tune_sgd_lr, baselines_lib.predict_sgd),
           'gd': (baselines_lib.tune_gd_lr, baselines_lib.predict_gd)}
  for name, (tune, predict) in tuned.items():
    if name not in fns:
      continue
    # The paper's SGD row (and GD for regression): the learning rate is picked on
    # training-pool tasks, on episodes disjoint from the evaluation ones.
    tune_set = EvalSet(f'{name}_tuning', sets[0].x_NxD, sets[0].y_N, unseen=False)
    tuner = Evaluator(config, spec, mesh, [tune_set], num_episodes)
    ep = jax.tree.map(lambda *a: jnp.concatenate(a), *tuner.episodes(tune_set, run))
    tune_args = (ep.x_BxTxD, ep.y_BxT) + (() if spec.regression else (spec.num_classes,))
    lr, _ = tune(*tune_args)
    chosen[f'{name}_lr'] = float(lr)
    fns[name] = functools.partial(predict, lr=float(lr))

  model_name = config.model.name
  evaluator = Evaluator(config, spec, mesh, sets, num_episodes, fns,
                        host_baselines=baselines_lib.HOST_REGRESSION_BASELINES)
  scores = evaluator.per_position(state['params'], run, model_name=model_name)
  results = {s: {m: curves(c) for m, c in methods.items()} for s, methods in scores.items()}
  metric = metric_name(spec)
  summary = summarize_positions({s: c[model_name].mean(0) for s, c in scores.items()},
                                config.eval.first_positions, config.eval.last_positions,
                                metric=metric)
  records = metrics_lib.read(workdir)
  report = {
      'workdir': os.path.abspath(workdir), 'step': step,
      'num_episodes': evaluator.num_episodes, 'seq_len': config.task.seq_len,
      'metric': 'normalized_squared_error' if spec.regression else 'accuracy',
      'phase': None if spec.regression else diagnose.phase(summary, spec.num_classes),
      'plateau_steps': None if spec.regression else diagnose.plateau_length(records,
                                                                            spec.num_classes),
      'summary': summary, 'chosen_hparams': chosen,
      'config': config.to_dict(), 'results': results,
  }

  out = out or os.path.join(workdir, 'eval', str(step))
  os.makedirs(out, exist_ok=True)
  train_name = config.data.dataset if config.task.family == 'projected' else config.task.family
  titles = {s.name: display_name(s.name, train_name) for s in sets}
  with open(os.path.join(out, 'results.json'), 'w') as f:
    json.dump(report, f, indent=1, default=_json_default)
  write_csv(os.path.join(out, 'results.csv'), results, report['metric'])
  if spec.regression:
    report['figure'] = 'error.png'
    plot(os.path.join(out, report['figure']), results, titles, 1.0, regression=True)
    dim = config.task.dim
    report['table'] = table(results, titles, regression=True, positions=(dim // 2, dim))
  else:
    report['figure'] = 'accuracy.png'
    plot(os.path.join(out, report['figure']), results, titles, 1.0 / spec.num_classes)
    report['table'] = table(results, titles)
  report['out'] = out
  return report


def _available_baselines(config: ml_collections.ConfigDict,
                         spec: steps.Spec) -> dict[str, Callable[..., Any]]:
  """Every baseline that serves this family, with the prior's hyperparameters bound."""
  from icl_jax import baselines as baselines_lib  # pylint: disable=g-import-not-at-top
  if not spec.regression:
    return dict(baselines_lib.BASELINES)
  t = config.task
  noise_var = t.noise_std**2
  out = baselines_lib.make_regression_baselines(
      # Ridge with lam = the noise variance is the posterior mean for w ~ N(0, I); without
      # noise a small lam keeps it defined before D examples.
      ridge_lam=noise_var if noise_var > 0 else baselines_lib.DEFAULT_RIDGE_LAM,
      # The GP prior's own kernel and noise (the sampler adds 1e-6 jitter): Bayes-optimal.
      gp_length_scale=t.length_scale, gp_noise=noise_var + 1e-6)
  out.update(baselines_lib.HOST_REGRESSION_BASELINES)
  return out


def _default_baselines(config: ml_collections.ConfigDict, spec: steps.Spec) -> list[str]:
  """What a run is compared with by default: Garg et al.'s rows for the family."""
  if not spec.regression:
    from icl_jax import baselines as baselines_lib  # pylint: disable=g-import-not-at-top
    return list(baselines_lib.BASELINES)
  names = ['least_squares', 'ridge', 'lasso', 'gd', 'averaging', 'knn']
  if config.task.family == 'gp':
    names.append('gp')
  if config.task.family == 'tree':
    names += ['tree', 'tree_depth4']  # Boosting (~0.1 s a fit) only when asked for.
  return names


def _json_default(x):
  if isinstance(x, tuple):
    return list(x)
  raise TypeError(type(x))


def main(argv: Sequence[str]) -> None:
  del argv
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  flags = absl_flags.FLAGS
  if not flags['verbosity'].present:
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.set_verbosity(logging.WARNING)
  try:
    baseline_names = None
    if flags.baselines is not None:
      baseline_names = [] if flags.baselines == ['none'] else flags.baselines
    report = evaluate_workdir(flags.workdir, flags.step, flags.datasets or (),
                              flags.num_tasks_eval, flags.out, baseline_names, flags.data_dir)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  head = f'{report["workdir"]} at step {report["step"]}: {report["num_episodes"]} episodes per column'
  if report['phase'] is not None:
    head += f', phase {report["phase"]}, plateau {report["plateau_steps"]} steps'
  print(head)
  if report['chosen_hparams']:
    print('chosen: ' + ', '.join(f'{k}={v:g}' for k, v in report['chosen_hparams'].items()))
  print(report['table'])
  print(f'wrote {report["out"]}/results.json, results.csv, {report["figure"]}')


def define_flags() -> None:
  """Flags of the CLI; defined only when run as a program, so importing stays side-effect free."""
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  absl_flags.DEFINE_string('workdir', None, 'Workdir of a training run.', required=True)
  absl_flags.DEFINE_integer('step', None, 'Checkpoint step; default: the latest.')
  absl_flags.DEFINE_list('datasets', [], 'Other TFDS datasets to meta-test on.')
  absl_flags.DEFINE_integer('num_tasks_eval', None,
                            'Episodes (each its own task) per column; default config.eval.num_episodes.')
  absl_flags.DEFINE_string('out', None, 'Output dir; default <workdir>/eval/<step>.')
  absl_flags.DEFINE_list('baselines', None, 'Baselines to run (default all), or none.')
  absl_flags.DEFINE_string('data_dir', None, 'TFDS data dir; default: the stored config\'s.')


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main)
