"""Training end to end: learning, sharding invariance, exact resume, divergence, refusal."""

import functools
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from icl_jax import config as config_lib
from icl_jax import data
from icl_jax import evaluator
from icl_jax import fields
from icl_jax import metrics as metrics_lib
from icl_jax import sharding
from icl_jax import steps
from icl_jax import store as store_lib
from icl_jax import plan
from icl_jax import tasks
from icl_jax import train
from icl_jax import workload
from icl_jax.errors import UserError
from helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def final_params(workdir, config):
  ckpt = store_lib.Store(workdir, read_only=True)
  step = ckpt.latest_step()
  abstract = workload.build(config).abstract_state
  return step, jax.device_get(ckpt.restore_state(step, abstract)['params'])

def test_loss_falls(trained_run):
  workdir, _, summary = trained_run
  losses = [r['train/loss'] for r in metrics_lib.read(workdir) if 'train/loss' in r]
  assert len(losses) == 8
  assert losses[-1] < losses[0] - 0.3, losses
  assert summary['seen/acc_first'] > 0.2  # 4 memorised tasks: well above chance (0.1).

def test_resume_is_exact(trained_run, tmp_path):
  straight_dir, config, _ = trained_run
  resumed_dir = str(tmp_path)
  train.train_and_evaluate(tiny_config(config.data.data_dir, train__steps=20), resumed_dir)
  assert store_lib.Store(resumed_dir, read_only=True).latest_step() == 20
  train.train_and_evaluate(config, resumed_dir)  # Same workdir, 20 more steps.
  step_a, params_a = final_params(straight_dir, config)
  step_b, params_b = final_params(resumed_dir, config)
  assert step_a == step_b == 40
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  # The log reads as one run: every logged step once, in order.
  steps_logged = [r['step'] for r in metrics_lib.read(resumed_dir) if 'train/loss' in r]
  assert steps_logged == list(range(5, 41, 5))

def test_workdir_with_another_model_is_refused(trained_run):
  workdir, config, _ = trained_run
  before = sorted(os.listdir(store_lib.directory(workdir)))
  with pytest.raises(UserError, match='model.width'):
    train.train_and_evaluate(tiny_config(config.data.data_dir, model__width=32), workdir)
  assert sorted(os.listdir(store_lib.directory(workdir))) == before

def test_one_step_on_8_devices_equals_1_device(data_dir):
  if jax.devices()[0].platform == 'cpu':
    assert jax.device_count() == 8  # conftest's simulated devices.
  elif jax.device_count() == 1:  # ICL_JAX_TEST_PLATFORM=gpu on a one-GPU host.
    pytest.skip('one accelerator: no second device to shard over')
  config = tiny_config(data_dir)
  wl = workload.build(config)
  results = []
  for n in (1, jax.device_count()):
    config.mesh.data = n
    mesh = sharding.make_mesh(config.mesh)
    rep = sharding.replicated(mesh)
    state_sharding = wl.state_shardings(mesh)
    run = sharding.put(steps.run_values(config), rep)
    state = jax.jit(wl.init, out_shardings=state_sharding)(run)
    step = jax.jit(functools.partial(steps.train_step, spec=wl.spec,
                                     batch_sharding=sharding.batch_sharded(mesh)),
                   out_shardings=(state_sharding, rep))
    args = (run,) + wl.training_inputs(mesh)
    state, m1 = step(state, *args)
    _, m2 = step(state, *args)
    results.append(jax.device_get((m1, m2)))
  (m1a, m2a), (m1b, m2b) = results
  # Parameters are not compared after Adam: m/sqrt(v) turns float noise in a near-zero
  # gradient into a full-size update. Loss and gradient norm carry the sharding errors
  # (a missing cross-device mean, a wrongly split batch).
  np.testing.assert_allclose(m1a['loss'], m1b['loss'], rtol=1e-6)
  np.testing.assert_allclose(m1a['grad_norm'], m1b['grad_norm'], rtol=1e-5)
  np.testing.assert_allclose(m2a['loss'], m2b['loss'], rtol=1e-5)

def test_divergence_stops_and_keeps_last_good_checkpoint(data_dir, tmp_path):
  # lr ramps from 0: step 1 changes nothing (checkpoint 1 is good), step 2 explodes.
  config = tiny_config(data_dir, train__lr=1e30, train__warmup_steps=2, train__grad_clip=0.0,
                       train__checkpoint_every_steps=1, train__steps=5)
  with pytest.raises(UserError, match=r'diverged at step 2.*last good checkpoint \(step 1\)'):
    train.train_and_evaluate(config, str(tmp_path))
  step, params = final_params(str(tmp_path), config)
  assert step == 1
  assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))

@pytest.mark.parametrize('path,value,match', [
    ('task.num_tasks', 0, 'num_tasks'),
    ('task.num_tasks', 2.5, 'num_tasks'),
    ('task.prompt', 'chat', 'prompt'),
    ('train.lr', -1.0, 'lr'),
    ('train.batch_size', 12, 'divisible by the 8 devices'),
    ('data.image_shape', (8, 0), 'image_shape'),
    ('model.num_heads', 0, 'num_heads'),
    ('eval.last_positions', 99, 'last_positions'),
    ('task.projection', 'rbg', r"task.projection='rbg' is unknown; choose one of \('threefry', "
                               r"'threefry_fast'\)"),
])
def test_bad_config_values_are_named(path, value, match):
  c = config_lib.base_config()
  section, field = path.split('.')
  with c.ignore_type():
    c[section][field] = value
  with pytest.raises(UserError, match=match):
    config_lib.validate(c, num_devices=8)

def test_fast_projection_trains_and_a_run_cannot_switch_projection(trained_run, tmp_path):
  workdir, config, _ = trained_run
  fast = tiny_config(config.data.data_dir, task__projection='threefry_fast')
  with pytest.raises(UserError, match='task.projection'):  # Another stream: another run.
    train.train_and_evaluate(fast, workdir)
  train.train_and_evaluate(fast, str(tmp_path))
  losses = [r['train/loss'] for r in metrics_lib.read(str(tmp_path)) if 'train/loss' in r]
  assert losses[-1] < losses[0] - 0.3, losses


def test_a_run_resumed_with_the_other_way_of_drawing_examples_is_told_how(trained_run):
  workdir, config, _ = trained_run
  other = tiny_config(config.data.data_dir, task__distinct_examples=False)
  with pytest.raises(UserError, match=r'differs in task\.distinct_examples\..*to resume it as '
                                      r'it ran: --config\.task\.distinct_examples=True'):
    train.train_and_evaluate(other, workdir)


def test_default_projection_keeps_sweep_workdir_names():
  """Sweep points keep the workdir names they had before task.projection existed, so a
  relaunched sweep finds them. A field added to the config belongs in fields.ADDED_FIELDS
  (with the default that reproduces older runs), or this name changes."""
  c = config_lib.base_config()
  # Examples drawn with replacement, as every run was before task.distinct_examples.
  c.task.distinct_examples = False
  assert plan.workdir_name('base', c) == 'base-5aeac3aa'  # Computed at commit 15de6f7.
  assert fields.ADDED_FIELDS['task.projection'] == c.task.projection == tasks.DEFAULT_PROJECTION
  c.task.projection = 'threefry_fast'
  assert plan.workdir_name('base', c) != 'base-5aeac3aa'
  assert fields.static_differences(config_lib.base_config(), c) == [
      'task.distinct_examples', 'task.projection']


def test_a_config_stored_before_distinct_examples_restores_drawing_with_replacement():
  """New runs draw distinct examples; a stored config without the field is a run from
  before it, which drew with replacement, and must restore (and evaluate) that way."""
  stored = config_lib.base_config().to_dict()
  del stored['task']['distinct_examples']
  assert config_lib.base_config().task.distinct_examples is True
  assert config_lib.from_dict(stored).task.distinct_examples is False
  stored['task']['distinct_examples'] = True
  assert config_lib.from_dict(stored).task.distinct_examples is True


def test_each_split_is_placed_once_per_mesh_as_uint8(data_dir):
  wl = workload.build(tiny_config(data_dir))
  mesh = sharding.make_mesh(wl.config.mesh)
  x, y = wl.training_inputs(mesh)
  sets = evaluator.make_eval_sets(wl, mesh)
  assert sets[0].x_NxD is x and sets[0].y_N is y  # Seen-task evaluation reads training's.
  assert wl.device_inputs(wl.eval_ds, mesh)[0] is sets[1].x_NxD
  assert isinstance(x, data.Pixels) and x.values_NxD.dtype == np.uint8
  per_device = sum(leaf.addressable_shards[0].data.nbytes for leaf in jax.tree.leaves(x))
  assert per_device == 1437 * 64 + 256 * 4  # float32 x_NxD: 1437 * 64 * 4.


def test_uint8_inputs_train_bit_for_bit_as_float32_inputs(data_dir):
  """Steps on the compact device split end with the very parameters of steps on the float32
  x_NxD that training placed before the compact form existed."""
  config = tiny_config(data_dir)
  wl = workload.build(config)
  mesh = sharding.make_mesh(config.mesh)
  run = sharding.put(steps.run_values(config), sharding.replicated(mesh))
  step = jax.jit(functools.partial(steps.train_step, spec=wl.spec,
                                   batch_sharding=sharding.batch_sharded(mesh)))
  pixels, y_N = wl.training_inputs(mesh)
  params = []
  for x in (pixels, sharding.put_replicated(wl.train_ds.x_NxD, mesh)):
    state = jax.jit(wl.init, out_shardings=wl.state_shardings(mesh))(run)
    for _ in range(3):
      state, _ = step(state, run, x, y_N)
    params.append(jax.device_get(state['params']))
  jax.tree.map(np.testing.assert_array_equal, *params)


def test_sequence_longer_than_dataset_is_refused(data_dir, tmp_path):
  with pytest.raises(UserError, match='longer than the 360 examples'):
    train.train_and_evaluate(tiny_config(data_dir, task__seq_len=400, eval__last_positions=5),
                             str(tmp_path))

def run_cli(*args):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  return subprocess.run([sys.executable, '-m', 'icl_jax.main', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)

@pytest.mark.slow
def test_cli_smoke_end_to_end(data_dir, tmp_path):
  out = run_cli('--config', 'experiments/gpicl_digits.py:smoke', '--workdir', str(tmp_path),
                f'--config.data.data_dir={data_dir}')
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'unseen tasks: acc first 5' in out.stdout + out.stderr
  assert store_lib.Store(str(tmp_path), read_only=True).latest_step() == 30

def test_cli_bad_value_gives_one_clear_line(data_dir, tmp_path):
  out = run_cli('--config', 'experiments/gpicl_digits.py:smoke', '--workdir', str(tmp_path),
                f'--config.data.data_dir={data_dir}', '--config.train.lr=-0.5')
  assert out.returncode == 2
  assert 'config.train.lr must be a finite number > 0' in out.stderr
  assert 'Traceback' not in out.stderr
  assert not os.path.exists(store_lib.directory(str(tmp_path)))
