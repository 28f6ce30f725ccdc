"""Process settings the project applies itself, before JAX starts its CPU runtime.

`configure()` is the first thing every entry point does (icl_jax.main, launch.sweep, the
benchmarks). It must run before XLA's CPU client exists: its worker threads pick their
malloc arena on their first allocation, which happens when the backend starts.

The allocator. XLA:CPU allocates each executable's temporary buffer afresh on every call
with posix_memalign (about 100 MB for Garg et al.'s `tiny` step). glibc serves anything
that large with mmap and gives it back with munmap when it is freed, so every step
page-faults the whole buffer in again: ~23k minor faults and a third of the CPU time of a
`tiny` step went to the kernel (measured: 5.2M faults and 16 s of system time in 230
steps). Worker threads allocate from per-thread arenas, and glibc falls back to mmap for
a request larger than an arena's 64 MB heap whatever M_MMAP_MAX says, so all three
settings are needed: one arena (the main one, grown by sbrk), no mmap, and no trimming,
so a freed buffer stays mapped and the next step reuses the same pages.
Measured on a 2-core CPU: system time 16 s -> 1 s, page faults 5.2M -> 0.16M, `tiny`
steps/s +60% (see README, Benchmarks). One arena costs lock contention only where many
threads allocate at once, which XLA:CPU's few large buffers per step do not.

Applied only where JAX will run on the CPU (no GPU/TPU plugin installed, or
JAX_PLATFORMS=cpu) and glibc is the allocator; ICL_JAX_MALLOC=system, or any MALLOC_*
setting of one's own in the environment, leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_ACCELERATOR_PLUGINS = ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm60_plugin',
                        'jax_rocm7_plugin', 'libtpu')

_applied: dict[str, object] | None = None


def runs_on_cpu() -> bool:
  """Whether JAX will pick the CPU: asked without importing jax or starting a backend."""
  platforms = os.environ.get('JAX_PLATFORMS', '')
  if platforms:
    return platforms.split(',')[0].strip() == 'cpu'
  return not any(importlib.util.find_spec(p) is not None for p in _ACCELERATOR_PLUGINS)


def configure_allocator() -> bool:
  """Keeps XLA:CPU's per-step buffers mapped between steps (see the module docstring).

  Returns whether the settings were applied.
  """
  if os.environ.get('ICL_JAX_MALLOC', '') == 'system':
    return False
  if any(k.startswith('MALLOC_') or k == 'GLIBC_TUNABLES' for k in os.environ):
    return False  # Someone tuned malloc already: theirs wins.
  if not sys.platform.startswith('linux') or not runs_on_cpu():
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    gnu_libc_version = libc.gnu_get_libc_version  # Absent in musl, whose mallopt is a no-op.
  except (OSError, AttributeError):
    return False
  del gnu_libc_version
  ok = all(libc.mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
  return ok


def default_compilation_cache() -> str:
  """$ICL_JAX_COMPILATION_CACHE, else JAX's own $JAX_COMPILATION_CACHE_DIR, else
  $XDG_CACHE_HOME/icl_jax/jax (~/.cache/icl_jax/jax)."""
  for name in ('ICL_JAX_COMPILATION_CACHE', 'JAX_COMPILATION_CACHE_DIR'):
    if name in os.environ:
      return os.environ[name]
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'icl_jax', 'jax')


def enable_compilation_cache(path: str) -> str | None:
  """Turns on JAX's persistent compilation cache in `path` ('' leaves it off); returns the
  directory used. A cache is only a speed-up: one that cannot be created is skipped with
  a warning, never an error."""
  if not path:
    return None
  path = os.path.abspath(os.path.expanduser(path))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    print(f'warning: no compilation cache: cannot create {path} ({e.strerror}); pass '
          f'--compilation_cache=DIR to place it elsewhere.', file=sys.stderr)
    return None
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', path)
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
    # Programs that compile in under a second are not worth a disk entry.
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  return path


def configure() -> dict[str, object]:
  """Applies the project's process settings once; returns what was applied (for logs)."""
  global _applied
  if _applied is None:
    if 'jax' in sys.modules and _backend_started():
      # Too late for XLA's threads (they already chose their arenas): say so, don't fail.
      _applied = {'malloc': False, 'reason': 'jax backend already started'}
    else:
      _applied = {'malloc': configure_allocator()}
  return dict(_applied)


def _backend_started() -> bool:
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except Exception:  # pylint: disable=broad-except
    return False
