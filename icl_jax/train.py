"""train_and_evaluate(config, workdir): meta-train one model, resuming from its workdir.

Reads top to bottom: config, mesh, input, model and state, checkpoint, steps, loop.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from icl_jax import banner
from icl_jax import checkpoint as checkpoint_lib
from icl_jax import config as config_lib
from icl_jax import evaluator as evaluator_lib
from icl_jax import fields as fields_lib
from icl_jax import files
from icl_jax import lease as lease_lib
from icl_jax import metrics as metrics_lib
from icl_jax import packing
from icl_jax import progress
from icl_jax import sharding
from icl_jax import status as status_lib
from icl_jax import steps
from icl_jax import stopping
from icl_jax import workload as workload_lib
from icl_jax.errors import UserError

def is_due(step: int, every_steps: int, last_step: int) -> bool:
  """The one rule for periodic actions: every `every_steps` steps and at the last step."""
  return step % every_steps == 0 or step == last_step


# ---------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------
def _restore_group(wl: workload_lib.Workload, ckpts: Sequence[checkpoint_lib.Checkpointer],
                   mesh: jax.sharding.Mesh) -> tuple[list[Any], int] | None:
  """(one state per run, step) at the newest step every run can restore; None: start afresh.

  The runs of a group advance together, but a kill between their saves can leave them one
  checkpoint apart: the group then resumes from the older step (training is a function of
  the step, so redoing it reproduces the newer checkpoint exactly).
  """
  abstract = wl.abstract_on(mesh)  # The runs of a group share every shape.
  found = [ckpt.restore_latest(abstract) if ckpt.latest_step() is not None else None
           for ckpt in ckpts]
  if all(f is None for f in found):
    return None
  start = min(f[0] if f is not None else 0 for f in found)
  states = []
  for ckpt, f in zip(ckpts, found):
    if start == 0:
      break
    if f[0] == start:
      states.append(f[1])
      continue
    try:
      states.append(ckpt.restore_state(start, abstract))
    except Exception:  # pylint: disable=broad-except
      break  # Not kept any more; handled below.
  if len(states) == len(ckpts):
    return states, start
  logging.warning('The runs of this group have no checkpoint step in common (latest: %s); '
                  'the group restarts from step 0 and reproduces them.',
                  ', '.join(str(f[0] if f else None) for f in found))
  return None


# ---------------------------------------------------------------------------------------
# Workdir checks
# ---------------------------------------------------------------------------------------
def check_workdir_writable(workdir: str) -> None:
  if not workdir or not workdir.strip():
    raise UserError(f'The workdir is empty ({workdir!r}); pass --workdir=DIR, the directory '
                    'for this run\'s checkpoints and metrics.')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f'Workdir {workdir!r} is a file, not a directory; pass a directory '
                    '(new or of this run) as --workdir.')
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_probe_{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise UserError(f'Cannot write to workdir {workdir!r} ({e.strerror}). '
                    f'Pass a --workdir you can write to, with free disk space.') from None


# ---------------------------------------------------------------------------------------
# Groups: runs that share one compiled program
# ---------------------------------------------------------------------------------------
def group_strategy(requested: str, mesh: jax.sharding.Mesh) -> str:
  """'vmap' or 'map': how each device steps its runs (config.mesh.group_strategy).

  'auto' is 'map' on a CPU, where one run after another runs plain matmuls and beats the
  batched ones of a vmap (README, Benchmarks), and 'vmap' elsewhere: on an accelerator one
  batched program keeps the chip busy.
  """
  if requested != 'auto':
    return requested
  return 'map' if mesh.devices.flat[0].platform == 'cpu' else 'vmap'


def make_group_step(wl: workload_lib.Workload, mesh: jax.sharding.Mesh,
                    strategy: str = 'auto'):
  """(group state, runs, x_NxD, y_N) -> (group state, metrics_R), jit-ed.

  The state and the runs' values have a leading run axis split over the mesh's `run` axis
  (padded to a multiple of it, see config.padded_runs); inside, each run's batch is split
  over `data`. 'vmap' batches a device's runs into one program (spmd_axis_name puts the
  vmapped axis on `run` in every sharding constraint of the step); 'map' is per-device code
  (shard_map over `run`) that steps its runs one after another with lax.map. The state is
  donated. The metrics come back replicated: every process must read every run's (a
  diverged run stops being saved, and orbax needs all processes to make the same save
  calls).
  """
  replicated, run_sharded = sharding.replicated(mesh), sharding.run_sharded(mesh)
  group_sharding = wl.group_shardings(mesh)
  one_step = functools.partial(steps.train_step, spec=wl.spec,
                               batch_sharding=sharding.batch_sharded(mesh))
  if group_strategy(strategy, mesh) == 'vmap':
    group_step = jax.vmap(one_step, in_axes=(0, 0, None, None), spmd_axis_name=sharding.RUN)
  else:
    # Inside shard_map the mesh is the abstract, partly manual one: a bare spec names it.
    device_step = functools.partial(steps.train_step, spec=wl.spec,
                                    batch_sharding=P(sharding.DATA))

    def device_runs(state, runs, x_NxD, y_N):
      return jax.lax.map(lambda s_r: device_step(s_r[0], s_r[1], x_NxD, y_N), (state, runs))
    group_step = jax.shard_map(
        device_runs, mesh=mesh, in_specs=(P(sharding.RUN), P(sharding.RUN), P(), P()),
        out_specs=P(sharding.RUN), axis_names={sharding.RUN})
  return jax.jit(
      group_step,
      in_shardings=(group_sharding, run_sharded, replicated, replicated),
      out_shardings=(group_sharding, replicated),
      donate_argnums=0)


def check_run(config: ml_collections.ConfigDict, workdir: str,
              index: int = 0) -> checkpoint_lib.Checkpointer:
  """The Checkpointer of the group's run `index`, after checking that its workdir is
  writable and holds nothing but this run (UserError otherwise): cheap, nothing is loaded
  or compiled."""
  check_workdir_writable(workdir)
  ckpt = checkpoint_lib.Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                     barrier_key=f'icl_jax_run{index}')
  latest, stored_config = ckpt.latest_config()  # Newest readable; (None, None) if fresh.
  if latest is not None:
    bad = fields_lib.incompatible_fields(stored_config, config)
    if bad:
      ckpt.close()
      # A field added since that run began: it ran with the old behaviour, which the
      # new default changed; say how to resume it as it was.
      older = [f'--config.{f}={fields_lib.get(stored_config, f)}' for f in bad
               if f in fields_lib.ADDED_FIELDS]
      hint = f' (to resume it as it ran: {" ".join(older)})' if older else ''
      raise UserError(
          f'Workdir {workdir!r} holds a run (checkpoint step {latest}) whose config differs '
          f'in {", ".join(bad)}. Refusing to overwrite it: use a new --workdir, or the same '
          f'config to resume{hint}.')
  return ckpt


# ---------------------------------------------------------------------------------------
# Train and evaluate
# ---------------------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains to config.train.steps (resuming from the workdir's latest checkpoint) and
  returns the final seen/unseen accuracy summary."""
  [result] = train_group([config], [workdir])
  if result.error:
    raise UserError(result.error)
  if result.preempted:
    raise Preempted(f'stopped by {result.stop_signal} after saving step {result.step} in '
                    f'{workdir}; rerun the same command to resume.')
  return result.summary


class Preempted(Exception):
  """Training stopped by a stop signal after saving the step it reached (icl_jax/stopping.py)."""


def train_group(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str],
                device_memory_bytes: int | None = None) -> list[status_lib.RunResult]:
  """Trains runs that share every static field as one vmapped, jit-ed program.

  The state gets a leading run axis, split over the mesh's `run` axis; each run keeps its
  own workdir (checkpoints, metrics, status.json) exactly as if trained alone, and a run
  that diverges stops being saved without stopping the others. A single run is a group of
  one, so both paths are the same code.

  A group whose runs would not fit in a device's memory (packing.runs_per_device; the
  device's own figure, or `device_memory_bytes`) trains as consecutive chunks that fit.
  """
  # --- Config and workdirs: fail before loading data or compiling anything. ---
  num_runs = len(configs)
  if num_runs == 0 or num_runs != len(workdirs):
    raise ValueError(f'{num_runs} configs for {len(workdirs)} workdirs.')
  for config in configs:
    config_lib.validate(config, jax.device_count(), num_runs)
  config = configs[0]  # Every static field is the same in all of them.
  for other, workdir in zip(configs[1:], workdirs[1:]):
    differ = fields_lib.static_differences(config, other)
    if differ:
      raise UserError(f'Run {workdir!r} cannot join a vmapped group with {workdirs[0]!r}: '
                      f'they differ in {", ".join(differ)}; only '
                      f'{", ".join(fields_lib.VALUE_FIELDS)} may differ within a group. Train '
                      f'them in separate groups.')
  if len(set(map(os.path.abspath, workdirs))) < num_runs:
    raise UserError(f'Two runs of a group share a workdir: {list(workdirs)}. Give each its own.')
  for workdir in workdirs:
    files.local(workdir, 'Workdir')
    lease_lib.check_free(workdir)  # Before anything is created or read there.
  ckpts = [check_run(c, w, i) for i, (c, w) in enumerate(zip(configs, workdirs))]

  # --- Mesh: whole runs per device over `run`, each run's batch over `data`. ---
  mesh = sharding.make_mesh(config.mesh, num_runs)
  num_slots = config_lib.padded_runs(num_runs, mesh.shape[sharding.RUN])

  # --- Input and model: datasets (or shapes), the Spec and the abstract state. ---
  wl = workload_lib.build(config)
  fits = packing.runs_per_device(wl, mesh.devices.flat[0], device_memory_bytes)
  if fits is not None and num_slots > fits * mesh.shape[sharding.RUN]:
    for ckpt in ckpts:
      ckpt.close()
    size = fits * mesh.shape[sharding.RUN]
    logging.warning('%d runs of ~%.0f MB would not fit in device memory: training them in '
                    'chunks of %d.', num_runs, packing.run_bytes(wl) / 1e6, size)
    results = []
    for i in range(0, num_runs, size):
      results += train_group(configs[i:i + size], workdirs[i:i + size], device_memory_bytes)
      if any(r.preempted for r in results):
        break  # Stopped by a signal: the later chunks wait for the relaunch.
    return results
  # --- Leases: one trainer per workdir (process 0 holds them for all processes). ---
  leases = take_leases(workdirs, ckpts) if jax.process_index() == 0 else []

  try:
    return _train(configs, workdirs, ckpts, wl, mesh, num_slots, leases)
  finally:
    for lease in leases:
      lease.release()


def _train(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str],
           ckpts: Sequence[checkpoint_lib.Checkpointer], wl: workload_lib.Workload,
           mesh: jax.sharding.Mesh, num_slots: int,
           leases: Sequence[lease_lib.Lease]) -> list[status_lib.RunResult]:
  """train_group's loop, once the group is checked, laid out and leased."""
  config, num_runs = configs[0], len(configs)
  replicated, run_sharded = sharding.replicated(mesh), sharding.run_sharded(mesh)
  x_NxD, y_N = wl.training_inputs(mesh)
  run_values = [steps.run_values(c) for c in configs]
  runs = sharding.put(steps.stack_runs(pad(run_values, num_slots)), run_sharded)
  runs_replicated = [sharding.put(r, replicated) for r in run_values]  # For evaluation.

  # --- State: shardings derived from the abstract state, init under jit. ---
  group_sharding = wl.group_shardings(mesh)
  take = jax.jit(lambda tree, r: jax.tree.map(lambda a: a[r], tree), out_shardings=replicated)

  # --- Checkpoint: resume exactly (the data of step k is fold_in(data_key, k)). ---
  restored = _restore_group(wl, ckpts, mesh)
  if restored is not None:
    stack = jax.jit(lambda *trees: jax.tree.map(lambda *a: jnp.stack(a), *trees),
                    out_shardings=group_sharding)
    state, start = stack(*pad(restored[0], num_slots)), restored[1]
  else:
    state = jax.jit(jax.vmap(wl.init), out_shardings=group_sharding)(runs)
    start = 0

  is_main = jax.process_index() == 0
  finished = [finished_result(c, w, start) for c, w in zip(configs, workdirs)]
  if all(finished):  # Restored (so verified) at its end: say so, compile nothing.
    for ckpt in ckpts:
      ckpt.close()
    if is_main:
      for c, result in zip(configs, finished):
        for line in finished_lines(c, result):
          progress.say(line)
    return finished
  if is_main:
    for c, w in zip(configs, workdirs):  # Readable before the first checkpoint.
      files.write_json(os.path.join(w, status_lib.CONFIG_FILE), c.to_dict())
    devices = mesh.devices.flat[0]
    for line in banner.lines(
        configs, [os.path.abspath(w) for w in workdirs], model=config.model.name,
        num_params=wl.num_params(), state_size=wl.state_size(),
        devices=(f'{mesh.devices.size} x {devices.platform} ({devices.device_kind}), '
                 f'{jax.process_count()} process(es)'),
        mesh=' x '.join(f'{k} {v}' for k, v in mesh.shape.items()),
        strategy=group_strategy(config.mesh.group_strategy, mesh), start=start):
      progress.say(line)

  # --- Steps: one program for the group, each run's batch split over `data`. ---
  compile_began = time.perf_counter()
  if is_main:
    progress.say('compiling the train step...')
  train_step = make_group_step(wl, mesh, config.mesh.group_strategy).lower(
      state, runs, x_NxD, y_N).compile()
  if is_main:
    progress.say(f'compiled in {time.perf_counter() - compile_began:.1f} s')
  sets = evaluator_lib.make_eval_sets(wl, mesh, config.eval.datasets)
  evaluator = evaluator_lib.Evaluator(wl, mesh, sets, config.eval.num_episodes)
  writers = [metrics_lib.MetricWriter(w, resume_step=start, config=c)
             for c, w in zip(configs, workdirs)]
  learning_rates = [steps.learning_rate(wl.spec.schedule, c.train.lr) for c in configs]

  # --- Loop. ---
  total = config.train.steps
  summaries: list[dict[str, float]] = [{} for _ in range(num_runs)]
  errors: dict[int, tuple[int, str]] = {}  # Run index -> (step, why it stopped).
  history: list[list[dict[str, float]]] = [[] for _ in range(num_runs)]
  pending = None  # (step, device metrics) of the step before the one in flight.
  bar = progress.Progress(total, 'train' if num_runs == 1 else f'train {num_runs} runs',
                          initial=start, disable=not is_main)
  began = time.perf_counter()
  last_log_time, last_log_step = began, start

  def drain():
    """Reads the pending step's metrics (one step late, so the device never waits on us)."""
    nonlocal pending, last_log_time, last_log_step
    if pending is None:
      return
    step, device_metrics = pending
    pending = None
    metrics_R = jax.device_get(device_metrics)
    now = time.perf_counter()
    log_due = is_due(step, config.train.log_every_steps, total)
    for r in range(num_runs):
      if r in errors:
        continue
      m = {k: float(v[r]) for k, v in metrics_R.items()}
      if not all(math.isfinite(v) for v in m.values()):
        errors[r] = (step, _divergence_message(step, m, ckpts[r]))
        # Now, not at the end: a launcher that finds the group killed later must not
        # regroup this run with the others (it would hold them back at its last step).
        write_status(status_lib.RunResult(os.path.abspath(workdirs[r]), step, {}, errors[r][1]))
        continue
      history[r].append(m)
      if log_due:
        means = {f'train/{k}': float(np.mean([h[k] for h in history[r]])) for k in m}
        means['train/steps_per_sec'] = (step - last_log_step) / max(now - last_log_time, 1e-9)
        means['train/lr'] = float(learning_rates[r](step - 1))  # That made this step.
        writers[r].write(step, means)
        history[r].clear()
        if r == 0:
          bar.set_postfix(loss=f'{means["train/loss"]:.4f}')
    if log_due:
      last_log_time, last_log_step = now, step

  def evaluate_runs(step):
    for r in range(num_runs):
      if r in errors:
        continue
      summaries[r] = evaluator.summary(take(state, r)['params'], runs_replicated[r])
      writers[r].write(step, summaries[r])
      if is_main and num_runs == 1:
        progress.say(evaluator_lib.format_summary(step, summaries[r], config))

  def save(step):
    drain()  # Never save a state whose step went non-finite.
    for lease in leases:
      lease.check()  # Never write over a trainer that took the workdir over.
    for r in range(num_runs):
      if r not in errors:
        ckpts[r].save(step, take(state, r), configs[r])

  step = start
  single_process = jax.process_count() == 1
  preempted = None  # The step saved when a stop signal arrived.
  stop_signal = None
  completed = False
  try:
    with stopping.StopSignals() as stop:
      for step in range(start + 1, total + 1):
        state, device_metrics = train_step(state, runs, x_NxD, y_N)
        drain()
        pending = (step, device_metrics)
        bar.update(1)
        if single_process:  # Several processes learn of it at the next save, together.
          for ckpt in ckpts:
            ckpt.check()  # A save that failed in the background stops the run now.
        if len(errors) == num_runs:
          break  # Nothing left to train.
        if stop.requested(step):
          save(step)  # At the step reached: a resume loses nothing and stays exact.
          preempted, stop_signal = step, stop.name
          logging.warning('%s: saved step %d; stopping.', stop.name, step)
          break
        if is_due(step, config.train.eval_every_steps, total):
          drain()
          evaluate_runs(step)
        if is_due(step, config.train.checkpoint_every_steps, total):
          save(step)
    drain()
    if start >= total:  # Resumed at the end: report without retraining or re-logging.
      summaries = [evaluator.summary(take(state, r)['params'], runs_replicated[r])
                   for r in range(num_runs)]
    for ckpt in ckpts:
      ckpt.wait()  # The last saves are whole (or their failure is known) before "done".
    completed = preempted is None
  except checkpoint_lib.SaveFailed as e:
    # A full disk or a lost mount: stop now, at the last good checkpoint, rather than train
    # on with nothing saved. Every run of the group stops (they share the disk).
    logging.info('save failed: %s', e)
    for r in range(num_runs):
      errors.setdefault(r, (e.step or step, str(e)))
  finally:
    bar.close()
    for r, writer in enumerate(writers):
      writer.close(finished=completed and r not in errors)
    for ckpt in ckpts:
      try:
        ckpt.wait()  # Saves in flight complete, so the last good checkpoint is whole.
      except checkpoint_lib.SaveFailed:
        pass  # Reported above, or an exception is already on its way.
      ckpt.close()

  results = [status_lib.RunResult(os.path.abspath(w), errors[r][0], {}, errors[r][1])
             if r in errors else
             status_lib.RunResult(os.path.abspath(w), preempted, {}, preempted=True,
                                  stop_signal=stop_signal)
             if preempted is not None else
             status_lib.RunResult(os.path.abspath(w), max(start, total), summaries[r])
             for r, w in enumerate(workdirs)]
  seconds = time.perf_counter() - began
  for result in results:
    write_status(result, num_params=wl.num_params(), num_classes=wl.num_classes,
                 state_size=wl.state_size(), seconds=seconds)
  if is_main and num_runs == 1 and completed and not errors:
    progress.say(results_line(results[0].workdir))
  return results


def finished_result(config: ml_collections.ConfigDict, workdir: str,
                    restored_step: int) -> status_lib.RunResult | None:
  """The stored result of a run already trained to at least config.train.steps: its status
  says done at `restored_step`, the newest checkpoint that restored. Else None."""
  status = status_lib.read(workdir)
  if not status or status.get('status') != status_lib.DONE:
    return None
  step, summary = status.get('step'), status.get('summary')
  if (not isinstance(step, int) or isinstance(step, bool) or step < config.train.steps
      or step != restored_step or not isinstance(summary, dict)):
    return None  # A hand-edited or stale status, or a damaged last checkpoint: train on.
  return status_lib.RunResult(os.path.abspath(workdir), step, summary)


def finished_lines(config: ml_collections.ConfigDict,
                   result: status_lib.RunResult) -> list[str]:
  """What a rerun of a finished run prints: that, its final summary, and its files."""
  asked = config.train.steps
  why = (f'trained to step {result.step}, more than the {asked} steps asked for; nothing to '
         'train (its checkpoints are kept as they are)' if result.step > asked else
         f'already trained to step {result.step}; nothing to train')
  lines = [f'icl_jax: {result.workdir} is {why}. Raise --config.train.steps to train on.']
  try:
    lines.append(evaluator_lib.format_summary(result.step, result.summary, config))
  except (KeyError, TypeError, ValueError):
    pass  # A summary without the usual fields (hand-edited): the files still say it all.
  return lines + [results_line(result.workdir)]


def results_line(workdir: str) -> str:
  """Where a finished run's results are, and how to meta-test it."""
  return (f'results: {os.path.join(workdir, status_lib.STATUS_FILE)}, metrics.jsonl, tb/; '
          f'meta-test it with: python -m icl_jax.evaluate --workdir {workdir}')


def take_leases(workdirs: Sequence[str],
                ckpts: Sequence[checkpoint_lib.Checkpointer]) -> list[lease_lib.Lease]:
  """The lease of every workdir of a group, or none of them (LeaseHeld names the holder)."""
  leases = []
  try:
    for workdir in workdirs:
      leases.append(lease_lib.Lease.acquire(workdir))
  except BaseException:
    for lease in leases:
      lease.release()
    for ckpt in ckpts:
      ckpt.close()
    raise
  return leases


def pad(items: Sequence[Any], num_slots: int) -> list[Any]:
  """`items` (a group's runs or states) padded to `num_slots` with copies of the first: the
  padding trains like a real run, so it never diverges first, and nothing reads it back."""
  return list(items) + [items[0]] * (num_slots - len(items))


def _divergence_message(step: int, m: dict[str, float], ckpt: checkpoint_lib.Checkpointer) -> str:
  good = ckpt.latest_step()
  return (f'Training diverged at step {step}: ' +
          ', '.join(f'{k}={v}' for k, v in m.items()) + '. ' +
          (f'The last good checkpoint (step {good}) in {ckpt.directory} is kept; '
           if good is not None else 'No checkpoint was written yet; ') +
          'lower config.train.lr, raise config.train.eps or set config.train.grad_clip, '
          'then rerun (a resumable config change needs a new --workdir).')


def write_status(result: status_lib.RunResult, **extra: Any) -> None:
  if jax.process_index() != 0:
    return
  try:
    status_lib.write(result, **extra)
  except OSError as e:  # A full disk: the error being reported matters more than its record.
    logging.warning('Could not write %s (%s).', status_lib.STATUS_FILE, e.strerror or e)
