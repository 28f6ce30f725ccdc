"""train_and_evaluate(config, workdir): meta-train one model, resuming from its workdir.

Reads top to bottom: config, mesh, input, model and state, checkpoint, steps, loop.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from icl_jax import checkpoint as checkpoint_lib
from icl_jax import config as config_lib
from icl_jax import data
from icl_jax import evaluate
from icl_jax import metrics as metrics_lib
from icl_jax import rng
from icl_jax import sharding
from icl_jax import steps
from icl_jax.errors import UserError

# Fields a resumed run may change: they alter how long it runs and what it reports, not
# what it learns from step to step.
RESUMABLE_FIELDS = ('train.steps', 'train.log_every_steps', 'train.eval_every_steps',
                    'train.checkpoint_every_steps', 'train.keep_checkpoints', 'eval.',
                    'mesh.', 'data.data_dir')


def is_due(step: int, every_steps: int, last_step: int) -> bool:
  """The one rule for periodic actions: every `every_steps` steps and at the last step."""
  return step % every_steps == 0 or step == last_step


# ---------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------
def load_splits(config: ml_collections.ConfigDict) -> tuple[data.Dataset, data.Dataset]:
  """The training split (seen tasks) and the held-out split (unseen tasks)."""
  dc = config.data
  train_ds = data.load(dc.dataset, dc.train_split, tuple(dc.image_shape), dc.data_dir)
  eval_ds = data.load(dc.dataset, dc.eval_split, tuple(dc.image_shape), dc.data_dir)
  for ds in (train_ds, eval_ds):
    ds.check_seq_len(config.task.seq_len)
  return train_ds, eval_ds


# ---------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------
def state_layout(config: ml_collections.ConfigDict, spec: steps.Spec,
                 mesh: jax.sharding.Mesh):
  """(init function, abstract state, state shardings): replicated on every device."""
  tx = steps.make_optimizer(config.train)
  init = functools.partial(steps.init_state, config=config, spec=spec, tx=tx)
  abstract_state = jax.eval_shape(init, rng.key(config.seed, rng.INIT))
  replicated = sharding.replicated(mesh)
  return init, abstract_state, jax.tree.map(lambda _: replicated, abstract_state)


def restore_state(config: ml_collections.ConfigDict, spec: steps.Spec,
                  ckpt: checkpoint_lib.Checkpointer, step: int | None, mesh: jax.sharding.Mesh):
  """The state saved at `step`, placed on `mesh` (any device count).

  step=None: the newest checkpoint that restores completely; damaged newer ones are skipped
  with a warning and moved aside (see checkpoint.Checkpointer.restore_latest).
  """
  _, abstract_state, state_sharding = state_layout(config, spec, mesh)
  abstract_state = checkpoint_lib.abstract_with_shardings(abstract_state, state_sharding)
  if step is None:
    return ckpt.restore_latest(abstract_state)[1]
  return ckpt.restore_state(step, abstract_state)


# ---------------------------------------------------------------------------------------
# Workdir checks
# ---------------------------------------------------------------------------------------
def check_workdir_writable(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_probe_{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise UserError(f'Cannot write to workdir {workdir!r} ({e.strerror}). '
                    f'Pass a --workdir you can write to, with free disk space.') from None


def incompatible_fields(stored: ml_collections.ConfigDict,
                        current: ml_collections.ConfigDict) -> list[str]:
  """Dotted names of fields that differ and that a resumed run may not change."""
  a, b = _flatten(config_lib.to_dict(stored)), _flatten(config_lib.to_dict(current))
  differing = [k for k in sorted(set(a) | set(b))
               if _normalize(a.get(k)) != _normalize(b.get(k))]
  return [k for k in differing if not any(k == f or (f.endswith('.') and k.startswith(f))
                                          for f in RESUMABLE_FIELDS)]


def _flatten(d: dict, prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _normalize(v: Any) -> Any:
  return list(v) if isinstance(v, tuple) else v


# ---------------------------------------------------------------------------------------
# Train and evaluate
# ---------------------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains to config.train.steps (resuming from the workdir's latest checkpoint) and
  returns the final seen/unseen accuracy summary."""
  # --- Config and workdir: fail before loading data or compiling anything. ---
  config_lib.validate(config, jax.device_count())
  check_workdir_writable(workdir)
  ckpt = checkpoint_lib.Checkpointer(workdir, keep=config.train.keep_checkpoints)
  latest, stored_config = ckpt.latest_config()  # Newest readable; (None, None) if fresh.
  if latest is not None:
    bad = incompatible_fields(stored_config, config)
    if bad:
      raise UserError(
          f'Workdir {workdir!r} holds a run (checkpoint step {latest}) whose config differs '
          f'in {", ".join(bad)}. Refusing to overwrite it: use a new --workdir, or the same '
          f'config to resume.')

  # --- Mesh. ---
  mesh = sharding.make_mesh(config.mesh)
  replicated, batch_sharded = sharding.replicated(mesh), sharding.batch_sharded(mesh)

  # --- Input: one preprocessed array per split, replicated on every device. ---
  train_ds, eval_ds = load_splits(config)
  x_NxD = sharding.put_replicated(train_ds.x_NxD, mesh)
  y_N = sharding.put_replicated(train_ds.y_N, mesh)
  data_key, task_key = rng.key(config.seed, rng.DATA), rng.key(config.seed, rng.TASKS)

  # --- Model and state: shapes from eval_shape, shardings derived, init under jit. ---
  spec = steps.make_spec(config, train_ds.num_features, train_ds.num_classes)
  tx = steps.make_optimizer(config.train)
  init, _, state_sharding = state_layout(config, spec, mesh)

  # --- Checkpoint: resume exactly (the data of step k is fold_in(data_key, k)). ---
  if latest is not None:  # The newest checkpoint that restores: `latest` may be damaged.
    state = restore_state(config, spec, ckpt, None, mesh)
  else:
    state = jax.jit(init, out_shardings=state_sharding)(rng.key(config.seed, rng.INIT))
  start = int(jax.device_get(state['step']))

  # --- Steps. ---
  train_step = jax.jit(
      functools.partial(steps.train_step, spec=spec, tx=tx,
                        batch_size=config.train.batch_size, batch_sharding=batch_sharded),
      in_shardings=(state_sharding, replicated, replicated, replicated, replicated),
      out_shardings=(state_sharding, replicated),
      donate_argnums=0)
  sets = evaluate.make_eval_sets(config, mesh, train_ds, eval_ds, config.eval.datasets)
  evaluator = evaluate.Evaluator(config, spec, mesh, sets, config.eval.num_episodes)
  writer = metrics_lib.MetricWriter(workdir, resume_step=start)

  # --- Loop. ---
  total = config.train.steps
  summary: dict[str, float] = {}
  history: list[dict[str, float]] = []  # Train metrics since the last log line.
  pending = None  # (step, device metrics) of the step before the one in flight.
  is_main = jax.process_index() == 0
  bar = tqdm.tqdm(total=total, initial=start, disable=not is_main, mininterval=2.0,
                  desc='train', dynamic_ncols=True)
  last_log_time, last_log_step = time.perf_counter(), start

  def drain():
    """Reads the pending step's metrics (one step late, so the device never waits on us)."""
    nonlocal pending, last_log_time, last_log_step
    if pending is None:
      return
    step, device_metrics = pending
    pending = None
    m = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    if not all(math.isfinite(v) for v in m.values()):
      good = ckpt.latest_step()
      raise UserError(
          f'Training diverged at step {step}: ' +
          ', '.join(f'{k}={v}' for k, v in m.items()) + '. ' +
          (f'The last good checkpoint (step {good}) in {ckpt.directory} is kept; '
           if good is not None else 'No checkpoint was written yet; ') +
          'lower config.train.lr, raise config.train.eps or set config.train.grad_clip, '
          'then rerun (a resumable config change needs a new --workdir).')
    history.append(m)
    if is_due(step, config.train.log_every_steps, total):
      now = time.perf_counter()
      means = {f'train/{k}': float(np.mean([h[k] for h in history])) for k in m}
      means['train/steps_per_sec'] = (step - last_log_step) / max(now - last_log_time, 1e-9)
      writer.write(step, means)
      bar.set_postfix(loss=f'{means["train/loss"]:.4f}', refresh=False)
      history.clear()
      last_log_time, last_log_step = now, step

  try:
    for step in range(start + 1, total + 1):
      state, device_metrics = train_step(state, data_key, task_key, x_NxD, y_N)
      drain()
      pending = (step, device_metrics)
      bar.update(1)
      if is_due(step, config.train.eval_every_steps, total):
        drain()
        summary = evaluator.summary(state['params'])
        writer.write(step, summary)
        if is_main:
          tqdm.tqdm.write(evaluate.format_summary(step, summary, config))
      if is_due(step, config.train.checkpoint_every_steps, total):
        drain()  # Never save a state whose step went non-finite.
        ckpt.save(step, state, config)
    drain()
    if not summary:  # Resumed at the end: report without retraining.
      summary = evaluator.summary(state['params'])
      if is_main:
        tqdm.tqdm.write(evaluate.format_summary(total, summary, config))
  finally:
    bar.close()
    writer.close()
    ckpt.wait()  # Saves in flight complete, so the last good checkpoint is whole.
    ckpt.close()
  return summary
