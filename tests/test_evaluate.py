"""Meta-testing from checkpoints: topology-free restore, phase labels, the CLI's outputs."""

import csv
import importlib
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_jax import diagnose
from icl_jax import evaluate
from icl_jax import evaluator
from icl_jax import rng
from icl_jax import sharding
from icl_jax import steps
from icl_jax import tasks
from icl_jax import workload
from helpers import prepare_image_dataset
from helpers import restored_logits
from helpers import tiny_config
from icl_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def summary(seen_first, seen_last, unseen_first, unseen_last):
  return {'seen/acc_first': seen_first, 'seen/acc_last': seen_last,
          'unseen/acc_first': unseen_first, 'unseen/acc_last': unseen_last}


@pytest.mark.parametrize('accs,expected', [
    ((0.12, 0.75, 0.11, 0.72), 'general_learning'),  # make run's regime.
    ((0.15, 0.80, 0.10, 0.12), 'task_identification'),
    ((0.99, 0.99, 0.10, 0.10), 'memorisation'),  # 16 tasks.
    ((0.10, 0.10, 0.10, 0.10), 'no_learning'),  # On the plateau.
    ((0.10, 0.11, 0.02, 0.10), 'no_learning'),  # A gain up to chance is not learning.
])
def test_phase_labels(accs, expected):
  assert diagnose.phase(summary(*accs), num_classes=10) == expected


def test_plateau_length():
  ln10 = math.log(10)
  records = [{'step': 50 * i, 'train/loss': ln10 + 0.01} for i in range(1, 10)]
  assert diagnose.plateau_length(records, 10) is None
  records += [{'step': 500, 'train/loss': ln10 - 0.05}, {'step': 550, 'train/loss': ln10 - 0.3},
              {'step': 600, 'train/loss': 1.0}, {'step': 600, 'unseen/acc_last': 0.5}]
  assert diagnose.plateau_length(records, 10) == 550


def test_restore_on_another_device_count_gives_same_predictions(trained_run):
  workdir, _, _ = trained_run  # Trained on 8 devices.
  logits = [restored_logits(workdir, n) for n in (8, 1)]
  np.testing.assert_allclose(logits[0], logits[1], rtol=1e-5, atol=1e-5)


def test_step_that_does_not_exist_lists_available(trained_run):
  workdir, _, _ = trained_run
  with pytest.raises(evaluate.UserError, match=r'no checkpoint at step 7; available steps: 20, 40'):
    evaluate.evaluate_workdir(workdir, step=7)


@pytest.mark.slow
def test_cli_end_to_end_writes_json_csv_png(trained_run, tmp_path):
  workdir, config, _ = trained_run
  out_dir = str(tmp_path / 'eval')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  out = subprocess.run(
      [sys.executable, '-m', 'icl_jax.evaluate', '--workdir', workdir, '--num_tasks_eval', '64',
       '--out', out_dir], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  # The Table-1 style table: methods as rows, one column per set.
  lines = out.stdout.splitlines()
  header = next(line for line in lines if line.startswith('after 9 examples'))
  for column in ('digits (seen tasks)', 'digits', 'random'):
    assert column in header
  for method in ('transformer', 'knn', 'knn3', 'logreg', 'sgd', 'centroid', 'majority'):
    assert any(line.split()[0] == method for line in lines if line.strip()), method
  with open(os.path.join(out_dir, 'results.json')) as f:
    report = json.load(f)
  assert report['step'] == 40 and report['num_episodes'] == 64
  assert report['phase'] in diagnose.PHASES
  assert set(report['results']) == {'seen', 'unseen', 'random'}
  curve = report['results']['seen']['transformer']
  assert len(curve['mean']) == config.task.seq_len and len(curve['ci95']) == config.task.seq_len
  assert 0 < report['chosen_hparams']['sgd_lr']
  with open(os.path.join(out_dir, 'results.csv')) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 3 * 7 * config.task.seq_len  # Sets x (model + 6 baselines) x T.
  with open(os.path.join(out_dir, 'accuracy.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def bright_block_image(r, i):
  """Class i % 5 is a bright block in its own place: learnable from a few examples."""
  image = r.integers(0, 60, (16, 16, 3), np.uint8)
  c = i % 5
  image[3 * c:3 * c + 4, 3 * c:3 * c + 4] = 250
  return image


def test_other_dataset_is_resized_and_evaluated(trained_run, tmp_path):
  workdir, config, _ = trained_run
  prepare_image_dataset(config.data.data_dir, 'icl_jax_test_small_rgb', (16, 16, 3), 5,
                        bright_block_image, num_examples=60)
  report = evaluate.evaluate_workdir(workdir, datasets=['icl_jax_test_small_rgb'],
                                     num_episodes=32, out=str(tmp_path), baseline_names=['knn'])
  column = report['results']['unseen:icl_jax_test_small_rgb']
  assert set(column) == {'transformer', 'knn'}
  assert len(column['knn']['mean']) == config.task.seq_len
  # 1-NN on 5 well-separated classes: near perfect once a few examples are in context.
  assert np.mean(column['knn']['mean'][-3:]) > 0.8
  assert 'icl_jax_test_small_rgb' in report['table']
  # The model against each learner, paired on the same episodes, and every curve fitted.
  paired = report['paired']['unseen:icl_jax_test_small_rgb']['knn']
  assert paired['episodes'] == 32 and paired['positions'] == config.eval.last_positions
  assert paired['diff'] < 0 and paired['ci95'] > 0  # 1-NN is far ahead of a 40-step model.
  assert set(report['fits']) == set(report['results'])
  assert report['fits']['unseen:icl_jax_test_small_rgb']['knn']['better'] in ('power',
                                                                              'exponential')
  assert 'transformer minus each learner on the same episodes' in report['table']
  assert 'vs knn' in report['table'] and 'model behind' in report['table']


def test_random_pool_recurs_while_dataset_episodes_are_distinct(data_dir):
  """T = 30 examples from the random column's pool of 20: drawn with replacement whatever
  distinct_examples says (they must recur to be memorised); the digits columns not."""
  config = tiny_config(data_dir, task__seq_len=30)
  assert config.task.distinct_examples
  wl = workload.build(config)
  mesh = sharding.make_mesh(config.mesh)
  sets = evaluator.make_eval_sets(wl, mesh, include_random=True)
  run = sharding.put(steps.run_values(config), sharding.replicated(mesh))
  ev = evaluator.Evaluator(wl, mesh, sets, 16)
  distinct_rows = lambda ep: [len({r.tobytes() for r in np.asarray(x)}) for x in ep.x_BxTxD]
  by_name = {s.name: ev.episodes(s, run)[0] for s in sets}
  assert max(distinct_rows(by_name['random'])) <= evaluator.RANDOM_POOL_SIZE < 30
  assert min(distinct_rows(by_name['unseen'])) == min(distinct_rows(by_name['seen'])) == 30


def script(name):
  """A module of scripts/, which imports its neighbours as a script run from there would."""
  sys.path.insert(0, os.path.join(REPO, 'scripts'))
  try:
    return importlib.import_module(name)
  finally:
    sys.path.pop(0)


def test_episode_repeats_script_counts_repeats_only_when_drawn_with_replacement(trained_run):
  episode_repeats = script('episode_repeats')
  workdir, config, _ = trained_run
  distinct, free = episode_repeats.measure(workdir, 128, position=config.task.seq_len - 1)
  assert distinct['examples'] == 'distinct' and distinct['repeats'] == 0.0
  assert distinct['knn_accuracy'] == distinct['knn_accuracy_on_others']
  # 9 draws from 360 test images: P(repeat) = 1 - (359/360)^9 = 2.5%: about 3 of 128.
  assert free['examples'] == 'replacement' and 0.0 <= free['repeats'] < 0.08
  if free['repeats']:
    assert free['knn_accuracy_on_repeats'] == 1.0  # An exact repeat is its own neighbour.
  with pytest.raises(UserError, match='--position must lie in'):
    episode_repeats.measure(workdir, 16, position=config.task.seq_len)


def test_classical_ceiling_scores_the_very_episodes_of_evaluate(trained_run, tmp_path):
  """Its 1-NN, fitted by scikit-learn, matches the evaluator's 1-NN over the same last
  positions: the script really reads evaluate's episodes, so its margins above 1-NN are
  margins on the README's tables."""
  classical_ceiling = script('classical_ceiling')
  workdir, config, _ = trained_run
  report = evaluate.evaluate_workdir(workdir, num_episodes=32, baseline_names=['knn'],
                                     out=str(tmp_path / 'eval'))
  got = classical_ceiling.measure(workdir, 32)
  k = got['last_positions']
  assert k == config.task.seq_len - 1 and got['episodes'] == 32  # Position 0 has no context.
  knn_T = report['results']['unseen']['knn']['mean']
  assert got['accuracy']['knn'] == pytest.approx(np.mean(knn_T[-k:]), abs=1e-9)
  assert set(got['vs_knn']) == {'svm_rbf', 'svm_linear', 'lda_shrinkage'}
  for name, d in got['vs_knn'].items():
    assert d['episodes'] == 32 and d['positions'] == k
    assert d['diff'] == pytest.approx(got['accuracy'][name] - got['accuracy']['knn'])


def test_examples_override_evaluates_the_other_way_into_its_own_directory(trained_run):
  workdir, config, _ = trained_run
  assert config.task.distinct_examples  # The default of new runs.
  report = evaluate.evaluate_workdir(workdir, num_episodes=16, baseline_names=['knn'],
                                     examples='replacement')
  assert report['out'] == os.path.join(workdir, 'eval', '40-replacement')
  assert report['distinct_examples'] is False
  with open(os.path.join(report['out'], 'results.json')) as f:
    assert json.load(f)['config']['task']['distinct_examples'] is False
  with pytest.raises(UserError, match="--examples='sometimes' is unknown"):
    evaluate.evaluate_workdir(workdir, examples='sometimes')


@pytest.mark.parametrize('projection', ['threefry', 'threefry_fast'])
def test_unseen_tasks_are_drawn_with_the_training_projection(data_dir, projection):
  config = tiny_config(data_dir, task__projection=projection)
  wl = workload.build(config)
  assert wl.spec.projection == projection
  mesh = sharding.make_mesh(config.mesh)
  sets = evaluator.make_eval_sets(wl, mesh)
  run = sharding.put(steps.run_values(config), sharding.replicated(mesh))
  episode = evaluator.Evaluator(wl, mesh, sets, 16).episodes(sets[1], run)[0]
  key = jax.random.fold_in(rng.fold_in_name(run.eval_key, evaluator.UNSEEN), 0)
  ds = wl.eval_ds
  expected = {p: tasks.sample_episodes(
      key, run.task_key, jnp.asarray(ds.x_NxD), jnp.asarray(ds.y_N), batch_size=16,
      seq_len=config.task.seq_len, num_tasks=config.task.num_tasks,
      num_classes=ds.num_classes, unseen=True, projection=p,
      distinct=config.task.distinct_examples) for p in tasks.PROJECTIONS}
  np.testing.assert_array_equal(episode.y_BxT, expected[projection].y_BxT)
  for p, other in expected.items():
    assert np.allclose(episode.x_BxTxD, other.x_BxTxD, atol=1e-5) == (p == projection)
