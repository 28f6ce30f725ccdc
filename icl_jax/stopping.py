"""Stop signals: a scheduler's notice makes training save the step it reached and stop.

SIGTERM (what SLURM, TPU maintenance events and `kill` send), SIGHUP (a closed terminal or
ssh session), SIGUSR1 (SLURM's pre-timeout signal, `sbatch --signal=USR1@120`), SIGUSR2
(submitit's pre-timeout and preemption signal) and a first Ctrl-C (SIGINT) ask training to
save at a step boundary and stop; the
run's status becomes `preempted` and the command exits with status.EXIT_PREEMPTED. A second
Ctrl-C interrupts at once.

Every process of a multi-host run must save the same step (orbax saves together), and a
signal reaches them at different steps, or reaches only some. There JAX's preemption
service decides: jax.distributed installs a SIGTERM notifier that tells the coordination
service, which picks one step all processes have yet to reach (the largest step any has
reached, plus one); `reached_preemption_sync_point(step)` is true on every process at that
step. The other signals are turned into a SIGTERM to the process itself, so every stop goes
through that one agreement; at the agreed step the processes exchange the signals they
received (a collective all of them make there), so every process reports the same one.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from absl import logging
import jax
import numpy as np
from jax.experimental import multihost_utils

# The handlers this module installs; SIGTERM stays with JAX's notifier on several processes.
SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)


def _preemption_service() -> bool:
  """Whether jax.distributed started its preemption service (on by default)."""
  return (jax.process_count() > 1 and jax.distributed.is_initialized()
          and jax.config.jax_enable_preemption_service)


class StopSignals:
  """A context in which the signals above ask for a stop; `requested(step)` at every step.

  Outside the main thread (no handlers can be set there) nothing changes. On several
  processes without JAX's preemption service (jax_enable_preemption_service=False) the
  default handlers stay: the processes could not agree on a step.
  """

  def __init__(self):
    self.name: str | None = None  # The first stop signal received here.
    self._previous: dict[int, Any] = {}
    self._multi = False

  def __enter__(self) -> StopSignals:
    if threading.current_thread() is not threading.main_thread():
      return self
    if jax.process_count() == 1:
      handled = SIGNALS
    elif _preemption_service():
      self._multi = True
      handled = tuple(s for s in SIGNALS if s != signal.SIGTERM)  # JAX's notifier has it.
    else:
      logging.warning('Stop signals are not handled: this multi-process run has no JAX '
                      'preemption service (jax_enable_preemption_service is off).')
      return self
    for sig in handled:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def _handle(self, signum, frame) -> None:
    del frame
    if signum == signal.SIGINT and self.name == 'SIGINT':
      raise KeyboardInterrupt  # Asked twice: the user wants out now.
    if self.name is None:
      self.name = signal.Signals(signum).name
      if self._multi:  # Into the one agreement all processes take part in.
        os.kill(os.getpid(), signal.SIGTERM)

  def before_start(self) -> bool:
    """Whether a stop came before the first step (during data loading or compilation), on
    this process alone: then nothing was trained, and nothing needs saving. (On several
    processes the stop goes through JAX's agreement at the steps that follow.)"""
    return not self._multi and self.name is not None

  def requested(self, step: int) -> bool:
    """Whether to save `step` and stop. Call it at every step, on every process."""
    if self._multi:
      if multihost_utils.reached_preemption_sync_point(step):
        # The signal that started it, from the first process that caught one of ours;
        # none did for a SIGTERM (JAX's notifier took it).
        mine = signal.Signals[self.name].value if self.name else 0
        caught = [int(s) for s in np.ravel(multihost_utils.process_allgather(np.int32(mine)))
                  if s]
        self.name = signal.Signals(caught[0]).name if caught else 'SIGTERM'
        return True
      return False
    return self.name is not None
