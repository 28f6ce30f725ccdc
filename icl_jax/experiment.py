"""Experiment files: `experiments/<name>.py` with get_config(arg) and, for a sweep, sweep(add, arg).

A --config value is `path[:args]` or the name of an experiment shipped with icl_jax
(`gpicl_digits:smoke`); this module finds and loads such files and nothing else. No JAX.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import traceback
from typing import Any, Callable, Iterator

from icl_jax.errors import UserError


def split_config_arg(config_arg: str) -> tuple[str, str | None]:
  """'experiments/x.py:a=1,b' -> ('experiments/x.py', 'a=1,b')."""
  path, _, arg = config_arg.partition(':')
  return path, (arg or None)


def experiments_dir() -> str:
  """The experiment files shipped with icl_jax: the installed icl_jax.experiments, or a
  checkout's experiments/."""
  try:
    import icl_jax.experiments as shipped  # pylint: disable=g-import-not-at-top
    return os.path.dirname(os.path.abspath(shipped.__file__))
  except ImportError:  # A checkout whose editable install predates the package.
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        'experiments')


def resolve_config_arg(config_arg: str) -> str:
  """`path[:args]` for a --config value: a file that exists, or a path, stays as it is; a
  bare name (`gpicl_digits:smoke`) is an experiment file shipped with icl_jax."""
  path, arg = split_config_arg(config_arg)
  if os.path.exists(path) or '/' in path or os.sep in path or path.endswith('.py'):
    return config_arg
  shipped = os.path.join(experiments_dir(), f'{path}.py')
  if not os.path.isfile(shipped):
    return config_arg  # Loading it names the missing file.
  return shipped + (f':{arg}' if arg is not None else '')


def experiment_names() -> list[str]:
  return sorted(n[:-3] for n in os.listdir(experiments_dir())
                if n.endswith('.py') and not n.startswith('_'))


def load_module(path: str):
  if not os.path.isfile(path):
    raise UserError(f'Config file {path!r} does not exist. Pass --config=path/to/experiment.py'
                    f'[:args], e.g. experiments/phase_transition_digits.py.')
  spec = importlib.util.spec_from_file_location(
      f'icl_jax_experiment_{hashlib.sha1(path.encode()).hexdigest()[:8]}', path)
  module = importlib.util.module_from_spec(spec)
  with reported_as(path, 'while it was loaded'):
    spec.loader.exec_module(module)
  if not callable(getattr(module, 'get_config', None)):
    raise UserError(f'Config file {path!r} defines no get_config(). An experiment file defines '
                    f'get_config(arg=None) returning a ConfigDict; see experiments/gpicl_digits.py.')
  return module


def collect(sweep_fn: Callable[..., Any], arg: str | None) -> list[dict[str, Any]]:
  """The overrides of every `add(**overrides)` call, in call order."""
  calls = []

  def add(**overrides):
    calls.append({k.removeprefix('config.'): v for k, v in overrides.items()})

  with reported_as(sweep_fn.__code__.co_filename, 'in its sweep()'):
    sweep_fn(add, arg)
  return calls


@contextlib.contextmanager
def reported_as(path: str, when: str) -> Iterator[None]:
  """An exception of an experiment file's own code (or its exit) as one UserError naming
  the file and the line where it happened: the fix is in that file, not in icl_jax."""
  try:
    yield
  except (UserError, KeyboardInterrupt):
    raise
  except SystemExit as e:
    raise UserError(f'Experiment file {path} exited (code {e.code!r}) {when}. An experiment '
                    f'file only defines get_config(arg) and, for a sweep, sweep(add, arg); '
                    f'remove the exit.') from None
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'Experiment file {path} failed {when} at {where(e, path)}: '
                    f'{type(e).__name__}: {e}. Fix it there.') from None


def where(error: BaseException, path: str) -> str:
  """'file:line' of the deepest frame of `error`'s traceback inside `path` (else the
  deepest frame)."""
  frames = traceback.extract_tb(error.__traceback__)
  inside = [f for f in frames if os.path.abspath(f.filename) == os.path.abspath(path)]
  frame = (inside or frames or [None])[-1]
  return f'{frame.filename}:{frame.lineno}' if frame else path


def subroot_name(config_arg: str) -> str:
  """`experiments/x.py:a=1` -> 'x-a=1': where --subroot puts a sweep inside a used root."""
  path, arg = split_config_arg(config_arg)
  stem = os.path.splitext(os.path.basename(path))[0]
  return re.sub(r'[^A-Za-z0-9.=,_+-]', '_', f'{stem}-{arg}' if arg else stem)
