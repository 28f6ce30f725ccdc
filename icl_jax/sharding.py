"""The device mesh and the few shardings this framework needs.

Two axes: `run` splits the runs of a sweep group (each device holds the whole state of
its runs; `mesh_shape` packs them), `data` splits each run's batch; everything else
is replicated. Models here are
small enough (<= tens of millions of parameters) that replicating a run's state over `data`
is the fast choice. A single run is a group of one: run axis 1, data axis all devices.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


RUN, DATA = 'run', 'data'


def make_mesh(mesh_config: ml_collections.ConfigDict, num_runs: int = 1) -> Mesh:
  """A (run, data) mesh over the first run * data devices of all processes."""
  devices = jax.devices()
  run, data = mesh_shape(mesh_config, len(devices), num_runs)
  # Auto axes: XLA propagates shardings from the jit's in/out shardings and the few
  # constraints we place, which is all a data-parallel step needs.
  return jax.make_mesh((run, data), (RUN, DATA), axis_types=(AxisType.Auto,) * 2,
                       devices=devices[:run * data])


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int,
               num_runs: int = 1) -> tuple[int, int]:
  """(run, data) device counts for a group of `num_runs` runs; -1 fills an axis.

  Devices hold whole runs: a free run axis takes one device per run, up to every device,
  and a group larger than the run axis is padded to a multiple of it (`padded_runs`), so
  no device repeats another's Adam update or all-reduces a run's gradients needlessly
  (a gcd would leave a 39-run group on 8 devices with run = 1, data = 8). A free data axis
  splits each run's batch over all the devices the run axis leaves.
  """
  data = mesh_config.data
  run = mesh_config.get('run', -1)
  if run == -1:
    room = num_devices // data if data != -1 else num_devices
    run = max(min(num_runs, room), 1)
  if data == -1:
    data = max(num_devices // run, 1)
  return run, data


def padded_runs(num_runs: int, run_axis: int) -> int:
  """The group's size on the mesh: `num_runs` rounded up to a multiple of the run axis. The
  padding slots train copies of the first run and are never saved or reported."""
  return -(-num_runs // run_axis) * run_axis


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`."""
  return NamedSharding(mesh, P(DATA))


def run_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (run) axis split over `run`: the stacked state of a sweep group."""
  return NamedSharding(mesh, P(RUN))


def put_replicated(x: np.ndarray, mesh: Mesh) -> jax.Array:
  """Places a host array that every process holds identically on all mesh devices."""
  return put(x, replicated(mesh))


def put(tree, sharding: NamedSharding):
  """Places a pytree of host values that every process holds identically (arrays, keys).

  `make_array_from_callback` is multi-process safe, unlike device_put of a host value.
  Typed PRNG keys travel as their raw key data.
  """
  def one(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(one(jax.random.key_data(x)),
                                      impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(one, tree)
