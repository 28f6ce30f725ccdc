"""What TensorBoard shows, read back with tensorboard's own EventAccumulator: the training
scalars with the learning rate, the config as text, the HParams plugin's session (so a
sweep filters by its fields), and the evaluation's per-position curves."""

import glob
import os

import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2

from icl_jax import evaluate
from icl_jax import metrics as metrics_lib
from icl_jax import steps


def load(logdir):
  accumulator = event_accumulator.EventAccumulator(
      logdir, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return accumulator


def test_a_run_shows_its_scalars_lr_config_and_hparams(trained_run):
  workdir, config, _ = trained_run
  tb = load(os.path.join(workdir, metrics_lib.TB_DIR))
  scalars = set(tb.Tags()['scalars'])
  assert {'train/loss', 'train/accuracy', 'train/grad_norm', 'train/param_norm',
          'train/steps_per_sec', 'train/lr', 'seen/acc_first', 'seen/acc_last',
          'unseen/acc_first', 'unseen/acc_last'} <= scalars, scalars
  expected = steps.learning_rate(steps.Schedule.from_config(config.train), config.train.lr)
  for event in tb.Scalars('train/lr'):  # The rate of the update that made the logged step.
    assert event.value == pytest.approx(float(expected(event.step - 1)), rel=1e-6)
  text_tags = tb.PluginTagToContent('text')
  assert 'config/text_summary' in text_tags, text_tags

  sessions = tb.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
  start = plugin_data_pb2.HParamsPluginData.FromString(
      sessions[hparams_metadata.SESSION_START_INFO_TAG]).session_start_info
  assert start.hparams['model.width'].number_value == config.model.width
  assert start.hparams['task.num_tasks'].number_value == config.task.num_tasks
  assert start.hparams['model.name'].string_value == 'transformer'
  experiment = plugin_data_pb2.HParamsPluginData.FromString(
      sessions[hparams_metadata.EXPERIMENT_TAG]).experiment
  assert {m.name.tag for m in experiment.metric_infos} == set(metrics_lib.HPARAM_METRICS)
  end = plugin_data_pb2.HParamsPluginData.FromString(
      sessions[hparams_metadata.SESSION_END_INFO_TAG]).session_end_info
  assert end.status == 1  # STATUS_SUCCESS: the run reached its last step.


def test_evaluation_writes_each_curve_against_examples_in_context(trained_run, tmp_path):
  workdir, config, _ = trained_run
  out = str(tmp_path / 'eval')
  report = evaluate.evaluate_workdir(workdir, num_episodes=16, out=out,
                                     baseline_names=['knn'])
  evaluate.evaluate_workdir(workdir, num_episodes=16, out=out, baseline_names=['knn'])
  assert len(glob.glob(os.path.join(out, metrics_lib.TB_DIR, 'events.*'))) == 1  # Replaced.
  tb = load(os.path.join(out, metrics_lib.TB_DIR))
  for set_name, methods in report['results'].items():
    for method, curve in methods.items():
      events = tb.Scalars(f'{set_name}/{method}')
      assert [e.step for e in events] == list(range(config.task.seq_len))
      assert [e.value for e in events] == pytest.approx(curve['mean'], abs=1e-6)
      assert len(tb.Scalars(f'{set_name}/{method}/ci95')) == config.task.seq_len
  assert 'table/text_summary' in tb.PluginTagToContent('text')
