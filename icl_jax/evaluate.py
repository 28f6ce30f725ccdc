r"""Meta-test a trained model from its workdir, beside classical learners on the same episodes.

  python -m icl_jax.evaluate --workdir DIR [--step N] [--datasets mnist,folder:PATH,...] \
      [--data_dir D] [--num_tasks_eval M] [--out DIR] [--baselines sgd,logreg,...|none]

Restores the latest (or given) checkpoint and the config stored with it onto whatever
devices exist now, then measures in-context accuracy at every position on:
  seen          tasks from the training pool, on the training split;
  unseen        new tasks on the held-out split of the training dataset;
  unseen:NAME   new tasks on the held-out split of every other requested dataset (a TFDS
                name, an image folder folder:PATH or an array file npz:PATH),
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

The measuring is icl_jax/evaluator.py (shared with training), the writing
icl_jax/results.py; this module assembles them for one workdir and is the CLI.
"""

from __future__ import annotations

import functools
import os
import shutil
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from icl_jax import cli
from icl_jax import diagnose
from icl_jax import files
from icl_jax import learning_curves
from icl_jax import metrics as metrics_lib
from icl_jax import plugins
from icl_jax import progress
from icl_jax import recovery as recovery_lib
from icl_jax import results as results_lib
from icl_jax import runtime
from icl_jax import sharding
from icl_jax import status as status_lib
from icl_jax import steps
from icl_jax import workload as workload_lib
from icl_jax.baselines import registry
from icl_jax.errors import UserError
from icl_jax.evaluator import EvalSet
from icl_jax.evaluator import Evaluator
from icl_jax.evaluator import make_eval_sets
from icl_jax.evaluator import metric_name
from icl_jax.evaluator import summarize_positions


def evaluate_workdir(workdir: str, step: int | None = None, datasets: Sequence[str] = (),
                     num_episodes: int | None = None, out: str | None = None,
                     baseline_names: Sequence[str] | None = None,
                     data_dir: str | None = None, verbose: bool = False,
                     examples: str = 'run') -> dict[str, Any]:
  """Runs the whole meta-test of a checkpoint and writes results.json/.csv/.png.
  verbose: say what it restores and tunes, with progress over the columns (the CLI).
  examples: 'run' samples episodes as the run's config says (task.distinct_examples);
  'distinct' or 'replacement' overrides it for the model and the learners alike; where
  that differs from the run's own way the default out is <workdir>/eval/<step>-<examples>."""
  if examples not in EXAMPLES:
    raise UserError(f'--examples={examples!r} is unknown; choose one of {", ".join(EXAMPLES)}.')
  if out is not None:
    status_lib.check_output_dir(files.local(out, 'Output directory'), '--out')
    _check_not_anothers(out, workdir, step)
  if num_episodes is not None and not 1 <= num_episodes < 2**31:
    raise UserError(f'--num_tasks_eval must be an integer in [1, 2**31), got {num_episodes}.')
  config, suffix = _stored_config(workdir, step, data_dir, examples)
  num_episodes = num_episodes or config.eval.num_episodes
  wl = workload_lib.build(config)
  learners = _learners(config, wl, baseline_names)
  mesh = sharding.make_mesh(config.mesh)
  step, params = _restore_params(workdir, step, wl, mesh)
  sets = make_eval_sets(wl, mesh, datasets,  # First: a bad dataset is the only line.
                        include_random=not wl.regression and wl.reads_dataset,
                        data_dir=data_dir)
  if verbose:
    progress.say(f'evaluating {workdir} at step {step}: {num_episodes} episodes per column')
  run = sharding.put(steps.run_values(config), sharding.replicated(mesh))
  fns, chosen = _bind(learners, wl, mesh, sets[0], run, num_episodes, verbose)
  model_name = config.model.name
  evaluator = Evaluator(wl, mesh, sets, num_episodes, fns,
                        host_baselines={n for n, b in learners.items() if b.host})
  scores = evaluator.per_position(params, run, model_name=model_name, show_progress=verbose)
  report = _report(workdir, step, wl, scores, evaluator.num_episodes, chosen)
  return write_outputs(report, wl, sets,
                       out or os.path.join(workdir, 'eval', f'{step}{suffix}'))


def _stored_config(workdir: str, step: int | None, data_dir: str | None,
                   examples: str) -> tuple[ml_collections.ConfigDict, str]:
  """(the run's stored config set to evaluate on every device, the default out's suffix)."""
  recovery, _, config = recovery_lib.open_run(workdir, step)
  recovery.store.close()
  config.mesh.data = config.mesh.run = -1  # Whatever devices exist now.
  if data_dir:
    config.data.data_dir = data_dir
  suffix = ''
  if examples != 'run':
    distinct = examples == 'distinct'
    suffix = '' if distinct == config.task.distinct_examples else f'-{examples}'
    config.task.distinct_examples = distinct
  return config, suffix


def _restore_params(workdir: str, step: int | None, wl: workload_lib.Workload,
                    mesh: jax.sharding.Mesh) -> tuple[int, Any]:
  """No --step: the newest checkpoint that restores (damaged ones are skipped, not moved)."""
  recovery, _, _ = recovery_lib.open_run(workdir, step)
  try:
    return recovery.params(wl.abstract_on(mesh)['params'], step)
  finally:
    recovery.store.close()


def _learners(config: ml_collections.ConfigDict, wl: workload_lib.Workload,
              names: Sequence[str] | None) -> dict[str, registry.Baseline]:
  """The learners asked for (by default, the family's), from the registry."""
  available = registry.available(wl.regression)
  unknown = [b for b in (names or ()) if b not in available]
  if unknown:
    raise UserError(f'Unknown baselines {unknown} for the {config.task.family!r} family; '
                    f'choose from {", ".join(available)} or none.')
  if names is None:
    names = registry.defaults(wl.regression, config.task.family)
  return {name: available[name] for name in names}


def _bind(learners: dict[str, registry.Baseline], wl: workload_lib.Workload,
          mesh: jax.sharding.Mesh, seen: EvalSet, run: steps.Run, num_episodes: int,
          verbose: bool) -> tuple[dict[str, Callable[..., Any]], dict[str, float]]:
  """Each learner's function with its prior's hyperparameters bound and, for a tuned one
  (the paper's SGD row; GD for regression), the value its tuner picks on training-pool
  tasks, on episodes disjoint from the evaluation ones; and {name_arg: value} so picked."""
  fns, chosen = {}, {}
  for name, b in learners.items():
    fns[name] = functools.partial(b.predict, **(b.prior(wl.config.task) if b.prior else {}))
    if b.tune is None:
      continue
    if verbose:
      progress.say(f'tuning the {b.tuned} of the {name} baseline...')
    tune_set = EvalSet(f'{name}_tuning', seen.x_NxD, seen.y_N, unseen=False)
    tuner = Evaluator(wl, mesh, [tune_set], num_episodes)
    ep = jax.tree.map(lambda *a: jnp.concatenate(a), *tuner.episodes(tune_set, run))
    value, _ = b.tune(ep.x_BxTxD, ep.y_BxT,
                      *(() if wl.regression else (wl.spec.num_classes,)))
    chosen[f'{name}_{b.tuned}'] = float(value)
    fns[name] = functools.partial(fns[name], **{b.tuned: float(value)})
  return fns, chosen


def _report(workdir: str, step: int, wl: workload_lib.Workload,
            scores: dict[str, dict[str, Any]], num_episodes: int,
            chosen: dict[str, float]) -> dict[str, Any]:
  """results.json's content: curves, summary, phase, paired differences and fits."""
  config, spec = wl.config, wl.spec
  model_name = config.model.name
  results = {s: {m: results_lib.curves(c) for m, c in methods.items()}
             for s, methods in scores.items()}
  summary = summarize_positions({s: c[model_name].mean(0) for s, c in scores.items()},
                                config.eval.first_positions, config.eval.last_positions,
                                metric=metric_name(spec))
  records = metrics_lib.read(workdir)
  # Paired with every learner on the same episodes, over the positions the summary's "last"
  # covers; and every curve fitted by a power law and an exponential.
  paired = learning_curves.paired_all(scores, model_name, config.eval.last_positions)
  fits = learning_curves.fit_all(results, spec.regression)
  report = {
      'workdir': os.path.abspath(workdir), 'step': step,
      'num_episodes': num_episodes, 'seq_len': config.task.seq_len,
      # None where episodes draw no dataset rows (a synthetic family): nothing to repeat.
      'distinct_examples': config.task.distinct_examples if wl.reads_dataset else None,
      'metric': 'normalized_squared_error' if spec.regression else 'accuracy',
      'phase': None if spec.regression else diagnose.phase(summary, spec.num_classes),
      'plateau_steps': None if spec.regression else diagnose.plateau_length(records,
                                                                            spec.num_classes),
      'summary': summary, 'chosen_hparams': chosen,
      'config': config.to_dict(), 'results': results, 'paired': paired, 'fits': fits,
  }
  return report


# What the meta-test writes into its output directory.
OUTPUT_FILES = ('results.json', 'results.csv', 'accuracy.png', 'error.png', metrics_lib.TB_DIR)
# --examples: as the run's config says, or one way for both run and baselines.
EXAMPLES = ('run', 'distinct', 'replacement')


def _check_not_anothers(out: str, workdir: str, step: int | None = None) -> None:
  """UserError if `out` already holds the results of another run (or another step)."""
  previous = files.read_json(os.path.join(out, 'results.json'))
  if not isinstance(previous, dict) or not {'workdir', 'step'} <= set(previous):
    return  # Nothing there, or nothing we wrote: results.json is replaced atomically.
  theirs = (previous['workdir'], previous['step'])
  if theirs[0] != os.path.abspath(workdir) or (step is not None and theirs[1] != step):
    raise UserError(f'--out {out} holds the results of {theirs[0]} at step {theirs[1]}; '
                    'evaluating here would replace them. Choose another --out (the default '
                    'is <workdir>/eval/<step>), or delete that directory first.')


def write_outputs(report: dict[str, Any], wl: workload_lib.Workload,
                  sets: Sequence[EvalSet], out: str) -> dict[str, Any]:
  """results.json, results.csv and the figure into `out`; adds 'figure', 'table', 'out'."""
  _check_not_anothers(out, report['workdir'], report['step'])
  # Written by a version from before the marker: it holds our results.json.
  legacy = isinstance(files.read_json(os.path.join(out, 'results.json')), dict)
  files.claim_output_dir(out, OUTPUT_FILES, '--out', written_before=legacy)
  results = report['results']
  titles = {s.name: results_lib.display_name(s.name, wl.train_name) for s in sets}
  title = (f'{report["workdir"]} at step {report["step"]}: mean over {report["num_episodes"]} '
           f'episodes (each a new task) per curve; bands: 95% intervals')
  files.write_json(os.path.join(out, 'results.json'), report)
  results_lib.write_csv(os.path.join(out, 'results.csv'), results, report['metric'])
  if wl.regression:
    report['figure'] = 'error.png'
    results_lib.plot(os.path.join(out, report['figure']), results, titles, 1.0,
                     regression=True, title=title, fits=report['fits'])
    dim = wl.config.task.dim
    report['table'] = results_lib.table(results, titles, regression=True,
                                        positions=(dim // 2, dim))
  else:
    report['figure'] = 'accuracy.png'
    results_lib.plot(os.path.join(out, report['figure']), results, titles,
                     1.0 / wl.num_classes, title=title, fits=report['fits'])
    report['table'] = results_lib.table(results, titles)
  report['table'] += '\n\n' + learning_curves.tables(
      report['paired'], report['fits'], titles, wl.config.model.name, wl.regression)
  report['out'] = out
  write_tensorboard(os.path.join(out, metrics_lib.TB_DIR), report)
  return report


def write_tensorboard(logdir: str, report: dict[str, Any]) -> None:
  """Each method's curve against the number of examples in context, as a TensorBoard
  run of its own (the x axis is examples, not training steps): tags
  `<set>/<method>` for the mean and `<set>/<method>/ci95` for its 95% half-width, and the
  table as text."""
  if os.path.isdir(logdir):
    shutil.rmtree(logdir)  # A rerun replaces the curves instead of appending a copy.
  writer = metrics_lib.tensorboard_writer(logdir)
  try:
    for set_name, methods in report['results'].items():
      for method, curve in methods.items():
        for t, (mean, half) in enumerate(zip(curve['mean'], curve['ci95'])):
          writer.add_scalar(f'{set_name}/{method}', mean, t)
          writer.add_scalar(f'{set_name}/{method}/ci95', half, t)
    writer.add_text('table', f'step {report["step"]}, {report["num_episodes"]} episodes\n\n'
                    f'```\n{report["table"]}\n```', report['step'])
  finally:
    writer.close()


def main(argv: Sequence[str]) -> None:
  del argv
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  flags = absl_flags.FLAGS
  runtime.start(quiet=not flags['verbosity'].present)
  baseline_names = None
  if flags.baselines is not None:
    baseline_names = [] if flags.baselines == ['none'] else flags.baselines
  with cli.user_errors_exit():
    runtime.check_backend()
    plugins.load()
    report = evaluate_workdir(flags.workdir, flags.step, flags.datasets or (),
                              flags.num_tasks_eval, flags.out, baseline_names, flags.data_dir,
                              verbose=True, examples=flags.examples)
  head = (f'{report["workdir"]} at step {report["step"]}: {report["num_episodes"]} episodes '
          'per column')
  if report['distinct_examples'] is not None:
    head += (', examples distinct' if report['distinct_examples'] else
             ', examples drawn with replacement')
  if report['phase'] is not None:
    head += f', phase {report["phase"]}, plateau {report["plateau_steps"]} steps'
  print(head)
  if report['chosen_hparams']:
    print('chosen: ' + ', '.join(f'{k}={v:g}' for k, v in report['chosen_hparams'].items()))
  print(report['table'])
  print(f'wrote {report["out"]}/results.json, results.csv, {report["figure"]}')


def define_flags(flag_values=None) -> None:
  """Flags of the CLI; defined only when run as a program, so importing stays side-effect
  free. `flag_values`: where to define them (default absl's global FLAGS; tests pass their
  own)."""
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  # `is None`: an empty FlagValues is falsy.
  fv = dict(flag_values=absl_flags.FLAGS if flag_values is None else flag_values)
  absl_flags.DEFINE_string('workdir', None, 'Workdir of a training run.', required=True, **fv)
  absl_flags.DEFINE_integer('step', None, 'Checkpoint step; default: the latest.',
                            lower_bound=0, upper_bound=cli.INT32_MAX, **fv)
  absl_flags.DEFINE_list('datasets', [], 'Other datasets to meta-test on: TFDS names, '
                         'folder:PATH (PATH/<split>/<label>/<image>) or npz:PATH (arrays '
                         'x_<split>, y_<split>).', **fv)
  absl_flags.DEFINE_integer('num_tasks_eval', None,
                            'Episodes (each its own task) per column; default '
                            'config.eval.num_episodes.',
                            lower_bound=1, upper_bound=cli.INT32_MAX, **fv)
  absl_flags.DEFINE_string('out', None, 'Output dir; default <workdir>/eval/<step>.', **fv)
  absl_flags.DEFINE_list('baselines', None, 'Baselines to run (default all), or none.', **fv)
  absl_flags.DEFINE_string('data_dir', None, 'TFDS data dir; default: the stored config\'s.',
                           **fv)
  absl_flags.DEFINE_enum('examples', 'run', EXAMPLES,
                         'How episodes draw their examples from a split: as the run did '
                         '(config.task.distinct_examples), distinct rows, or with '
                         'replacement (runs before distinct_examples existed). An override '
                         'writes to <workdir>/eval/<step>-<examples> by default.', **fv)


def run() -> None:
  """The `icl-eval` command."""
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main, flags_parser=cli.parser(__doc__))


if __name__ == '__main__':
  run()
