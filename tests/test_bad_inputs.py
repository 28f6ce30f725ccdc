"""Bad inputs: each stops with one UserError that names the problem and the fix, and
leaves an existing workdir exactly as it was.

Most cases go through the Python API (train_and_evaluate, evaluate_workdir, the experiment
file); a few go through the CLI, which must exit 2 with one `error:` line and no traceback.
NaN/inf losses and the plain model-width refusal are tested in test_train.py.
"""

import functools
import importlib.util
import json
import os
import re
import subprocess
import sys

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import numpy as np
import pytest

from icl_jax import store as store_lib
from icl_jax import config as config_lib
from icl_jax import sharding
from icl_jax import steps
from icl_jax import train
from icl_jax import workload
from icl_jax.errors import UserError
from helpers import prepare_image_dataset
from helpers import snapshot
from helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = 20  # The existing workdir's checkpoint.


@pytest.fixture(scope='module')
def existing_workdir(data_dir, tmp_path_factory):
  """A workdir holding a run of tiny_config: a checkpoint at STEP and a metrics log.

  The state is zeros of the real shapes (no compilation needed): it restores like a
  trained one.
  """
  config = tiny_config(data_dir)
  workdir = str(tmp_path_factory.mktemp('existing'))
  abstract = workload.build(config).abstract_state
  state = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract)
  state['step'] = np.asarray(STEP, abstract['step'].dtype)
  ckpt = store_lib.Store(workdir, keep=config.train.keep_checkpoints)
  ckpt.save(STEP, state, config.to_dict())
  ckpt.wait()
  ckpt.close()
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.write(json.dumps({'step': STEP, 'train/loss': 2.3}) + '\n')
  return workdir


@pytest.fixture
def unchanged(existing_workdir):
  """The existing workdir; fails the test if anything in it changed."""
  before = snapshot(existing_workdir)
  yield existing_workdir
  assert snapshot(existing_workdir) == before


def with_values(config, **overrides):
  """config with section__field=value set, whatever the value's type."""
  for path, value in overrides.items():
    section, field = path.split('__')
    with config.ignore_type():
      config[section][field] = value
  return config


# ---------------------------------------------------------------------------------------
# Config values: refused by validate before the workdir is touched.
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize('overrides,message', [
    (dict(task__num_tasks=-3),
     r'config\.task\.num_tasks must be an integer >= 1, or -1 for a fresh task per episode; '
     r'got -3'),
    (dict(task__num_tasks='abc'), r"config\.task\.num_tasks must be an integer .*got 'abc'"),
    (dict(task__num_tasks=True), r'config\.task\.num_tasks must be an integer .*got True'),
    (dict(train__batch_size=20),
     r'config\.train\.batch_size=20 is not divisible by the 8 devices of the data axis: split '
     r'it over 5 of them with --config\.mesh\.data=5 .*or, for a new run, use a multiple of 8'),
    (dict(train__lr=0.0), r'config\.train\.lr must be a finite number > 0 .*got 0\.0'),
    (dict(train__lr=1e39),  # Finite in Python, inf in float32.
     r'config\.train\.lr must be a finite number > 0 \(in float32: between 1\.18e-38 and '
     r'3\.4e\+38\), got 1e\+39'),
    (dict(train__eps=-1e-8), r'config\.train\.eps must be a finite number > 0 .*got -1e-08'),
    (dict(train__b1=1.0), r'config\.train\.b1 must be a number in \[0, 1\), got 1\.0'),
    (dict(train__warmup_steps=-1),
     r'config\.train\.warmup_steps must be an integer in \[0, 2\*\*31\), got -1'),
    (dict(mesh__data=16),
     r'config\.mesh\.data=16 asks for more devices than the 8 available; use -1 for all'),
    (dict(task__bias_fraction=1.5),
     r'config\.task\.bias_fraction must be a number in \[0, 1\], got 1\.5'),
    (dict(eval__last_positions=11),
     r'config\.eval\.last_positions must be an integer in \[1, config\.task\.seq_len=10\], '
     r'got 11'),
    (dict(data__image_shape=(0, 8)),
     r'config\.data\.image_shape must be two positive integers like \(8, 8\), got \(0, 8\)'),
    (dict(model__width=2**40),
     r'config\.model\.width must be an integer in \[1, 2\*\*31\), got 1099511627776'),
    (dict(task__family='lienar'), r"config\.task\.family='lienar' is unknown; choose one of "
     r"\('projected', 'linear', "),
    (dict(task__family='parity', task__dim=8, task__sparsity=30),
     r'config\.task\.sparsity=30 exceeds config\.task\.dim=8: a parity task picks that many'),
    (dict(task__family='linear', task__noise_std=-0.5),
     r'config\.task\.noise_std must be >= 0, got -0\.5'),
    (dict(task__family='linear', task__x_scale=0.0),
     r'config\.task\.x_scale must be a finite number > 0, got 0\.0'),
    (dict(task__family='gp', task__x_low=1.0, task__x_high=0.0),
     r'config\.task\.x_low=1\.0 must be below config\.task\.x_high=0\.0'),
    (dict(task__family='recall', eval__x_scales=(2.0,)),
     r"config\.eval\.x_scales / x_shifts shift the inputs of regression families; the "
     r"'recall' family has none"),
    (dict(task__family='linear', eval__x_scales=(-2.0,)),
     r'config\.eval\.x_scales must be numbers > 0'),
    (dict(task__family='linear', model__name='lstm', task__prompt='context_query'),
     r"config\.model\.name='lstm' is recurrent and cannot serve the 'context_query' prompt"),
    (dict(model__dtype='float16'),
     r"config\.model\.dtype='float16' is unknown; choose one of \('float32', 'bfloat16'\)"),
    (dict(model__name='lstm', task__prompt='gpicl', model__dtype='bfloat16'),
     r"config\.model\.name='lstm' computes in float32 only; set --config\.model\.dtype=float32"),
    (dict(model__attention='flash'),
     r"config\.model\.attention='flash' is unknown; choose one of \('auto', 'xla', 'cudnn'\)"),
    (dict(model__attention='cudnn'),
     r"config\.model\.attention='cudnn' needs --config\.model\.dtype=bfloat16"),
], ids=lambda x: '-'.join(f'{k}={v}' for k, v in x.items()) if isinstance(x, dict) else '')
def test_bad_value_is_refused_before_anything_runs(data_dir, unchanged, overrides, message):
  with pytest.raises(UserError, match=message):
    train.train_and_evaluate(with_values(tiny_config(data_dir), **overrides), unchanged)


# ---------------------------------------------------------------------------------------
# Data: refused before anything compiles; a fresh workdir gets no checkpoint.
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize('overrides,message', [
    (dict(data__dataset='no_such_dataset'),
     r"Unknown dataset 'no_such_dataset'\..*Check the spelling"),
    (dict(data__dataset='mnist', data__data_dir='EMPTY'),
     r"Dataset 'mnist' is not prepared in data dir .*icl_jax never downloads\. To fix, .*"
     r'tfds build mnist'),
    (dict(task__seq_len=1000),
     r'config\.task\.seq_len=1000 is longer than the 360 examples of digits:test; use a '
     r'shorter sequence'),
], ids=['unknown_dataset', 'dataset_not_prepared', 'seq_len_longer_than_split'])
def test_bad_data_is_refused(data_dir, tmp_path, overrides, message):
  if overrides.get('data__data_dir') == 'EMPTY':
    overrides['data__data_dir'] = str(tmp_path / 'empty_tfds')
  workdir = str(tmp_path / 'fresh')
  with pytest.raises(UserError, match=message):
    train.train_and_evaluate(with_values(tiny_config(data_dir), **overrides), workdir)
  assert store_lib.Store(workdir, read_only=True).steps() == []


# ---------------------------------------------------------------------------------------
# A workdir holding another run: refused, never overwritten.
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize('overrides,fields', [
    # Learned positions are sized by seq_len: a longer sequence cannot reuse the model.
    (dict(task__seq_len=20), 'task.seq_len'),
    (dict(model__num_heads=4, model__depth=2), 'model.depth, model.num_heads'),
])
def test_workdir_of_another_run_is_refused(data_dir, unchanged, overrides, fields):
  message = (rf"Workdir '{unchanged}' holds a run \(checkpoint step {STEP}\) whose config "
             rf'differs in {fields}\. Refusing to overwrite it: use a new --workdir, or the '
             rf'same config to resume\.')
  with pytest.raises(UserError, match=message):
    train.train_and_evaluate(with_values(tiny_config(data_dir), **overrides), unchanged)


# ---------------------------------------------------------------------------------------
# Evaluation of an existing workdir.
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def evaluate():
  from icl_jax import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  return evaluate_lib


def test_evaluate_missing_step_lists_the_available_ones(evaluate, unchanged):
  with pytest.raises(UserError, match=rf'has no checkpoint at step 7; available steps: {STEP}\.'):
    evaluate.evaluate_workdir(unchanged, step=7)


def test_evaluate_dataset_with_more_classes_than_the_head(evaluate, data_dir, unchanged):
  # Prepared offline into the run's data dir, where evaluation looks for it.
  prepare_image_dataset(data_dir, 'icl_jax_test_many_classes', (8, 8, 1), 20,
                        lambda r, i: r.integers(0, 256, (8, 8, 1), np.uint8))
  with pytest.raises(UserError, match=r"Dataset 'icl_jax_test_many_classes' has 20 classes but "
                                      r'the model predicts 10; evaluate on datasets with at '
                                      r'most 10 classes'):
    evaluate.evaluate_workdir(unchanged, datasets=['icl_jax_test_many_classes'],
                              baseline_names=[])


# ---------------------------------------------------------------------------------------
# Experiment-file arguments (the part after `:` in --config=file.py:args).
# ---------------------------------------------------------------------------------------
def load_experiment(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'experiments',
                                                                   f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize('arg,message', [
    ('bogus=1',
     r"Unknown experiment argument 'bogus' in 'bogus=1'\. Known arguments: batch_size, depth, "),
    ('num_tasks=abc',
     r"Experiment argument num_tasks='abc' is not a valid int \(default 65536\)"),
    ('smoke,width=', r"Experiment argument width='' is not a valid int"),
])
def test_bad_experiment_argument(arg, message):
  with pytest.raises(UserError, match=message):
    load_experiment('gpicl_digits').get_config(arg)


def test_an_experiment_option_named_like_a_configdict_method_is_refused():
  """`a.values` would be ConfigDict.values, not the option: the experiment's author hears
  of it at once, not through a type error inside the config."""
  with pytest.raises(ValueError, match=r"\['keys', 'values'\] are names of ConfigDict "):
    config_lib.parse_arg('values=3', keys=16, values=10, width=64)


# ---------------------------------------------------------------------------------------
# The CLI: exit code 2, one `error:` line, no traceback, the workdir untouched.
# ---------------------------------------------------------------------------------------
def run_cli(*args):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  return subprocess.run([sys.executable, '-m', 'icl_jax.main', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def no_get_config(tmp_path_factory):
  path = tmp_path_factory.mktemp('configs') / 'no_get_config.py'
  path.write_text('CONFIG = None  # An experiment file must define get_config().\n')
  return str(path)


@pytest.mark.parametrize('config,extra,message', [
    ('experiments/gpicl_digits.py:smoke', ['--config.train.stepz=5'],
     r"--config\.train\.stepz: the config has no field 'stepz'\. Did you mean "
     r'--config\.train\.steps\?'),
    ('experiments/gpicl_digits.py:smoke', ['--config.train.steps=abc'],
     r'--config\.train\.steps=abc is not a valid int .*Pass a value of type int, like the '
     r'current one: --config\.train\.steps=30\.'),
    ('experiments/nonexistent.py', [],
     r"Cannot load config file 'experiments/nonexistent\.py': \[Errno 2\] No such file.*Pass "
     r'--config=path/to/experiment\.py'),
    ('NO_GET_CONFIG', [], r'defines no get_config\(\)\. An experiment file defines '
                         r'get_config\(arg=None\)'),
], ids=['unknown_field', 'wrong_type', 'missing_config_file', 'no_get_config'])
def test_cli_bad_input_gives_one_clear_line(data_dir, unchanged, no_get_config, config, extra,
                                            message):
  config = no_get_config if config == 'NO_GET_CONFIG' else config
  out = run_cli('--config', config, '--workdir', unchanged, f'--config.data.data_dir={data_dir}',
                *extra)
  assert out.returncode == 2, out.stderr[-3000:]
  assert out.stderr.startswith('error: '), out.stderr[-3000:]
  assert 'Traceback' not in out.stderr
  assert len(out.stderr.strip().splitlines()) == 1, out.stderr
  assert re.search(message, out.stderr), out.stderr


@pytest.mark.parametrize('module,args,what', [
    ('icl_jax.main', ['--config', f'{REPO}/experiments/gpicl_digits.py:smoke',
                      '--workdir', 'gs://my-bucket/run1'], "Workdir 'gs://my-bucket/run1'"),
    ('launch.sweep', ['--config', f'{REPO}/tests/experiments/tiny_sweep.py',
                      '--root', 'gs://my-bucket/sweep'], "Sweep root 'gs://my-bucket/sweep'"),
    ('icl_jax.evaluate', ['--workdir', 's3://my-bucket/run1'], "Workdir 's3://my-bucket/run1'"),
    ('icl_jax.report', ['--root', 'gs://my-bucket/sweep'], "Sweep root 'gs://my-bucket/sweep'"),
])
def test_a_remote_url_is_one_line_and_no_local_folder(tmp_path, module, args, what):
  """`gs://b/x` once made a local folder named `gs:` and ended in a traceback."""
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1',
             PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, '-m', module, *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 2 and 'Traceback' not in out.stderr, out.stderr[-3000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and what in errors[0] and '/mnt/my-bucket' in errors[0], out.stderr
  assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------
# Property: any value in these fields is refused with a message, or trains one step.
# ---------------------------------------------------------------------------------------
FUZZED_FIELDS = ['task.num_tasks', 'task.seq_len', 'train.batch_size', 'train.lr',
                 'train.eps', 'train.b1', 'model.width', 'model.num_heads',
                 'task.bias_fraction', 'train.steps']
ANY_VALUE = st.one_of(
    st.integers(-3, 24), st.integers(2**31, 2**64), st.integers(-2**64, -2**31),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4), st.none(),
    st.booleans())
# Compiling a config's init and train step takes 10-20 s on 2 busy cores, so only the first
# TRAIN_BUDGET valid examples of a run train for real; later ones are traced through the
# same jitted functions (jax.eval_shape), which catches every shape, dtype and sharding
# error, though not a runtime one.
TRAIN_BUDGET = 2
_outcomes: dict[str, str] = {}  # Effective config -> outcome: identical configs run once.


def train_one_step(config, run: bool = True) -> str:
  """What train_and_evaluate does up to and including its first step, minus evaluation and
  checkpoints (whose compilation would double the cost of each example)."""
  try:
    wl = workload.build(config)  # Dataset-dependent checks.
  except UserError as e:
    return f'UserError: {e}'
  mesh = sharding.make_mesh(config.mesh)
  state_sharding = wl.state_shardings(mesh)
  init = jax.jit(wl.init, out_shardings=state_sharding)
  step = jax.jit(
      functools.partial(steps.train_step, spec=wl.spec,
                        batch_sharding=sharding.batch_sharded(mesh)),
      out_shardings=(state_sharding, sharding.replicated(mesh)))
  run_values = sharding.put(steps.run_values(config), sharding.replicated(mesh))
  args = (run_values,) + wl.training_inputs(mesh)
  if not run:
    jax.eval_shape(step, jax.eval_shape(init, run_values), *args)
    return 'traced'
  state, metrics = step(init(run_values), *args)
  assert int(state['step']) == 1
  return f'trained: {jax.device_get(metrics)}'


@settings(max_examples=25, deadline=None, database=None)
@given(field=st.sampled_from(FUZZED_FIELDS), value=ANY_VALUE)
def test_any_value_is_refused_clearly_or_trains(data_dir, field, value):
  section, name = field.split('.')
  config = with_values(tiny_config(data_dir), **{f'{section}__{name}': value})
  try:
    config_lib.validate(config, jax.device_count())
  except UserError as e:
    assert name in str(e), str(e)  # Names the field it is about (or the one it clashes with).
    return
  config.train.steps = 1  # A valid train.steps only sets how long a run lasts.
  key = json.dumps(config.to_dict(), sort_keys=True, default=repr)
  if key not in _outcomes:
    trained = sum(o.startswith('trained') for o in _outcomes.values())
    _outcomes[key] = train_one_step(config, run=trained < TRAIN_BUDGET)
