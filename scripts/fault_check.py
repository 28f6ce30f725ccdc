r"""Kills a training run with SIGKILL at random moments and checks that nothing is lost.

  .venv/bin/python scripts/fault_check.py [--kills 10] [--seed 0] [--root DIR]

Trains `experiments/gpicl_digits.py:smoke` for 60 steps with a checkpoint every 5 steps as
a subprocess, kills it `--kills` times (random delays after start, some of them while a
checkpoint is being saved: the kill follows the appearance of an
`<step>.orbax-checkpoint-tmp` directory), restarts it in the same workdir each time, lets
the last restart finish, and compares the final parameters bit for bit with an
uninterrupted run of the same config in another workdir. One line per kill, then a JSON
summary line; exits 1 on any mismatch:

  kill 3/10: 5.21s after start, during the save of step 25 | latest complete step 20 | resumed at 20
  {"kills": 10, "exact_resumes": 10, "params_equal": true, ...}

A resume is exact when the restarted run starts from the latest complete checkpoint on disk
at the kill (0 when there is none): never from a half-written one, and no complete one lost.
Every subprocess sees one CPU device (so both runs have the same device count), shares one
TFDS data dir (digits is prepared once) and one JAX compilation cache (restarts do not
recompile, so a run restarts in seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

TOTAL_STEPS = 60
CHECKPOINT_EVERY = 5
TMP_MARKER = '.orbax-checkpoint-tmp'
POLL_S = 0.002
# Share of kills timed to a checkpoint save; the others land after a uniform random delay.
SAVE_KILL_FRACTION = 0.4
LEG_TIMEOUT_S = 600
# The first progress line in a log file, `train: 20/60 steps (33%), starting`, shows the
# step resumed from (icl_jax/progress.py).
_BAR_RE = re.compile(r'train[^:\n]*: (\d+)/(\d+) steps \(\d+%\), starting')


@dataclasses.dataclass(frozen=True)
class Workspace:
  """Where the runs of one check live; data_dir and cache_dir are shared by all of them."""
  root: str
  data_dir: str
  cache_dir: str

  @classmethod
  def create(cls, root: str, data_dir: str | None = None) -> 'Workspace':
    os.makedirs(root, exist_ok=True)
    ws = cls(root, data_dir or os.path.join(root, 'tfds'), os.path.join(root, 'jax_cache'))
    os.makedirs(os.path.join(root, 'logs'), exist_ok=True)
    return ws

  def log_path(self, name: str) -> str:
    return os.path.join(self.root, 'logs', f'{name}.log')


@dataclasses.dataclass
class Kill:
  """One SIGKILL and what the restart after it did."""
  index: int
  mode: str  # 'random' or 'save'.
  seconds: float  # After the start of the subprocess.
  saving: int | None  # Step whose save was in flight at the kill (its tmp dir was left).
  latest_before: int  # Latest complete checkpoint on disk after the kill (0: none).
  timed_on: int | None = None  # Mode 'save': the step whose save start timed the kill.
  resumed_at: int | None = None  # Step the next run that started training resumed from.

  @property
  def exact(self) -> bool:
    return self.resumed_at == self.latest_before

  def line(self, kills: int) -> str:
    moment = f'{self.seconds:.2f}s after start'
    if self.saving is not None:
      moment += f', during the save of step {self.saving}'
    elif self.timed_on is not None and self.timed_on <= self.latest_before:
      moment += f', just after the save of step {self.timed_on} completed'
    elif self.timed_on is not None:
      # Orbax first deletes an unfinished save of the same step left by an earlier kill.
      moment += f', as the save of step {self.timed_on} began (clearing an older attempt)'
    return (f'kill {self.index}/{kills}: {moment} | latest complete step {self.latest_before} | '
            f'resumed at {self.resumed_at}' + ('' if self.exact else '  <-- NOT EXACT'))


def train_command(ws: Workspace, workdir: str) -> list[str]:
  return [sys.executable, '-m', 'icl_jax.main',
          '--config', 'experiments/gpicl_digits.py:smoke', '--workdir', workdir,
          f'--config.data.data_dir={ws.data_dir}',
          f'--config.train.steps={TOTAL_STEPS}',
          f'--config.train.checkpoint_every_steps={CHECKPOINT_EVERY}',
          '--config.train.log_every_steps=5',
          '--config.train.eval_every_steps=1000']  # Evaluation only at the last step.


def one_device_xla_flags() -> str:
  """One CPU device; other flags of this process (e.g. the tests' compile settings) kept."""
  kept = [f for f in os.environ.get('XLA_FLAGS', '').split()
          if not f.startswith('--xla_force_host_platform_device_count')]
  return ' '.join(['--xla_force_host_platform_device_count=1'] + kept)


def subprocess_env(ws: Workspace) -> dict[str, str]:
  env = dict(os.environ)
  env.update({
      'XLA_FLAGS': one_device_xla_flags(),
      'JAX_COMPILATION_CACHE_DIR': ws.cache_dir,
      'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
      'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '-1',
      'TF_CPP_MIN_LOG_LEVEL': '3',
  })
  return env


def complete_steps(workdir: str) -> list[int]:
  """The steps orbax lists: directories named by an integer (a tmp dir never is)."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def tmp_dirs(workdir: str, since_ns: int = 0) -> set[str]:
  """Unfinished saves last modified at or after since_ns (wall clock).

  A save of this run is told from a stale one of the same step, left by an earlier kill, by
  its modification time: orbax removes the stale directory and creates a new one.
  """
  directory = os.path.join(workdir, 'checkpoints')
  out = set()
  for name in os.listdir(directory) if os.path.isdir(directory) else ():
    if TMP_MARKER in name:
      try:
        if os.stat(os.path.join(directory, name)).st_mtime_ns >= since_ns:
          out.add(name)
      except FileNotFoundError:
        pass  # Renamed (the save completed) between listdir and stat.
  return out


def tmp_step(name: str) -> int:
  return int(name.split('.', 1)[0])


def start(ws: Workspace, workdir: str,
          log_path: str) -> tuple[subprocess.Popen, float, int]:
  """The training subprocess, its start on the monotonic clock and on the wall clock (ns)."""
  since_ns = time.time_ns()
  with open(log_path, 'w') as log:  # The child keeps its own copy of the descriptor.
    proc = subprocess.Popen(train_command(ws, workdir), cwd=REPO, env=subprocess_env(ws),
                            stdout=log, stderr=subprocess.STDOUT)
  return proc, time.monotonic(), since_ns


def resumed_step(log_path: str) -> int | None:
  """The step a run started training from, or None if it was killed before that."""
  with open(log_path, errors='replace') as f:
    match = _BAR_RE.search(f.read())
  return int(match.group(1)) if match else None


def tail(log_path: str, chars: int = 3000) -> str:
  with open(log_path, errors='replace') as f:
    return f.read()[-chars:]


def run_uninterrupted(ws: Workspace, workdir: str) -> float:
  """Trains to the end without a kill; returns the wall time. Also fills the shared caches."""
  log_path = ws.log_path(os.path.basename(workdir))
  proc, t0, _ = start(ws, workdir, log_path)
  if proc.wait(timeout=LEG_TIMEOUT_S) != 0:
    raise RuntimeError(f'Run in {workdir} failed (exit {proc.returncode}):\n{tail(log_path)}')
  return time.monotonic() - t0


def kill_when(proc: subprocess.Popen, t0: float, since_ns: int, workdir: str,
              should_kill: Callable[[float, dict[str, float]], bool]
              ) -> tuple[float, int | None, dict[str, float]]:
  """Polls until should_kill(seconds since start, {tmp dir: seconds it appeared}), SIGKILLs;
  returns the moment, the step whose save the kill interrupted (None if none), and
  {tmp dir: when it appeared} for the saves of this run. since_ns: the run's start on the
  wall clock.

  Always kills when the save of the last step starts, so a run never finishes before its
  kill whatever the random draw.
  """
  seen: dict[str, float] = {}
  while True:
    now = time.monotonic() - t0
    for name in tmp_dirs(workdir, since_ns):
      seen.setdefault(name, now)
    if should_kill(now, seen) or any(tmp_step(name) == TOTAL_STEPS for name in seen):
      break
    if proc.poll() is not None:
      raise RuntimeError(f'The run ended by itself (exit {proc.returncode}) before its kill.')
    time.sleep(POLL_S)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  interrupted = [tmp_step(name) for name in tmp_dirs(workdir, since_ns)]
  return now, max(interrupted, default=None), seen


def kill_and_restart(ws: Workspace, workdir: str, kills: int, seed: int,
                     report: Callable[[str], None] = print) -> list[Kill]:
  """Kills a run `kills` times, restarting it in `workdir`, then lets it finish.

  The first kill is always during a save (as the second save starts), which also times the
  start-up and the save interval; later random delays are drawn up to the expected end of
  the run, so they land in start-up (restore included), training and saves.
  """
  rng = random.Random(seed)
  startup_s, save_interval_s = None, None
  done: list[Kill] = []
  pending: list[Kill] = []  # Kills whose restart has not yet shown where it resumed.

  def resolve(log_path: str) -> None:
    step = resumed_step(log_path)
    if step is None:
      return  # Killed before training started: nothing changed on disk, ask the next run.
    for k in pending:
      k.resumed_at = step
      report(k.line(kills))
    done.extend(pending)
    pending.clear()

  for i in range(1, kills + 1):
    log_path = ws.log_path(f'leg_{i:02d}')
    latest = (complete_steps(workdir) or [0])[-1]
    proc, t0, since_ns = start(ws, workdir, log_path)
    if i == 1 or rng.random() < SAVE_KILL_FRACTION:
      mode = 'save'
      # Kill during the n-th save of this run, up to 50 ms after it starts (a save takes
      # ~200 ms here); the first kill lands as the second save starts.
      nth = 2 if i == 1 else rng.randint(1, 3)
      extra_s = 0.0 if i == 1 else rng.uniform(0.0, 0.05)

      def should_kill(now, seen, nth=nth, extra_s=extra_s):
        starts = sorted(seen.values())
        return len(starts) >= nth and now >= starts[nth - 1] + extra_s
    else:
      mode = 'random'
      remaining_saves = (TOTAL_STEPS - latest) / CHECKPOINT_EVERY
      end_s = startup_s + remaining_saves * save_interval_s  # When this run should finish.
      # Start-up (imports, data, restore) outlasts training here, so half of the random
      # kills are drawn from the training phase alone.
      delay_s = rng.uniform(rng.choice([0.2, startup_s]), end_s)
      should_kill = lambda now, seen, delay_s=delay_s: now >= delay_s
    seconds, saving, seen = kill_when(proc, t0, since_ns, workdir, should_kill)
    starts = sorted(seen, key=seen.get)  # The saves of this run, in order.
    if startup_s is None:  # Leg 1 saw two saves start: time start-up and the save interval.
      first, second = seen[starts[0]], seen[starts[1]]
      startup_s, save_interval_s = first, max(second - first, 0.05)
    timed_on = (tmp_step(starts[min(nth, len(starts)) - 1])
                if mode == 'save' and starts else None)
    resolve(log_path)  # Where this run resumed tells what the previous kills left behind.
    pending.append(Kill(i, mode, seconds, saving, (complete_steps(workdir) or [0])[-1],
                        timed_on))

  log_path = ws.log_path('final')
  proc, _, _ = start(ws, workdir, log_path)
  if proc.wait(timeout=LEG_TIMEOUT_S) != 0:
    raise RuntimeError(f'The final restart failed (exit {proc.returncode}):\n{tail(log_path)}')
  resolve(log_path)
  return done


def final_params(workdir: str):
  """(step, params as numpy) of a workdir's latest checkpoint, through icl_jax's own restore."""
  import jax  # pylint: disable=g-import-not-at-top
  from icl_jax import recovery  # pylint: disable=g-import-not-at-top
  from icl_jax import sharding  # pylint: disable=g-import-not-at-top
  from icl_jax import store as store_lib  # pylint: disable=g-import-not-at-top
  from icl_jax import workload  # pylint: disable=g-import-not-at-top
  reader = recovery.Recovery(store_lib.Store(workdir, read_only=True))
  try:
    step = reader.store.latest_step()
    config = reader.read_config(step)
    config.mesh.data = 1
    abstract = workload.build(config).abstract_on(sharding.make_mesh(config.mesh))
    return step, jax.device_get(reader.store.restore_state(step, abstract)['params'])
  finally:
    reader.store.close()


def params_equal(params_a, params_b) -> bool:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  leaves_a, tree_a = jax.tree.flatten(params_a)
  leaves_b, tree_b = jax.tree.flatten(params_b)
  return tree_a == tree_b and all(np.array_equal(a, b) for a, b in zip(leaves_a, leaves_b))


def check(root: str, kills: int, seed: int, data_dir: str | None = None,
          report: Callable[[str], None] = print) -> dict:
  """The whole check; returns the summary (see the module docstring)."""
  t0 = time.monotonic()
  ws = Workspace.create(root, data_dir)
  straight, killed = os.path.join(root, 'straight'), os.path.join(root, 'killed')
  straight_s = run_uninterrupted(ws, straight)
  report(f'uninterrupted run: {straight_s:.1f}s (compiles; restarts reuse the cache)')
  records = kill_and_restart(ws, killed, kills, seed, report)
  step_a, params_a = final_params(straight)
  step_b, params_b = final_params(killed)
  return {
      'kills': len(records),
      'exact_resumes': sum(k.exact for k in records),
      'params_equal': step_a == step_b == TOTAL_STEPS and params_equal(params_a, params_b),
      'kills_during_save': sum(k.saving is not None for k in records),
      'final_step': step_b,
      'tmp_dirs_left': sorted(tmp_dirs(killed)),
      'wall_s': round(time.monotonic() - t0, 1),
  }


def passed(summary: dict, kills: int) -> bool:
  return (summary['params_equal'] and summary['kills'] == kills and
          summary['exact_resumes'] == kills)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--kills', type=int, default=10)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--root', default=None,
                      help='Keep the workdirs and logs here (default: a temp dir, removed).')
  parser.add_argument('--data_dir', default=None, help='TFDS data dir (default: in root).')
  args = parser.parse_args()
  os.environ['XLA_FLAGS'] = one_device_xla_flags()  # This process too.
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)  # Orbax warns that read-only managers do not save.
  if args.root:
    summary = check(args.root, args.kills, args.seed, args.data_dir)
  else:
    with tempfile.TemporaryDirectory(prefix='fault_check_') as root:
      summary = check(root, args.kills, args.seed, args.data_dir)
  print(json.dumps(summary), flush=True)
  return 0 if passed(summary, args.kills) else 1


if __name__ == '__main__':
  sys.exit(main())
