"""A group of runs on the devices: the run axis, its padding and the compiled step.

Runs that share every static field train as one program: the state and the runs' values
(`steps.Run`) get a leading run axis, split over the mesh's `run` axis, and each run's
batch is split over `data`. Everything that knows about that axis lives here, so training
code speaks of runs, never of slots or padding:

    group = Group(wl, mesh, configs)
    state = group.init()  (or group.stack(restored_states))
    group.compile(state)
    state, metrics_R = group.step(state)          # dispatched; nothing is read back
    state_r = group.run_state(state, r)           # run r, on the devices that hold it

A single run is a group of one. Its program is the group program with a run axis of 1,
so a run trains bit for bit as it did before groups existed... and as it would in a group:
a plain jit of the step would reorder XLA's fusions and change the last bits.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from icl_jax import sharding
from icl_jax import steps
from icl_jax import workload as workload_lib

STRATEGIES = ('vmap', 'map')


def strategy(requested: str, mesh: Mesh) -> str:
  """'vmap' or 'map': how each device steps its runs (config.mesh.group_strategy).

  'auto' is 'map' on a CPU, where one run after another runs plain matmuls and beats the
  batched ones of a vmap (README, Benchmarks), and 'vmap' elsewhere: on an accelerator one
  batched program keeps the chip busy.
  """
  if requested != 'auto':
    return requested
  return 'map' if mesh.devices.flat[0].platform == 'cpu' else 'vmap'


def over_runs(fn, mesh: Mesh, how: str, in_axes: tuple, batch_spec: Any):
  """`fn` applied to each run of a group, as one program: vmapped ('vmap': the vmapped axis
  goes on `run` in every sharding constraint) or per device ('map': shard_map over `run`,
  each device stepping its runs one after another with lax.map). `fn(batch_sharding, ...)`
  takes the sharding its batch constraints use; `in_axes` says which arguments carry the
  run axis (0) and which are shared (None)."""
  if how == 'vmap':
    return jax.vmap(functools.partial(fn, sharding.batch_sharded(mesh)), in_axes=in_axes,
                    spmd_axis_name=sharding.RUN)
  # Inside shard_map the mesh is the abstract, partly manual one: a bare spec names it.
  device_fn = functools.partial(fn, batch_spec)
  per_run = [i for i, axis in enumerate(in_axes) if axis == 0]

  def device_runs(*args):
    def one(xs):
      full = list(args)
      for i, x in zip(per_run, xs):
        full[i] = x
      return device_fn(*full)
    return jax.lax.map(one, tuple(args[i] for i in per_run))

  return jax.shard_map(device_runs, mesh=mesh,
                       in_specs=tuple(P(sharding.RUN) if a == 0 else P() for a in in_axes),
                       out_specs=P(sharding.RUN), axis_names={sharding.RUN})


def make_group_step(wl: workload_lib.Workload, mesh: Mesh, how: str = 'auto'):
  """(group state, runs, x_NxD, y_N) -> (group state, metrics_R), jit-ed, the state donated.
  The metrics come back replicated: every process must read every run's (a diverged run
  stops being saved, and orbax needs all processes to make the same save calls)."""
  replicated, run_sharded = sharding.replicated(mesh), sharding.run_sharded(mesh)
  group_sharding = wl.group_shardings(mesh)

  def one_step(batch_sharding, state, run, x_NxD, y_N):
    return steps.train_step(state, run, x_NxD, y_N, spec=wl.spec, batch_sharding=batch_sharding)

  group_step = over_runs(one_step, mesh, strategy(how, mesh), (0, 0, None, None), P(sharding.DATA))
  return jax.jit(group_step,
                 in_shardings=(group_sharding, run_sharded, replicated, replicated),
                 out_shardings=(group_sharding, replicated), donate_argnums=0)


def pad(items: Sequence[Any], num_slots: int) -> list[Any]:
  """`items` (a group's runs or states) padded to `num_slots` with copies of the first: the
  padding trains like a real run, so it never diverges first, and nothing reads it back."""
  return list(items) + [items[0]] * (num_slots - len(items))


class Group:
  """The runs of `configs` (equal in every static field) laid out on `mesh`."""

  def __init__(self, wl: workload_lib.Workload, mesh: Mesh,
               configs: Sequence[ml_collections.ConfigDict]):
    self.wl, self.mesh, self.num_runs = wl, mesh, len(configs)
    self.strategy = strategy(configs[0].mesh.group_strategy, mesh)
    self.runs_per_device = sharding.padded_runs(self.num_runs,
                                                  mesh.shape[sharding.RUN]) // mesh.shape[sharding.RUN]
    self.num_slots = self.runs_per_device * mesh.shape[sharding.RUN]
    self.shardings = wl.group_shardings(mesh)
    self.runs = sharding.put(steps.stack_runs(pad([steps.run_values(c) for c in configs],
                                                  self.num_slots)), sharding.run_sharded(mesh))
    self.x_NxD, self.y_N = wl.training_inputs(mesh)
    self._step = None
    self._slice = jax.jit(lambda tree, i: jax.tree.map(lambda a: a[i], tree))
    self._gather = jax.jit(lambda tree, r: jax.tree.map(lambda a: a[r], tree),
                           out_shardings=NamedSharding(mesh, P()))

  def init(self) -> steps.State:
    """Step 0 of every run."""
    return jax.jit(jax.vmap(self.wl.init), out_shardings=self.shardings)(self.runs)

  def stack(self, states: Sequence[steps.State]) -> steps.State:
    """The group state of one restored state per run."""
    stack = jax.jit(lambda *trees: jax.tree.map(lambda *a: jnp.stack(a), *trees),
                    out_shardings=self.shardings)
    return stack(*pad(states, self.num_slots))

  def compile(self, state: steps.State) -> None:
    """Compiles the step ahead of time, for `state`'s shapes and shardings."""
    self._step = make_group_step(self.wl, self.mesh, self.strategy).lower(
        state, self.runs, self.x_NxD, self.y_N).compile()

  def step(self, state: steps.State) -> tuple[steps.State, dict[str, jax.Array]]:
    """One step of every run: dispatched, never waited for."""
    return self._step(state, self.runs, self.x_NxD, self.y_N)

  def run_state(self, state: steps.State, r: int) -> steps.State:
    """Run r's state, replicated on the devices that hold it and no others: sliced from
    each device's own shard, so saving a run never gathers the group onto every device.
    On several processes it is gathered onto every device instead: orbax saves there only
    arrays that span every process (one on a single process's devices is "host local")."""
    if jax.process_count() > 1:
      return self._gather(state, r)
    row = r // self.runs_per_device
    devices = list(self.mesh.devices[row])
    target = NamedSharding(Mesh(np.array(devices), (sharding.DATA,)), P())
    leaves, treedef = jax.tree.flatten(state)
    per_device = []  # For each addressable device of the row: its slices of every leaf.
    for device in devices:
      if device.process_index != jax.process_index():
        continue
      shards = [next(s.data for s in leaf.addressable_shards if s.device == device)
                for leaf in leaves]
      per_device.append(self._slice(shards, r % self.runs_per_device))
    return jax.tree.unflatten(treedef, [
        jax.make_array_from_single_device_arrays(leaf.shape[1:], target,
                                                 [sliced[i] for sliced in per_device])
        for i, leaf in enumerate(leaves)])
