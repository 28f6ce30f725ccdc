"""The device mesh and the few shardings this framework needs.

One axis, `data`: the batch is split over it and everything else is replicated. Models
here are small enough (<= tens of millions of parameters) that replicating the state is
the fast choice; a `run` axis for vmapped sweep groups sits beside it (see sweep docs).
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA = 'data'


def make_mesh(mesh_config: ml_collections.ConfigDict) -> Mesh:
  """A 1-D mesh over `mesh_config.data` devices (-1: all, across every process)."""
  devices = jax.devices()
  n = len(devices) if mesh_config.data == -1 else mesh_config.data
  # Auto axes: XLA propagates shardings from the jit's in/out shardings and the few
  # constraints we place, which is all a data-parallel step needs.
  return jax.make_mesh((n,), (DATA,), axis_types=(AxisType.Auto,), devices=devices[:n])


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`."""
  return NamedSharding(mesh, P(DATA))


def put_replicated(x: np.ndarray, mesh: Mesh) -> jax.Array:
  """Places a host array that every process holds identically on all mesh devices.

  `make_array_from_callback` is multi-process safe, unlike device_put of a host value.
  """
  return jax.make_array_from_callback(x.shape, replicated(mesh), lambda index: x[index])
