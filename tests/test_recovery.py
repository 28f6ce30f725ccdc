"""The checkpoint store and the recovery policy, on small states (no model, no training)."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_jax import config as config_lib
from icl_jax import recovery
from icl_jax import store as store_lib
from icl_jax.errors import UserError

CONFIG = config_lib.base_config().to_dict()


def _state(value):
  return {'step': jnp.asarray(value, jnp.int32), 'params': {'w': jnp.full((3,), value, jnp.float32)}}


ABSTRACT = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), _state(0))


def _saved(workdir, steps, keep=None):
  s = store_lib.Store(str(workdir), keep=keep)
  for step in steps:
    s.save(step, _state(step), CONFIG)
  s.wait()
  return s


def test_the_store_saves_lists_and_restores(tmp_path):
  s = _saved(tmp_path, [2, 4])
  assert s.steps() == [2, 4] and s.latest_step() == 4
  restored = s.restore_state(2, ABSTRACT)
  np.testing.assert_array_equal(restored['params']['w'], [2, 2, 2])
  np.testing.assert_array_equal(s.restore_params(4, ABSTRACT['params'])['w'], [4, 4, 4])
  assert s.restore_config(4)["train"] == CONFIG["train"]  # JSON: tuples come back as lists.
  s.close()


def test_a_group_resumes_from_the_newest_step_every_run_has(tmp_path):
  a, b = _saved(tmp_path / 'a', [2, 4]), _saved(tmp_path / 'b', [2])
  states, step = recovery.restore_group([recovery.Recovery(a), recovery.Recovery(b)], ABSTRACT)
  assert step == 2  # Run a is one checkpoint ahead: redone from 2, exactly.
  assert [int(s['step']) for s in states] == [2, 2]


def test_a_group_without_a_common_step_restarts(tmp_path, caplog):
  a, b = _saved(tmp_path / 'a', [4]), _saved(tmp_path / 'b', [2])
  assert recovery.restore_group([recovery.Recovery(a), recovery.Recovery(b)], ABSTRACT) is None
  assert 'no checkpoint step in common' in caplog.text


def test_a_fresh_group_has_nothing_to_restore(tmp_path):
  a, b = store_lib.Store(str(tmp_path / 'a')), store_lib.Store(str(tmp_path / 'b'))
  assert recovery.restore_group([recovery.Recovery(a), recovery.Recovery(b)], ABSTRACT) is None


def test_a_damaged_newest_step_is_skipped_and_moved_by_a_trainer_only(tmp_path):
  s = _saved(tmp_path, [2, 4])
  for name in os.listdir(os.path.join(s.step_path(4), 'state')):  # Every state file gone.
    path = os.path.join(s.step_path(4), 'state', name)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
  reader = recovery.Recovery(store_lib.Store(str(tmp_path), read_only=True))
  assert reader.params(ABSTRACT['params'])[0] == 2
  assert os.path.isdir(s.step_path(4))  # A reader moves nothing.
  step, state, config = recovery.Recovery(s).restore_latest(ABSTRACT)
  assert step == int(state['step']) == 2 and config.train.steps == CONFIG['train']['steps']
  assert os.path.isdir(os.path.join(store_lib.corrupt_directory(str(tmp_path)), '4'))


def test_a_config_that_is_not_one_names_its_checkpoint(tmp_path):
  s = store_lib.Store(str(tmp_path))
  s.save(2, _state(2), {'model': {'width': 'wide'}})
  s.wait()
  with pytest.raises(UserError, match=r'The config stored with checkpoint step 2 .* cannot be '
                                      r'used: config\.model\.width must be an integer'):
    recovery.Recovery(s).read_config(2)
