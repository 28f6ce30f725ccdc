"""Sweep groups packed onto devices: layouts, padding, and per-device strategies that train
every run exactly as it trains alone (8 simulated CPU devices)."""

import functools

import jax
import ml_collections
import numpy as np
import pytest

from icl_jax import config as config_lib
from icl_jax import packing
from icl_jax import sharding
from icl_jax import steps
from icl_jax import group as group_lib
from icl_jax import train
from icl_jax import workload
from helpers import tiny_config


def _mesh_config(run=-1, data=-1):
  return ml_collections.ConfigDict({'run': run, 'data': data})


@pytest.mark.parametrize('runs,devices,run,data,expected', [
    # (runs, devices, config.mesh.run, config.mesh.data) -> (run axis, data axis, slots)
    (1, 8, -1, -1, (1, 8, 1)),  # A single run: all devices split its batch.
    (2, 8, -1, -1, (2, 4, 2)),
    (3, 8, -1, -1, (3, 2, 3)),  # Whole runs on 6 devices; a gcd gave run 1 x data 8.
    (8, 8, -1, -1, (8, 1, 8)),
    (16, 8, -1, -1, (8, 1, 16)),
    (39, 8, -1, -1, (8, 1, 40)),  # The case: padded by one, not 39 runs per device.
    (5, 8, -1, 2, (4, 2, 8)),
    (5, 8, 2, -1, (2, 4, 6)),
    (7, 1, -1, -1, (1, 1, 7)),  # One device holds the whole group.
])
def test_layout_packs_whole_runs_per_device(runs, devices, run, data, expected):
  run_axis, data_axis = sharding.mesh_shape(_mesh_config(run, data), devices, runs)
  assert (run_axis, data_axis, sharding.padded_runs(runs, run_axis)) == expected
  assert run_axis * data_axis <= devices


def test_padding_repeats_the_first_run():
  assert group_lib.pad(['a', 'b', 'c'], 5) == ['a', 'b', 'c', 'a', 'a']
  assert group_lib.pad(['a'], 1) == ['a']


@pytest.fixture(scope='module')
def group(data_dir):
  """Five runs that differ in every value a group may vary, on mesh data = 2: run axis 4,
  so the group is padded to 8 slots, two per device pair."""
  variants = [dict(seed=0), dict(seed=1, num_tasks=-1), dict(seed=2, lr=1e-3),
              dict(seed=3, eps=1e-6), dict(seed=4, num_tasks=16)]
  configs = []
  for v in variants:
    c = tiny_config(data_dir)
    c.seed = v['seed']
    c.task.num_tasks = v.get('num_tasks', c.task.num_tasks)
    c.train.lr = v.get('lr', c.train.lr)
    c.train.eps = v.get('eps', c.train.eps)
    c.mesh.data = 2
    configs.append(c)
  return configs, workload.build(configs[0])


def _train(wl, configs, strategy, num_steps):
  mesh = sharding.make_mesh(configs[0].mesh, len(configs))
  slots = sharding.padded_runs(len(configs), mesh.shape[sharding.RUN])
  runs = sharding.put(steps.stack_runs(group_lib.pad([steps.run_values(c) for c in configs], slots)),
                      sharding.run_sharded(mesh))
  state = jax.jit(jax.vmap(wl.init), out_shardings=wl.group_shardings(mesh))(runs)
  step = group_lib.make_group_step(wl, mesh, strategy)
  x_NxD, y_N = wl.training_inputs(mesh)
  losses = []
  for _ in range(num_steps):
    state, metrics = step(state, runs, x_NxD, y_N)
    losses.append(np.asarray(metrics['loss']))
  return dict(mesh.shape), slots, jax.device_get(state['params']), np.stack(losses, 1)


def _determined(params):
  """The parameters whose updates the math determines. Softmax ignores a constant added to
  every key, so the keys' bias has a zero gradient: what it gets is rounding noise, which
  Adam scales up to full-size steps in whatever direction the noise points."""
  qkv_bias = params['blocks'][0]['attn']['qkv']['bias']
  third = qkv_bias.shape[0] // 3  # [queries, keys, values]
  params['blocks'][0]['attn']['qkv']['bias'] = np.concatenate(
      [qkv_bias[:third], qkv_bias[2 * third:]])
  return params


@pytest.mark.parametrize('strategy', ['map', 'vmap'])
def test_packed_group_equals_its_runs_one_by_one(group, strategy):
  configs, wl = group
  mesh_shape, slots, params, losses_RxK = _train(wl, configs, strategy, num_steps=6)
  assert mesh_shape == {'run': 4, 'data': 2} and slots == 8
  assert losses_RxK.shape == (8, 6)
  for r, config in enumerate(configs):
    _, one_slot, alone, alone_losses = _train(wl, [config], 'vmap', num_steps=6)
    assert one_slot == 1
    np.testing.assert_allclose(losses_RxK[r], alone_losses[0], rtol=1e-5)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5),
                 _determined(jax.tree.map(lambda a, r=r: a[r], params)),
                 _determined(jax.tree.map(lambda a: a[0], alone)))
  # The padding slots train copies of the first run.
  np.testing.assert_allclose(losses_RxK[5:], np.broadcast_to(losses_RxK[0], (3, 6)), rtol=1e-5)
  # The runs really differ.
  assert len({round(float(losses_K[-1]), 6) for losses_K in losses_RxK[:5]}) == 5


def test_auto_strategy_maps_on_a_cpu(group):
  _, wl = group
  mesh = sharding.make_mesh(group[0][0].mesh, 4)
  assert group_lib.strategy('auto', mesh) == 'map'
  assert group_lib.strategy('vmap', mesh) == 'vmap'


# --- How many runs fit on a device. ---


def _w64_digits(data_dir):
  c = config_lib.base_config()
  c.data.data_dir = data_dir
  c.model.width, c.model.depth, c.model.num_heads, c.model.qkv_size = 64, 2, 2, 32
  return c


def _garg_tiny(data_dir):
  del data_dir
  from icl_jax import presets  # pylint: disable=g-import-not-at-top
  return presets.garg('linear', 'size=tiny,curriculum=0')


@pytest.mark.parametrize('make', [_garg_tiny, _w64_digits])
def test_memory_estimate_matches_what_xla_allocates(data_dir, make):
  """packing.run_bytes against XLA's own account (arguments + temporaries) of one run's
  compiled step: within 20% (measured: 0.99x for both)."""
  from icl_jax import packing  # pylint: disable=g-import-not-at-top
  config = make(data_dir)
  config.mesh.data = 1
  wl = workload.build(config)
  mesh = sharding.make_mesh(config.mesh, 1)
  runs = steps.stack_runs([steps.run_values(config)])
  state = jax.eval_shape(jax.vmap(wl.init), runs)
  compiled = group_lib.make_group_step(wl, mesh, 'vmap').lower(
      state, runs, *wl.training_inputs(mesh)).compile()
  analysis = compiled.memory_analysis()
  allocated = analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
  assert 0.8 < packing.run_bytes(wl) / allocated < 1.25
  assert packing.runs_per_device(wl, jax.devices()[0], 4 * allocated) == int(
      packing.MEMORY_FRACTION * 4 * allocated // packing.run_bytes(wl))
  assert packing.runs_per_device(wl, jax.devices()[0], 1) == 1  # Never below one run.


def test_a_group_too_large_for_device_memory_trains_in_chunks(data_dir, tmp_path, caplog):
  configs = []
  for seed in range(3):
    c = tiny_config(data_dir, train__steps=4, train__checkpoint_every_steps=4)
    c.seed = seed
    c.mesh.run, c.mesh.data = 1, 8  # All three runs on every device: three slots each.
    configs.append(c)
  workdirs = [str(tmp_path / f'run{i}') for i in range(3)]
  # Device memory for one run and a fifth: a device holds one run at a time.
  memory = int(1.2 * packing.run_bytes(workload.build(configs[0])) / packing.MEMORY_FRACTION)
  results = train.train_group(configs, workdirs, device_memory_bytes=memory)
  assert [r.error for r in results] == [None] * 3 and [r.step for r in results] == [4] * 3
  assert 'would not fit in device memory: training them in chunks of 1' in caplog.text
  from icl_jax import status as status_lib  # pylint: disable=g-import-not-at-top
  assert [status_lib.read(w)['status'] for w in workdirs] == ['done'] * 3
