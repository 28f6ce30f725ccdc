"""Every synthetic task family trains end to end, resumes exactly and is meta-tested."""

import csv
import os
import shutil

import jax
import numpy as np
import pytest

from icl_jax import store as store_lib
from icl_jax import config as config_lib
from icl_jax import evaluate
from icl_jax import metrics as metrics_lib
from icl_jax import steps
from icl_jax import tasks
from icl_jax import train
from icl_jax import workload
from icl_jax.baselines import registry
from icl_jax.errors import UserError

SYNTHETIC = list(tasks.SYNTHETIC_FAMILIES)
REGRESSION = [f for f, family in tasks.FAMILIES.items() if family.kind == 'regression']


def synthetic_config(family, **overrides):
  """Seconds per run: D = 4, 9 examples, the curriculum moving every 2 steps."""
  c = config_lib.base_config()
  c.task.family = family
  c.task.prompt = 'interleaved'
  c.task.num_tasks = -1
  c.task.dim, c.task.sparsity, c.task.hidden, c.task.num_classes = 4, 2, 8, 3
  c.task.seq_len = 9
  if family in REGRESSION:
    c.task.curriculum.update(enabled=True, dim_start=2, points_start=5, every_steps=2)
  c.model.width, c.model.depth, c.model.num_heads, c.model.qkv_size = 16, 1, 2, 8
  c.train.batch_size = 16
  c.train.lr = 3e-3
  c.train.steps = 6
  c.train.log_every_steps = 3
  c.train.eval_every_steps = 1000
  c.train.checkpoint_every_steps = 3
  c.eval.num_episodes = 16
  c.eval.first_positions, c.eval.last_positions = 1, 4
  # One device: sharding is tested elsewhere, and partitioning for 8 slows every compile.
  c.mesh.data = 1
  for path, value in overrides.items():
    section, field = path.split('__')
    c[section][field] = value
  return c


def final_params(workdir, config):
  ckpt = store_lib.Store(workdir, read_only=True)
  step = ckpt.latest_step()
  abstract = workload.build(config).abstract_state
  return step, jax.device_get(ckpt.restore_state(step, abstract)['params'])


@pytest.mark.parametrize('family', SYNTHETIC)
def test_family_trains_without_nan_and_resumes_exactly(family, tmp_path):
  config = synthetic_config(family)
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  summary = train.train_and_evaluate(config, straight)
  # A kill between the saves of steps 3 and 6: the copy resumes at step 3 (through the
  # curriculum's change of stage) and must end where the uninterrupted run did.
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(store_lib.directory(resumed), '6'))
  assert store_lib.Store(resumed, read_only=True).latest_step() == 3
  train.train_and_evaluate(config, resumed)
  step_a, params_a = final_params(straight, config)
  step_b, params_b = final_params(resumed, config)
  assert step_a == step_b == 6
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  records = [r for r in metrics_lib.read(straight) if 'train/loss' in r]
  assert all(np.isfinite(v) for r in records for v in r.values())
  metric = 'err' if family in REGRESSION else 'acc'
  assert set(summary) == {f'{s}/{metric}_{p}' for s in ('seen', 'unseen')
                          for p in ('first', 'last')}
  assert all(np.isfinite(v) for v in summary.values())
  if family in REGRESSION:
    # Logged means of the curriculum over steps 1-3 (dims 2, 2, 3) and 4-6 (3, 4, 4).
    assert [round(r['train/curriculum_dim'], 3) for r in records] == [2.333, 3.667]
    assert [round(r['train/curriculum_points'], 3) for r in records] == [5.667, 8.333]
  else:
    assert 'train/accuracy' in records[0]


def test_curriculum_follows_garg_schedule():
  c = config_lib.base_config().task
  c.dim, c.seq_len = 20, 41
  c.curriculum.update(enabled=True, dim_start=5, dim_inc=1, points_start=11, points_inc=2,
                      every_steps=2000)
  cur = tasks.Curriculum.from_config(c)
  at = lambda s: tuple(int(v) for v in cur.at(s))
  assert at(0) == at(1999) == (5, 11)
  assert at(2000) == (6, 13)
  assert at(2000 * 15) == (20, 41)
  assert at(10**6) == (20, 41)  # Stays at the end.
  c.curriculum.enabled = False
  assert tasks.Curriculum.from_config(c) is None


def test_curriculum_zeroes_inputs_and_counts_only_its_points():
  config = synthetic_config('linear')
  spec = workload.build(config).spec
  run = steps.run_values(config)
  ep = spec.sample(jax.random.key(0), run, None, None, 8, active_dim=2)
  np.testing.assert_array_equal(ep.x_BxTxD[..., 2:], 0)
  assert np.all(np.abs(np.asarray(ep.x_BxTxD[..., :2])) > 0)
  # Only the counted points enter the loss: the step at points=5 ignores y_5.. entirely.
  state = steps.init_state(run, spec)
  step = jax.jit(lambda s: steps.train_step(s, run, None, None, spec=spec))
  _, metrics = step(state)
  assert np.isfinite(float(metrics['loss']))
  assert float(metrics['curriculum_points']) == 5 and float(metrics['curriculum_dim']) == 2


@pytest.fixture(scope='module')
def linear_run(tmp_path_factory):
  """A linear-regression run, then its meta-test beside least squares and tuned GD."""
  workdir = str(tmp_path_factory.mktemp('linear'))
  config = synthetic_config('linear', train__steps=3, task__curriculum=config_lib.base_config(
      ).task.curriculum, eval__x_scales=(2.0,))
  train.train_and_evaluate(config, workdir)
  report = evaluate.evaluate_workdir(workdir, num_episodes=512,
                                     baseline_names=['least_squares', 'gd'])
  return workdir, config, report


def test_evaluation_writes_error_curves_with_estimators(linear_run):
  _, config, report = linear_run
  assert report['metric'] == 'normalized_squared_error' and report['phase'] is None
  for name in ('results.json', 'results.csv', 'error.png'):
    assert os.path.getsize(os.path.join(report['out'], name)) > 0
  results = report['results']
  assert list(results) == ['seen', 'unseen', 'unseen:x_scale=2']
  assert list(results['unseen']) == ['transformer', 'least_squares', 'gd']
  d = config.task.dim
  ls = np.asarray(results['unseen']['least_squares']['mean'])
  # Noiseless: least squares is exact from k = d examples on, and (d - k)/d before; at k = 0
  # that is 1 by construction of the normalisation (predicting the prior mean). With 512
  # episodes the standard error of each mean is below 0.09.
  np.testing.assert_allclose(ls[d:], 0, atol=1e-3)
  np.testing.assert_allclose(ls[:d], (d - np.arange(d)) / d, atol=0.3)
  # Inputs scaled by 2 make y twice as large: 4x the error of predicting 0.
  scaled = np.asarray(results['unseen:x_scale=2']['least_squares']['mean'])
  assert 2.8 < scaled[0] < 5.2
  np.testing.assert_allclose(scaled[d:], 0, atol=1e-2)
  assert 'gd_lr' in report['chosen_hparams']
  with open(os.path.join(report['out'], 'results.csv')) as f:
    rows = list(csv.DictReader(f))
  assert set(rows[0]) == {'set', 'method', 'examples_in_context', 'normalized_squared_error',
                          'ci95'}
  assert len(rows) == 3 * 3 * config.task.seq_len


@pytest.mark.parametrize('family,extra', [
    ('linear', []), ('gp', ['gp']), ('tree', ['tree', 'tree_depth4'])])
def test_default_estimators_are_garg_rows_plus_the_family_own(family, extra):
  assert registry.defaults(regression=True, family=family) == [
      'least_squares', 'ridge', 'lasso', 'gd', 'averaging', 'knn'] + extra


def test_evaluation_refuses_other_datasets_and_unknown_estimators(linear_run):
  workdir, _, _ = linear_run
  with pytest.raises(UserError, match='samples its own inputs'):
    evaluate.evaluate_workdir(workdir, datasets=['mnist'], num_episodes=16)
  with pytest.raises(UserError, match='Unknown baselines .*sgd.* least_squares'):
    evaluate.evaluate_workdir(workdir, baseline_names=['sgd'], num_episodes=16)


def test_curriculum_is_refused_where_it_does_nothing():
  c = synthetic_config('parity')
  c.task.curriculum.enabled = True
  with pytest.raises(UserError, match="the 'parity' family does not use it"):
    config_lib.validate(c)
  c = config_lib.base_config()
  c.task.curriculum.enabled = True
  with pytest.raises(UserError, match="the 'projected' family does not use it"):
    config_lib.validate(c)
  c = synthetic_config('linear')
  c.task.curriculum.points_start = 50
  with pytest.raises(UserError, match='beyond config.task.dim=4 / seq_len=9'):
    config_lib.validate(c)
