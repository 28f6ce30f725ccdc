"""Progress of long work: a tqdm bar in a terminal, plain lines in a file.

A bar redraws itself with carriage returns, which a log file (CI, SLURM's `--output`, a
sweep's group log) keeps as one endless line. Where stderr is not a terminal, progress is
a line every LINE_INTERVAL_S seconds instead (and one at the end), with the same numbers.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import tqdm

LINE_INTERVAL_S = 30.0


def interactive() -> bool:
  return sys.stderr.isatty()


def say(message: str) -> None:
  """One line to stderr that never breaks a bar being drawn."""
  tqdm.tqdm.write(message, file=sys.stderr)


class Progress:
  """tqdm's interface (update, set_postfix, close) for both kinds of output."""

  def __init__(self, total: int, desc: str, initial: int = 0, unit: str = 'step',
               disable: bool = False):
    self.total, self.desc, self.n, self.unit = total, desc, initial, unit
    self._initial, self._postfix = initial, ''
    self._disabled = disable
    self._bar = None
    if interactive() and not disable:
      self._bar = tqdm.tqdm(total=total, initial=initial, desc=desc, unit=unit,
                            mininterval=1.0, dynamic_ncols=True)
    self._start = self._last_line = time.monotonic()
    if self._bar is None and not disable:
      say(f'{desc}: {initial}/{total} {unit}s ({100 * initial / max(total, 1):.0f}%), starting')

  def update(self, n: int = 1) -> None:
    self.n += n
    if self._bar is not None:
      self._bar.update(n)
    elif not self._disabled and time.monotonic() - self._last_line >= LINE_INTERVAL_S:
      self._line()

  def set_postfix(self, **values: Any) -> None:
    self._postfix = ', '.join(f'{k} {v}' for k, v in values.items())
    if self._bar is not None:
      self._bar.set_postfix(values, refresh=False)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    elif not self._disabled and self.n > self._initial:
      self._line()
    self._disabled = True

  def _line(self) -> None:
    self._last_line = now = time.monotonic()
    done = self.n - self._initial
    rate = done / max(now - self._start, 1e-9)
    left = (self.total - self.n) / rate if rate > 0 else float('inf')
    percent = 100 * self.n / max(self.total, 1)
    fields = [f'{self.desc}: {self.n}/{self.total} {self.unit}s ({percent:.0f}%)',
              f'{rate:.3g} {self.unit}s/s', f'{format_seconds(now - self._start)} elapsed',
              f'ETA {format_seconds(left)}']
    say(', '.join(fields + ([self._postfix] if self._postfix else [])))


def format_seconds(seconds: float) -> str:
  if seconds == float('inf'):
    return '?'
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f'{hours}h{minutes:02d}m{secs:02d}s' if hours else f'{minutes}m{secs:02d}s'
