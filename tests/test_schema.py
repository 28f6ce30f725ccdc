"""The config schema: one declaration per field, and everything derived from it."""

import os
import sys

import pytest

from icl_jax import config as config_lib
from icl_jax import fields
from icl_jax import schema
from icl_jax import steps
from icl_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_field_of_the_defaults_is_declared_once():
  paths = [f.path for f in schema.FIELDS]
  assert len(paths) == len(set(paths))
  assert sorted(fields.flatten(config_lib.base_config())) == sorted(paths)


def test_the_defaults_pass_their_own_checks():
  c = config_lib.base_config()
  for f in schema.FIELDS:
    if f.check is not None:
      assert f.check(f.path, fields.get(c, f.path)) is None, f.path
  config_lib.validate(c, num_devices=8)


def test_the_config_reference_is_generated_from_the_schema():
  """docs/config.md holds no table of its own: the site's hook renders the schema's."""
  sys.path.insert(0, os.path.join(REPO, 'docs'))
  import hooks  # pylint: disable=g-import-not-at-top
  with open(os.path.join(REPO, 'docs', 'config.md')) as f:
    page = f.read()
  assert page.count('<!-- schema -->') == 1 and '| `seed` |' not in page
  assert schema.markdown_table() in hooks.render(page)


def test_value_fields_are_the_run_values_the_step_reads():
  run = steps.run_values(config_lib.base_config())
  assert set(run.hparams) == set(fields.HPARAM_FIELDS)
  assert set(fields.VALUE_FIELDS) == {'seed', *fields.HPARAM_FIELDS.values()}


@pytest.mark.parametrize('path,policy', [
    ('train.steps', schema.RESUMABLE), ('data.data_dir', schema.RESUMABLE),
    ('eval.num_episodes', schema.RESUMABLE), ('mesh.group_strategy', schema.RESUMABLE),
    ('eval.field_of_a_newer_version', schema.RESUMABLE),  # Its section's policy.
    ('model.width', schema.STATIC), ('task.new_field', schema.STATIC),
    ('train.lr', schema.VALUE), ('seed', schema.VALUE)])
def test_policies(path, policy):
  assert schema.policy(path) == policy
  assert fields.is_resumable(path) == (policy == schema.RESUMABLE)


def test_a_field_added_later_restores_its_legacy_value_and_stays_out_of_the_hash():
  c = config_lib.base_config()
  for f in schema.FIELDS:
    if f.added:
      stored = c.to_dict()
      section, *rest = f.path.split('.')
      node = stored[section]
      for key in rest[:-1]:
        node = node[key]
      del node[rest[-1]]
      assert fields.get(config_lib.from_dict(stored), f.path) == f.legacy
  at_legacy = {f.path for f in schema.FIELDS if f.added
               and fields.get(c, f.path) == f.legacy}
  assert not at_legacy & set(fields.workdir_fields(c))


@pytest.mark.parametrize('path,value,message', [
    ('task.curriculum.dim_inc', -1, r'config\.task\.curriculum\.dim_inc must be an integer in '
                                    r'\[0, 2\*\*31\), got -1'),
    ('task.noise_std', float('inf'), r'config\.task\.noise_std must be a finite number'),
    ('eval.x_shifts', ('a',), r'config\.eval\.x_shifts must be a tuple of finite numbers'),
])
def test_a_field_check_names_the_field(path, value, message):
  c = config_lib.base_config()
  c.task.family = 'linear'
  node = c
  *parents, leaf = path.split('.')
  for key in parents:
    node = node[key]
  with node.ignore_type():
    node[leaf] = value
  with pytest.raises(UserError, match=message):
    config_lib.validate(c)


@pytest.mark.parametrize('family,overrides,message', [
    ('sparse_linear', dict(sparsity=30, dim=20), 'sparsity=30 exceeds config.task.dim=20'),
    ('parity', dict(sparsity=30, dim=20), 'sparsity=30 exceeds config.task.dim=20'),
    ('tree', dict(tree_depth=17), 'use at most 16'),
    ('recall', dict(num_classes=1), 'num_classes must be >= 2 for recall'),
])
def test_family_checks_come_from_the_family_registry(family, overrides, message):
  c = config_lib.base_config()
  c.task.family = family
  for k, v in overrides.items():
    c.task[k] = v
  with pytest.raises(UserError, match=message):
    config_lib.validate(c)
  c.task.family = 'linear'  # Not its concern.
  if 'sparsity' not in overrides:
    config_lib.validate(c)
