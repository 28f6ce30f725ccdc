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
steps/s +60% (see docs/benchmarks.md). One arena costs lock contention only where many
threads allocate at once, which XLA:CPU's few large buffers per step do not.

Applied only where JAX will run on the CPU (no GPU/TPU plugin installed, or
JAX_PLATFORMS=cpu) and glibc is the allocator; ICL_JAX_MALLOC=system, or any MALLOC_*
setting of one's own in the environment, leaves malloc alone.

The log filters. `install_log_filters()` drops the noise of libraries that the project
reports itself in one line: orbax's tracebacks for a failed background save (the store
raises SaveFailed), its notices on every read-only manager, the late completions of a
failed restore (a wall of 'Event loop is closed' tracebacks after the one warning that
matters), and TFDS's notice before every first preparation of a dataset. Each entry point
installs them once, at program start (`start`); so does `icl_jax.load`, the API's entry.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import logging
import os
import sys

from icl_jax.errors import UserError

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_ACCELERATOR_PLUGINS = ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm60_plugin',
                        'jax_rocm7_plugin', 'libtpu')

_applied: dict[str, object] | None = None
_filters_installed = False


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
  """Applies the project's process settings once; returns what was applied (for logs).
  Only before jax is imported: after that its CPU threads may have chosen their arenas."""
  global _applied
  if _applied is None:
    if 'jax' in sys.modules:
      _applied = {'malloc': False, 'reason': 'jax was imported first'}
    else:
      _applied = {'malloc': configure_allocator()}
  return dict(_applied)


# Messages dropped by install_log_filters, by logger: orbax's reports of a failed
# background save (the store's SaveFailed says it in one line), its notices on read-only
# managers (a reader asked for exactly that), and TFDS's notice before a first preparation.
_DROPPED = {
    'absl': (lambda m: any(n in m for n in ('in background save thread',
                                            '_SignalingThread.run() raised an exception',
                                            'Save Finalize thread'))
             or m.startswith(('CheckpointManagerOptions.read_only=True',
                              'Given directory is read only'))
             or (m.startswith('Variant folder') and 'has no dataset_info.json' in m)),
    # Tensorstore reads (a damaged checkpoint) and writes (a full disk) completing after
    # orbax closed its event loop.
    'asyncio': (lambda m: 'was never retrieved' in m
                and ('async_deserialize' in m or '.orbax-checkpoint-tmp' in m)),
}


def install_log_filters() -> None:
  """Drops the library noise above, once per process (see the module docstring)."""
  global _filters_installed
  if _filters_installed:
    return
  _filters_installed = True
  for name, dropped in _DROPPED.items():
    logging.getLogger(name).addFilter(
        lambda record, dropped=dropped: not dropped(record.getMessage()))
  previous_hook = sys.unraisablehook

  def hook(unraisable):
    e = unraisable.exc_value
    if not (isinstance(e, RuntimeError) and str(e) == 'Event loop is closed'):
      previous_hook(unraisable)

  sys.unraisablehook = hook


def start(compilation_cache: str = '', quiet: bool = True) -> None:
  """What every program does first once its flags are read: the log filters, the
  verbosity (quiet: orbax and TFDS log every save and read at INFO; --verbosity=0 brings
  them back), then the compilation cache ('' leaves it off)."""
  install_log_filters()
  if quiet:
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    absl_logging.set_verbosity(absl_logging.WARNING)
  enable_compilation_cache(compilation_cache)


def check_backend() -> None:
  """UserError, instead of JAX's traceback, where JAX cannot start a backend: typically
  JAX_PLATFORMS naming a platform this machine lacks or whose plugin is not installed.
  (After jax.distributed, which must come before any backend.)"""
  import jax  # pylint: disable=g-import-not-at-top
  try:
    jax.devices()
  except Exception as e:  # pylint: disable=broad-except
    why = ' '.join(str(e).split())[:200] or type(e).__name__
    platforms = os.environ.get('JAX_PLATFORMS', '')
    if platforms:
      raise UserError(
          f'JAX cannot start the platform that JAX_PLATFORMS={platforms!r} names ({why}): this '
          f'machine lacks it, or its jax plugin is not installed (pip install '
          f'"icl_jax[cuda13]" for NVIDIA GPUs, "icl_jax[tpu]" for TPUs). Unset JAX_PLATFORMS to '
          f'use what this machine has.') from None
    raise UserError(f'JAX cannot start its backend ({why}); check the jax installation '
                    f'(pip install -U jax).') from None


def initialize_distributed() -> None:
  """Starts JAX's multi-controller runtime when the launcher asks for it
  (ICL_JAX_DISTRIBUTED=1): from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
  JAX_PROCESS_ID where set, else from what JAX detects (SLURM, Cloud TPU)."""
  if os.environ.get('ICL_JAX_DISTRIBUTED') != '1':
    return
  import jax  # pylint: disable=g-import-not-at-top
  kwargs = {}
  if 'JAX_COORDINATOR_ADDRESS' in os.environ:
    kwargs = dict(coordinator_address=os.environ['JAX_COORDINATOR_ADDRESS'],
                  num_processes=int(os.environ['JAX_NUM_PROCESSES']),
                  process_id=int(os.environ['JAX_PROCESS_ID']))
  jax.distributed.initialize(**kwargs)
