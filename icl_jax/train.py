"""train_and_evaluate(config, workdir): meta-train one run, resuming from its workdir; and
train_group: the runs of a sweep group, as one program.

Reads top to bottom in three parts:
  setup   check every run and its workdir (nothing loaded yet), the mesh, the workload,
          the leases, the group on the devices and the newest step every run restores;
  loop    icl_jax/loop.py: the step, then the hooks due (metrics, evaluation, checkpoint)
          and the stop signals; it never waits on the device between them;
  finish  each run's status.json, and the line that says where the results are.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

from absl import logging
import jax
import ml_collections

from icl_jax import banner
from icl_jax import config as config_lib
from icl_jax import evaluator as evaluator_lib
from icl_jax import fields as fields_lib
from icl_jax import group as group_lib
from icl_jax import lease as lease_lib
from icl_jax import loop
from icl_jax import packing
from icl_jax import progress
from icl_jax import recovery as recovery_lib
from icl_jax import runs as runs_lib
from icl_jax import sharding
from icl_jax import status as status_lib
from icl_jax import stopping
from icl_jax import store as store_lib
from icl_jax import workload as workload_lib
from icl_jax.errors import UserError


class Preempted(Exception):
  """Training stopped by a stop signal after saving the step it reached (icl_jax/stopping.py)."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains to config.train.steps (resuming from the workdir's latest checkpoint) and
  returns the final seen/unseen accuracy summary."""
  [result] = train_group([config], [workdir])
  if result.error:
    raise UserError(result.error)
  if result.preempted:
    raise Preempted(
        (f'stopped by {result.stop_signal} after saving step {result.step} in {workdir}'
         if result.saved else
         f'stopped by {result.stop_signal} before training began (during set-up or '
         f'compilation); {workdir} is as it was, at step {result.step}') +
        '; rerun the same command to resume.')
  return result.summary


def train_group(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str],
                device_memory_bytes: int | None = None) -> list[status_lib.RunResult]:
  """Trains runs that share every static field as one program, each in its own workdir
  exactly as if trained alone; a run that diverges stops without stopping the others.

  A group whose runs would not fit in a device's memory (packing.runs_per_device; the
  device's own figure, or `device_memory_bytes`) trains as consecutive chunks that fit.
  """
  check_group(configs, workdirs)  # Before anything is created, loaded or compiled.
  runs = open_runs(configs, workdirs)
  leases = []
  # From the moment the workdirs are held, a stop signal ends the training cleanly.
  with stopping.StopSignals() as stop:
    try:
      if jax.process_index() == 0:  # It holds them for all processes.
        leases = [lease_lib.Lease.acquire(r.workdir) for r in runs]
      wl = workload_lib.build(configs[0])
      size = chunk_size(wl, len(runs), device_memory_bytes)
      results = []
      for i in range(0, len(runs), size):
        results += train_runs(runs[i:i + size], wl, leases, stop)
        if any(r.preempted for r in results):
          break  # Stopped by a signal: the later chunks wait for the relaunch.
      return results
    finally:
      for run in runs:
        run.store.close()
      for lease in leases:
        lease.release()


# ---------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------
def check_group(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str]) -> None:
  """UserError unless the configs are valid, can share a program, and have distinct, local
  workdirs that no live trainer holds."""
  num_runs = len(configs)
  if num_runs == 0 or num_runs != len(workdirs):
    raise ValueError(f'{num_runs} configs for {len(workdirs)} workdirs.')
  for config in configs:
    config_lib.validate(config, jax.device_count(), num_runs)
  for other, workdir in zip(configs[1:], workdirs[1:]):
    differ = fields_lib.static_differences(configs[0], other)
    if differ:
      raise UserError(f'Run {workdir!r} cannot join a vmapped group with {workdirs[0]!r}: '
                      f'they differ in {", ".join(differ)}; only '
                      f'{", ".join(fields_lib.VALUE_FIELDS)} may differ within a group. Train '
                      f'them in separate groups.')
  if len(set(map(os.path.abspath, workdirs))) < num_runs:
    raise UserError(f'Two runs of a group share a workdir: {list(workdirs)}. Give each its own.')
  for workdir in workdirs:
    runs_lib.check_workdir(workdir)
    lease_lib.check_free(workdir)


def open_runs(configs: Sequence[ml_collections.ConfigDict],
              workdirs: Sequence[str]) -> list[runs_lib.RunDir]:
  """Each run's RunDir (its workdir checked against its config), or none of them."""
  runs = []
  try:
    for i, (config, workdir) in enumerate(zip(configs, workdirs)):
      runs.append(runs_lib.RunDir.open(config, workdir, i))
  except BaseException:
    for run in runs:
      run.store.close()
    raise
  return runs


def chunk_size(wl: workload_lib.Workload, num_runs: int,
               device_memory_bytes: int | None) -> int:
  """How many runs train at once: all of them, unless they would not fit the devices."""
  mesh = sharding.make_mesh(wl.config.mesh, num_runs)
  packing.check_one_run_fits(wl, mesh.devices.flat[0], mesh.shape[sharding.DATA],
                             device_memory_bytes)
  fits = packing.runs_per_device(wl, mesh.devices.flat[0], device_memory_bytes)
  slots = sharding.padded_runs(num_runs, mesh.shape[sharding.RUN])
  if fits is None or slots <= fits * mesh.shape[sharding.RUN]:
    return num_runs
  size = fits * mesh.shape[sharding.RUN]
  logging.warning('%d runs of ~%.0f MB would not fit in device memory: training them in '
                  'chunks of %d.', num_runs, packing.run_bytes(wl) / 1e6, size)
  return size


def restore(group: group_lib.Group, runs: Sequence[runs_lib.RunDir]) -> tuple[Any, int]:
  """(group state, step): the newest step every run restores (exact: the data of step k
  is fold_in(data_key, k)), else step 0."""
  abstract = group.wl.abstract_on(group.mesh)  # The runs of a group share every shape.
  restored = recovery_lib.restore_group([r.recovery for r in runs], abstract)
  if restored is None:
    return group.init(), 0
  return group.stack(restored[0]), restored[1]


def announce(runs: Sequence[runs_lib.RunDir], group: group_lib.Group, start: int) -> None:
  """The banner, before compiling: what trains, where, on what."""
  wl, mesh = group.wl, group.mesh
  device = mesh.devices.flat[0]
  for line in banner.lines(
      [r.config for r in runs], [r.workdir for r in runs], model=wl.config.model.name,
      num_params=wl.num_params(), state_size=wl.state_size(),
      devices=(f'{mesh.devices.size} x {device.platform} ({device.device_kind}), '
               f'{jax.process_count()} process(es)'),
      mesh=' x '.join(f'{k} {v}' for k, v in mesh.shape.items()),
      strategy=group.strategy, start=start):
    progress.say(line)


# ---------------------------------------------------------------------------------------
# One program: setup, loop, finish
# ---------------------------------------------------------------------------------------
def train_runs(runs: Sequence[runs_lib.RunDir], wl: workload_lib.Workload,
               leases: Sequence[lease_lib.Lease],
               stop: stopping.StopSignals) -> list[status_lib.RunResult]:
  """Trains `runs` (checked, opened and leased) as one group on the devices."""
  config, is_main = runs[0].config, jax.process_index() == 0
  mesh = sharding.make_mesh(config.mesh, len(runs))
  group = group_lib.Group(wl, mesh, [r.config for r in runs])
  state, start = restore(group, runs)
  finished = [r.finished(start) for r in runs]
  if all(finished):  # Restored (so verified) at its end: say so, compile nothing.
    for run, result in zip(runs, finished):
      for line in runs_lib.finished_lines(run.config, result) if is_main else ():
        progress.say(line)
    return finished
  for run in runs:
    run.begin(start, wl.spec.schedule)
  if is_main:
    announce(runs, group, start)
    progress.say('compiling the train step...')
  began = time.perf_counter()
  group.compile(state)
  if is_main:
    progress.say(f'compiled in {time.perf_counter() - began:.1f} s')
  evaluator = evaluator_lib.Evaluator(
      wl, mesh, evaluator_lib.make_eval_sets(wl, mesh, config.eval.datasets),
      config.eval.num_episodes)

  total, tc = config.train.steps, config.train
  bar = progress.Progress(total, 'train' if len(runs) == 1 else f'train {len(runs)} runs',
                          initial=start, disable=not is_main)
  metrics = loop.Metrics(runs, tc.log_every_steps, total, bar, start, leases)
  evaluation = loop.Evaluation(evaluator, group, runs, metrics, tc.eval_every_steps, total,
                               progress.say if is_main and len(runs) == 1 else None)
  checkpoint = loop.Checkpoint(group, runs, metrics, leases, tc.checkpoint_every_steps, total)
  began = time.perf_counter()
  step, stop_signal, completed = start, None, False
  try:
    state, step, stop_signal = loop.run(group, state, start, total,
                                        (metrics, evaluation, checkpoint), metrics, checkpoint,
                                        runs, bar, stop)
    metrics.flush()
    if start >= total:  # Resumed at the end: report without retraining or re-logging.
      with loop.reads_device():
        for run, summary in zip(runs, evaluator.group_summaries(state['params'], group)):
          run.summary = summary
    for run in runs:
      run.store.wait()  # The last saves are whole (or their failure is known) before "done".
    completed = stop_signal is None
  except store_lib.SaveFailed as e:
    # A full disk or a lost mount: stop now, at the last good checkpoint, rather than train
    # on with nothing saved. Every run of the group stops (they share the disk).
    logging.info('save failed: %s', e)
    for run in runs:
      run.error = run.error or (e.step or step, str(e))
  finally:
    bar.close()
    for run in runs:
      run.close(finished=completed)
  return finish(runs, wl, max(start, total) if completed else step, stop_signal,
                time.perf_counter() - began, saved=step > start)


def finish(runs: Sequence[runs_lib.RunDir], wl: workload_lib.Workload, step: int,
           stop_signal: str | None, seconds: float,
           saved: bool = True) -> list[status_lib.RunResult]:
  """Every run's status.json, and for a single run that finished, where its results are."""
  results = [r.result(step, stop_signal, saved) for r in runs]
  for result in results:
    runs_lib.write_status(result, num_params=wl.num_params(), num_classes=wl.num_classes,
                          state_size=wl.state_size(), seconds=seconds)
  if (jax.process_index() == 0 and len(runs) == 1 and stop_signal is None
      and not results[0].error):
    progress.say(runs_lib.results_line(results[0].workdir))
  return results
