"""The training loop never reads from the device between its log, evaluation and save steps."""

import jax
import pytest

from icl_jax import loop
from icl_jax import metrics as metrics_lib
from icl_jax import train
from helpers import tiny_config


def _enforce_guard_on_cpu(monkeypatch):
  """XLA:CPU reads an array without copying it, and JAX applies the transfer guard only to
  copies: on a CPU it never fires. Here the reads that Python code makes (float, bool,
  item, tolist, str, jax.device_get) check the guard themselves. (numpy's buffer protocol,
  np.asarray, stays unchecked on a CPU; on a GPU, ICL_JAX_TEST_PLATFORM=gpu, JAX's own
  guard covers every read.)"""
  from jax._src import array  # pylint: disable=g-import-not-at-top

  def check():
    if jax.config.jax_transfer_guard_device_to_host == 'disallow':
      raise RuntimeError('Disallowed device-to-host transfer (tests/test_loop.py)')

  value = array.ArrayImpl._value  # pylint: disable=protected-access
  monkeypatch.setattr(array.ArrayImpl, '_value',
                      property(lambda self: (check(), value.fget(self))[1]))
  for name in ('__array__', 'item'):
    method = getattr(array.ArrayImpl, name)
    monkeypatch.setattr(array.ArrayImpl, name,
                        lambda self, *a, _m=method, **k: (check(), _m(self, *a, **k))[1])


@pytest.fixture
def guarded_loop(monkeypatch):
  """loop.run under JAX's transfer guard: any read from the device that is not marked
  `loop.reads_device()` (the hooks' fetches) raises."""
  if jax.devices()[0].platform == 'cpu':
    _enforce_guard_on_cpu(monkeypatch)
  run = loop.run

  def guarded(*args, **kwargs):
    with jax.transfer_guard_device_to_host('disallow'):
      return run(*args, **kwargs)

  monkeypatch.setattr(loop, 'run', guarded)


def test_steps_between_hooks_never_read_from_the_device(data_dir, tmp_path, guarded_loop):
  config = tiny_config(data_dir, train__steps=12, train__log_every_steps=4,
                       train__eval_every_steps=6, train__checkpoint_every_steps=6)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert set(summary) >= {'seen/acc_first', 'unseen/acc_last'}
  records = metrics_lib.read(str(tmp_path))
  assert [r['step'] for r in records if 'train/loss' in r] == [4, 8, 12]
  assert [r['step'] for r in records if 'seen/acc_last' in r] == [6, 12]


def test_a_read_in_the_steady_state_is_caught(data_dir, tmp_path, guarded_loop, monkeypatch):
  """The control: a loop that did read every step (as it once did) fails under the guard."""
  record = loop.Metrics.record

  def reading(self, step, metrics_R):
    float(metrics_R['loss'][0])  # A per-step fetch.
    record(self, step, metrics_R)

  monkeypatch.setattr(loop.Metrics, 'record', reading)
  with pytest.raises(Exception, match='[Dd]isallowed device-to-host transfer'):
    train.train_and_evaluate(tiny_config(data_dir, train__steps=4), str(tmp_path))


@pytest.mark.parametrize('step,every,last,due', [
    (5, 5, 40, True), (6, 5, 40, False), (40, 7, 40, True), (39, 7, 40, False)])
def test_an_action_is_due_at_its_multiples_and_at_the_last_step(step, every, last, due):
  assert loop.is_due(step, every, last) == due
