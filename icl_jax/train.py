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
    if config.task.seq_len > ds.x_NxD.shape[0]:
      raise UserError(
          f'config.task.seq_len={config.task.seq_len} is longer than the '
          f'{ds.x_NxD.shape[0]} examples of {ds.name}:{ds.split}; use a shorter sequence.')
  return train_ds, eval_ds


# ---------------------------------------------------------------------------------------
# Evaluation on seen and unseen tasks
# ---------------------------------------------------------------------------------------
class MetaTester:
  """In-context accuracy per position on seen tasks (training split, ids in the pool)
  and unseen tasks (held-out split, ids outside it). The episodes are the same at every
  call, so successive evaluations of one run are paired."""

  def __init__(self, config: ml_collections.ConfigDict, spec: steps.Spec, mesh: jax.sharding.Mesh,
               train_ds: data.Dataset, eval_ds: data.Dataset):
    self.config = config
    self.chunk = min(config.eval.num_episodes, config.train.batch_size)
    self.num_chunks = math.ceil(config.eval.num_episodes / self.chunk)
    self.eval_key = rng.key(config.seed, rng.EVAL)
    self.task_key = rng.key(config.seed, rng.TASKS)
    self.splits = {
        'seen': (sharding.put_replicated(train_ds.x_NxD, mesh),
                 sharding.put_replicated(train_ds.y_N, mesh), False),
        'unseen': (sharding.put_replicated(eval_ds.x_NxD, mesh),
                   sharding.put_replicated(eval_ds.y_N, mesh), True),
    }
    self._correct = jax.jit(
        functools.partial(steps.eval_correct, spec=spec, batch_size=self.chunk,
                          batch_sharding=sharding.batch_sharded(mesh)),
        static_argnames='unseen')

  def accuracy_per_position(self, params: Any) -> dict[str, np.ndarray]:
    """{'seen': acc_T, 'unseen': acc_T} averaged over num_chunks * chunk episodes."""
    out = {}
    for name, (x_NxD, y_N, unseen) in self.splits.items():
      split_key = jax.random.fold_in(self.eval_key, int(unseen))
      correct = [self._correct(params, jax.random.fold_in(split_key, i), self.task_key,
                               x_NxD, y_N, unseen=unseen) for i in range(self.num_chunks)]
      out[name] = np.concatenate(jax.device_get(correct)).mean(0)
    return out

  def summarize(self, acc: dict[str, np.ndarray]) -> dict[str, float]:
    first, last = self.config.eval.first_positions, self.config.eval.last_positions
    out = {}
    for name, acc_T in acc.items():
      out[f'{name}/acc_first'] = float(acc_T[:first].mean())
      out[f'{name}/acc_last'] = float(acc_T[-last:].mean())
    return out


def format_summary(step: int, summary: dict[str, float], config: ml_collections.ConfigDict) -> str:
  first, last = config.eval.first_positions, config.eval.last_positions
  parts = [f'{name} tasks: acc first {first} = {summary[name + "/acc_first"]:.3f}, '
           f'last {last} = {summary[name + "/acc_last"]:.3f}' for name in ('seen', 'unseen')]
  return f'step {step} | ' + ' | '.join(parts)


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
  latest = ckpt.latest_step()
  if latest is not None:
    bad = incompatible_fields(ckpt.restore_config(latest), config)
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
  init = functools.partial(steps.init_state, config=config, spec=spec, tx=tx)
  init_key = rng.key(config.seed, rng.INIT)
  abstract_state = jax.eval_shape(init, init_key)
  state_sharding = jax.tree.map(lambda _: replicated, abstract_state)

  # --- Checkpoint: resume exactly (the data of step k is fold_in(data_key, k)). ---
  if latest is not None:
    state = ckpt.restore_state(
        latest, checkpoint_lib.abstract_with_shardings(abstract_state, state_sharding))
  else:
    state = jax.jit(init, out_shardings=state_sharding)(init_key)
  start = int(jax.device_get(state['step']))

  # --- Steps. ---
  train_step = jax.jit(
      functools.partial(steps.train_step, spec=spec, tx=tx,
                        batch_size=config.train.batch_size, batch_sharding=batch_sharded),
      in_shardings=(state_sharding, replicated, replicated, replicated, replicated),
      out_shardings=(state_sharding, replicated),
      donate_argnums=0)
  tester = MetaTester(config, spec, mesh, train_ds, eval_ds)
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
        summary = tester.summarize(tester.accuracy_per_position(state['params']))
        writer.write(step, summary)
        if is_main:
          tqdm.tqdm.write(format_summary(step, summary, config))
      if is_due(step, config.train.checkpoint_every_steps, total):
        drain()  # Never save a state whose step went non-finite.
        ckpt.save(step, state, config)
    drain()
    if not summary:  # Resumed at the end: report without retraining.
      summary = tester.summarize(tester.accuracy_per_position(state['params']))
      if is_main:
        tqdm.tqdm.write(format_summary(total, summary, config))
  finally:
    bar.close()
    writer.close()
    ckpt.wait()  # Saves in flight complete, so the last good checkpoint is whole.
    ckpt.close()
  return summary
