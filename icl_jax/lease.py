"""Workdir leases: at most one trainer per workdir at a time; no JAX.

A trainer holds `<workdir>/lease.json` ({host, pid, pid_start, started, heartbeat}, on SLURM
{slurm_job, slurm_restart}, and `step`, the last step it logged) while it trains (process 0
of a multi-host run holds it for all). A second trainer, a second submission whose
predecessor still runs, or a relaunched sweep finds it and refuses (LeaseHeld, one line
naming the holder) instead of interleaving metrics and racing orbax's checkpoint rotation. A
lease is stale, and is taken over with a warning, when its holder is gone: a process on this
host that no longer exists (kill -9, a crash, a lost node's restart), an earlier run of this
same SLURM job (a requeue, perhaps on another node: SLURM runs one at a time), or a
heartbeat older than STALE_AFTER_S from any host (a shared disk, another node).

Taking a lease is atomic on POSIX and NFS: the content is written to a temporary file,
then hard-linked to `lease.json`, which fails if the name exists (where hard links are
refused, as on gcsfuse, an exclusive create stands in: `_create_exclusively`). The holder
refreshes the heartbeat every HEARTBEAT_S from a background thread and checks before every
checkpoint that the lease is still its own (`Lease.check`). The same thread writes the step the
training loop reports at its log steps (`Lease.progress`), at most every PROGRESS_S: launchers
show a running group's progress from it (`progress_step`), without reading the log's text.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
from typing import Any

from icl_jax import files
from icl_jax.errors import UserError

LEASE_FILE = 'lease.json'
HEARTBEAT_S = 30.0
# A new logged step reaches the lease file this soon: often enough for a launcher's console,
# rarely enough that a group of many runs does not keep a shared disk busy.
PROGRESS_S = 5.0
# A holder on another host is presumed gone after this long without a heartbeat: many
# heartbeats, so a slow shared disk or a long checkpoint never makes a live lease stale.
STALE_AFTER_S = 300.0
_UNREADABLE_RECHECK_S = 0.5


class LeaseHeld(UserError):
  """Another live trainer holds the workdir."""


def _pid_start(pid: int) -> int | None:
  """When process `pid` started (clock ticks since boot), so a reused pid is not taken for
  the lease's holder; None where /proc does not say."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      # The command name (field 2) may hold spaces: fields after its ')' are fixed.
      return int(f.read().rsplit(')', 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def slurm_job() -> tuple[str, int] | None:
  """(job, restart count) of the SLURM job this process runs in: an array task's
  `<array job>_<task>`, else the job id; None outside SLURM."""
  env = os.environ
  if 'SLURM_ARRAY_JOB_ID' in env and 'SLURM_ARRAY_TASK_ID' in env:
    job = f'{env["SLURM_ARRAY_JOB_ID"]}_{env["SLURM_ARRAY_TASK_ID"]}'
  elif 'SLURM_JOB_ID' in env:
    job = env['SLURM_JOB_ID']
  else:
    return None
  try:
    return job, int(env.get('SLURM_RESTART_COUNT', '0'))
  except ValueError:
    return job, 0


def _me() -> dict[str, Any]:
  now = time.time()
  me = {'host': socket.gethostname(), 'pid': os.getpid(), 'pid_start': _pid_start(os.getpid()),
        'started': now, 'heartbeat': now}
  job = slurm_job()
  if job is not None:
    me['slurm_job'], me['slurm_restart'] = job
  return me


def read(workdir: str) -> dict[str, Any] | None:
  holder = files.read_json(os.path.join(workdir, LEASE_FILE))
  return holder if isinstance(holder, dict) else None


def _is_mine(holder: dict[str, Any]) -> bool:
  return holder.get('host') == socket.gethostname() and holder.get('pid') == os.getpid()


def stale_reason(holder: dict[str, Any] | None, now: float | None = None) -> str | None:
  """Why the lease's holder is gone, or None while it may still train."""
  if holder is None:
    return 'the lease file is unreadable'
  now = time.time() if now is None else now
  job = slurm_job()
  restart = holder.get('slurm_restart')
  if (job is not None and holder.get('slurm_job') == job[0] and isinstance(restart, int)
      and restart < job[1]):
    # SLURM runs one instance of a job: this requeued one replaced the holder.
    return f'its SLURM job {job[0]} was requeued (restart {job[1]} replaces {restart})'
  pid, host = holder.get('pid'), holder.get('host')
  if host == socket.gethostname() and isinstance(pid, int):
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return f'its process {pid} no longer exists'
    except PermissionError:
      pass  # Another user's live process.
    start = holder.get('pid_start')
    if start is not None and _pid_start(pid) not in (None, start):
      return f'process {pid} is another program now (the holder exited)'
    return None
  heartbeat = holder.get('heartbeat')
  if not isinstance(heartbeat, (int, float)):
    return 'it has no heartbeat'
  if now - heartbeat > STALE_AFTER_S:
    return f'its last heartbeat was {now - heartbeat:.0f} s ago (stale after {STALE_AFTER_S:.0f} s)'
  return None


def progress_step(workdir: str) -> int | None:
  """The last step the lease's live holder logged; None if it holds none or logged none yet."""
  holder = live_holder(workdir)
  step = holder.get('step') if holder else None
  return step if isinstance(step, int) else None


def describe(holder: dict[str, Any], now: float | None = None) -> str:
  now = time.time() if now is None else now
  started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('started', 0)))
  beat = holder.get('heartbeat')
  ago = f', heartbeat {now - beat:.0f} s ago' if isinstance(beat, (int, float)) else ''
  return f'host {holder.get("host")}, pid {holder.get("pid")}, since {started}{ago}'


def live_holder(workdir: str) -> dict[str, Any] | None:
  """The holder of the workdir's lease if it is live and not this process, else None."""
  if not os.path.exists(os.path.join(workdir, LEASE_FILE)):
    return None
  holder = read(workdir)
  if holder is None or _is_mine(holder) or stale_reason(holder) is not None:
    return None
  return holder


def held(workdir: str, holder: dict[str, Any]) -> LeaseHeld:
  """The error for a workdir that a live trainer holds."""
  return LeaseHeld(
      f'Workdir {workdir} is being trained by another process ({describe(holder)}). Wait '
      f'for it to finish or stop it (its checkpoint is kept), or pass another --workdir. A '
      f'lease whose holder died is taken over by itself.')


def check_free(workdir: str) -> None:
  """LeaseHeld if a live trainer holds the workdir: a cheap look before touching anything
  (`Lease.acquire` is the atomic take)."""
  holder = live_holder(workdir)
  if holder is not None:
    raise held(workdir, holder)


class Lease:
  """This process's lease on a workdir; `acquire` takes it, `release` gives it back."""

  def __init__(self, workdir: str, record: dict[str, Any]):
    self.workdir, self.path, self._record = workdir, os.path.join(workdir, LEASE_FILE), record
    self._stop, self._news = threading.Event(), threading.Event()
    self._lock = threading.Lock()  # The record is changed by the loop, written by the thread.
    self._written = time.monotonic()
    self._thread = threading.Thread(target=self._beat, name=f'lease:{workdir}', daemon=True)
    self._thread.start()

  @classmethod
  def acquire(cls, workdir: str) -> Lease:
    """Takes the lease, over a stale one (with a warning); LeaseHeld if a live trainer has
    it. The workdir must exist."""
    path = os.path.join(workdir, LEASE_FILE)
    for _ in range(3):  # A race with another taker is lost at most once or twice.
      record = _me()
      if _create_exclusively(path, record):
        return cls(workdir, record)
      holder = read(workdir)
      if holder is None:  # Perhaps created a moment ago without its content yet: look again.
        time.sleep(_UNREADABLE_RECHECK_S)
        holder = read(workdir)
      if holder is not None and _is_mine(holder):
        raise RuntimeError(f'This process already holds the lease of {workdir}.')
      reason = stale_reason(holder)
      if reason is None:
        raise held(workdir, holder)
      logging.warning('Taking over the lease of %s: %s (was: %s).', workdir, reason,
                      describe(holder) if holder else 'unreadable')
      _remove_if(path, holder)
    raise LeaseHeld(f'Workdir {workdir}: another process took its lease at the same time; '
                    f'only one trainer may use a workdir.')

  def _beat(self) -> None:
    """Rewrites the lease every HEARTBEAT_S, and soon after the loop reports a new step."""
    while not self._stop.is_set():
      self._news.wait(max(self._written + HEARTBEAT_S - time.monotonic(), 0))
      if self._stop.is_set():
        return
      self._news.clear()
      holder = read(self.workdir)
      if holder is None or not _is_mine(holder):
        return  # Lost: `check` reports it at the next checkpoint.
      with self._lock:
        self._record['heartbeat'] = time.time()
        record = dict(self._record)
      self._written = time.monotonic()
      try:
        files.write_json(self.path, record)
      except OSError:
        pass  # A full or flaky disk: the next beat tries again.

  def progress(self, step: int) -> None:
    """Notes the step the run just logged. Cheap, no file access: the heartbeat thread writes
    it, at once for the first one or if the lease was last written PROGRESS_S ago, else with
    a later step."""
    with self._lock:
      first = 'step' not in self._record
      self._record['step'] = step
    if first or time.monotonic() - self._written >= PROGRESS_S:
      self._news.set()

  def check(self) -> None:
    """Raises LeaseHeld if another process took this workdir over (it judged this one gone,
    e.g. after a long freeze): writing on would interleave two trainers."""
    holder = read(self.workdir)
    if holder is None or not _is_mine(holder):
      raise LeaseHeld(f'Lost the lease of workdir {self.workdir} to '
                      f'{describe(holder) if holder else "nobody (the file is gone)"}; '
                      f'stopping without writing more. Rerun when that trainer is done.')

  def release(self) -> None:
    self._stop.set()
    self._news.set()
    self._thread.join(timeout=5)
    holder = read(self.workdir)
    if holder is not None and _is_mine(holder):
      _remove_if(self.path, holder)


def _create_exclusively(path: str, record: dict[str, Any]) -> bool:
  """Writes `record` to `path` if no file has that name; False if one does.

  A hard link of a complete temporary file makes the content appear with the name, at
  once. Filesystems without hard links (gcsfuse, some FUSE and SMB mounts) get an
  O_EXCL create instead, whose content follows a moment later: a reader may find it
  empty, so an unreadable lease is read again before it counts as stale.
  """
  tmp = f'{path}.new.{record["host"]}.{record["pid"]}'
  files.write_json(tmp, record)
  try:
    os.link(tmp, path)
    return True
  except FileExistsError:
    return False
  except OSError as e:
    if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
      raise
  finally:
    os.remove(tmp)
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, 'w') as f:
    json.dump(record, f)
  return True


def _remove_if(path: str, holder: dict[str, Any] | None) -> None:
  """Removes the lease file if it still holds `holder` (another taker may have replaced it
  since it was read)."""
  try:
    with open(path) as f:
      current = json.load(f)
  except (OSError, json.JSONDecodeError):
    current = None
  if current == holder:
    try:
      os.remove(path)
    except FileNotFoundError:
      pass
