r"""Episode samplers: on device (the framework's) vs. the same sampling in numpy on the host.

  python benchmarks/sampler_throughput.py \
      [--configs gpicl_digits,gpicl_paper,mnist_shape,mnist_shape_fast,garg_linear] \
      [--calls 20] [--windows 5] [--budget 10]

One JSON line per config: episodes/s of the on-device sampler (one jit-ed call draws a
training batch, as inside train_step), episodes/s of a vectorised numpy version of the
same sampling on the host, their ratio, and the sampler's share of a training step (its
time per batch over the framework step's time per step for the same config); for the GPICL
configs also the time of the projections' draws alone (B of D x D, `draws_ms_per_batch`),
and FLOPs by XLA's cost analysis of the lowered programs (every elementwise operation of
the hash counts): the sampler's, the step's (sampler included), the sampler's share, and
`projection_matmul_flops`, the 2 B T D^2 of applying the projections, which no way of
drawing them removes.
  gpicl_digits  the GPICL task family on the embedded digits: B = 64, T = 50, D = 64
                (experiments/gpicl_digits.py); per episode a task's projection and label
                permutation, T examples drawn, projected and relabelled.
  gpicl_paper   the same family at the paper's B = 128, T = 100.
  mnist_shape   the paper's sampler and model at MNIST's shape: D = 784 (28x28), B = 128,
                T = 100, on 60000 random uint8 images (nothing to download), stored as
                training stores MNIST (uint8 pixels on device); a 784 x 784 projection per
                episode, 79M Gaussian draws per batch.
  mnist_shape_fast  the same with config.task.projection='threefry_fast' (the step it is a
                share of draws its projections that way too).
  garg_linear   Garg et al.'s linear regression, B = 64, T = 41, d = 20: w, x ~ N(0, I),
                y = w.x (when this checkout has the synthetic families).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from icl_jax import config as config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import data  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import steps as steps_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import workload  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax.tasks import projected  # pylint: disable=g-import-not-at-top,wrong-import-position
import train_throughput  # pylint: disable=g-import-not-at-top,wrong-import-position


def gpicl_digits_config():
  sys.path.insert(0, os.path.join(common.REPO, 'experiments'))
  import gpicl_digits  # pylint: disable=g-import-not-at-top
  return gpicl_digits.get_config()


MNIST_SPLITS = {'train': 60_000, 'test': 10_000}
MNIST_CONFIGS = {'mnist_shape': 'threefry', 'mnist_shape_fast': 'threefry_fast'}


def mnist_shape_workload(projection: str):
  """(config, workload): the paper's config (train_throughput.gpicl_paper_config) at 28x28,
  on random uint8 images of MNIST's split sizes, preprocessed as `data.load` would."""
  config = train_throughput.gpicl_paper_config()
  config.data.image_shape = (28, 28)
  config.task.projection = projection
  config_lib.validate(config, jax.device_count(), 1)
  rng = np.random.default_rng(0)
  splits = tuple(
      data.from_images(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
                       rng.integers(0, 10, n), 10, (28, 28), 'random_28x28', split)
      for split, n in MNIST_SPLITS.items())
  return config, workload.build(config, splits)


def group_step(config, wl):
  """step(i) -> metrics: the framework's group step (as train_throughput.framework_step)."""
  program = common.group_program([config], wl)
  holder = {'state': program.state}

  def run(i):
    del i  # The step counter lives in the state.
    holder['state'], metrics = program.step(holder['state'], *program.inputs)
    return metrics

  return run


def flops_shares(config, wl, sample) -> dict:
  """The sampler's FLOPs, the step's (a group of one, sampler included) and the share."""
  program = common.group_program([config], wl)
  step = program.step.lower(program.state, *program.inputs).cost_analysis()['flops']
  sampler = sample.lower(jax.random.key(0)).cost_analysis()['flops']
  b, t, d = config.train.batch_size, config.task.seq_len, wl.num_features
  return {'sampler_flops': sampler, 'step_flops': step, 'sampler_flops_share': sampler / step,
          'projection_matmul_flops': 2 * b * t * d * d}


def numpy_projected(rng: np.random.Generator, x_NxD: np.ndarray, y_N: np.ndarray, batch: int,
                    seq_len: int, num_tasks: int, num_classes: int):
  """The GPICL sampler in numpy, vectorised over the batch (the fastest host version)."""
  n, d = x_NxD.shape
  task_ids = rng.integers(0, num_tasks, batch)  # As on device; the ids seed nothing here.
  del task_ids
  a_BxDxD = rng.standard_normal((batch, d, d), dtype=np.float32) / np.sqrt(d)
  perm_BxC = np.argsort(rng.random((batch, num_classes)), axis=1).astype(np.int32)
  idx_BxT = rng.integers(0, n, (batch, seq_len))
  x_BxTxD = np.matmul(x_NxD[idx_BxT], a_BxDxD.transpose(0, 2, 1))
  y_BxT = np.take_along_axis(perm_BxC, y_N[idx_BxT], axis=1)
  return x_BxTxD, y_BxT


def numpy_linear(rng: np.random.Generator, batch: int, seq_len: int, dim: int):
  x_BxTxD = rng.standard_normal((batch, seq_len, dim), dtype=np.float32)
  w_BxD = rng.standard_normal((batch, dim), dtype=np.float32)
  return x_BxTxD, np.einsum('btd,bd->bt', x_BxTxD, w_BxD)


def measure(name: str, args) -> dict:
  record = common.header('sampler_throughput')
  step_run = None
  if name in ('gpicl_digits', 'gpicl_paper') or name in MNIST_CONFIGS:
    if name in MNIST_CONFIGS:
      config, wl = mnist_shape_workload(MNIST_CONFIGS[name])
      step_run = group_step(config, wl)
    else:
      config = gpicl_digits_config() if name == 'gpicl_digits' else (
          train_throughput.gpicl_paper_config())
      wl = workload.build(config)
    train_ds, spec = wl.train_ds, wl.spec
    mesh = sharding.make_mesh(config.mesh, 1)
    run = sharding.put(steps_lib.run_values(config), sharding.replicated(mesh))
    x_NxD, y_N = wl.training_inputs(mesh)
    batch = config.train.batch_size
    sample = jax.jit(lambda key: spec.sample(key, run, x_NxD, y_N, batch))
    host_x, host_y = np.asarray(train_ds.x_NxD), np.asarray(train_ds.y_N)
    rng = np.random.default_rng(0)
    host = lambda: numpy_projected(rng, host_x, host_y, batch, config.task.seq_len,
                                   config.task.num_tasks, train_ds.num_classes)
    step_name = name
    step_config = config
    # The projections' draws alone, as the sampler makes them: B of D x D.
    normal, d = projected.NORMALS[config.task.projection], train_ds.num_features
    draws = jax.jit(lambda key: jax.vmap(lambda k: normal(k, (d, d)).sum())(
        jax.random.split(key, batch)))
    draws_rate = common.windows(lambda i: draws(jax.random.key(i)), batch, args.calls,
                                args.windows, args.budget)
    record.update(projection=config.task.projection, num_features=d,
                  draws_ms_per_batch=1e3 * batch / draws_rate['median'],
                  draws_cpu_ms_per_batch=1e3 * batch * draws_rate['cpu_s_per_item'],
                  **flops_shares(config, wl, sample))
  elif name == 'garg_linear':
    try:
      from icl_jax.tasks import families  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise SystemExit('This checkout has no synthetic task families.') from None
    options = families.TaskOptions(dim=train_throughput.GARG_DIM)
    batch, seq_len = train_throughput.GARG_BATCH, train_throughput.GARG_POINTS
    task_key = jax.random.key(1)
    sample = jax.jit(lambda key: families.FAMILIES['linear'].sample(
        key, task_key, batch_size=batch, seq_len=seq_len, num_tasks=-1, unseen=False,
        options=options))
    rng = np.random.default_rng(0)
    host = lambda: numpy_linear(rng, batch, seq_len, options.dim)
    step_name, step_config = 'garg_tiny', None
  else:
    raise SystemExit(f'Unknown config {name!r}.')

  base = jax.random.key(0)
  device = common.windows(lambda i: sample(jax.random.fold_in(base, i)), batch, args.calls,
                          args.windows, args.budget)
  # The host version returns numpy arrays (nothing to block on): time it the same way.
  host_rate = common.windows(lambda i: host()[0], batch, args.calls, args.windows, args.budget)
  # The step the sampler feeds, to put its cost in proportion (the MNIST-shape rows built
  # theirs on their random data above).
  if step_run is None and step_config is not None:
    step_run, _, _ = train_throughput.framework_step(step_config)
  elif step_run is None and train_throughput.has_regression_families():
    step_run, _, _ = train_throughput.framework_step(train_throughput.garg_config(step_name))
  elif step_run is None:
    step_run = train_throughput.direct_garg_step(step_name)[0]
  step_rate = common.windows(step_run, 1, max(1, args.calls // 4), args.windows, args.budget)
  sampler_s = batch / device['median']
  record.update({
      'config': name, 'batch_size': batch,
      'device_episodes_per_sec': device['median'], 'device_min': device['min'],
      'device_max': device['max'],
      'device_cpu_ms_per_batch': 1e3 * batch * device['cpu_s_per_item'],
      'host_numpy_episodes_per_sec': host_rate['median'], 'host_min': host_rate['min'],
      'host_max': host_rate['max'],
      'device_vs_host': device['median'] / host_rate['median'],
      'sampler_ms_per_batch': 1e3 * sampler_s,
      'step_config': step_name, 'step_ms': 1e3 / step_rate['median'],
      'sampler_share_of_step': sampler_s * step_rate['median'],
      # Process CPU time, which other jobs on the machine disturb less than wall time.
      'step_cpu_ms': 1e3 * step_rate['cpu_s_per_item'],
      'sampler_cpu_share_of_step': batch * device['cpu_s_per_item'] /
                                   step_rate['cpu_s_per_item'],
      'windows': args.windows,
  })
  return common.rounded(record)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default='gpicl_digits,gpicl_paper,mnist_shape,'
                      'mnist_shape_fast,garg_linear')
  parser.add_argument('--calls', type=int, default=20, help='Calls per timed window (at most).')
  parser.add_argument('--windows', type=int, default=5)
  parser.add_argument('--budget', type=float, default=None, help='Seconds per measurement.')
  args = parser.parse_args()
  for name in args.configs.split(','):
    common.emit(measure(name, args))


if __name__ == '__main__':
  main()
