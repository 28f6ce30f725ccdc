"""What every command line shares, in one place: --help that exits 0 listing every flag;
flag errors (absl's exit 1 with a FATAL banner, ml_collections' tracebacks for a bad
--config or --config.* override) as one `error:` line with exit code 2; the --config and
--compilation_cache flags of the programs that take them; and `UserError` reported as one
`error:` line with exit code 2."""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import traceback
from typing import Callable, Iterator

from absl import flags
import ml_collections
from ml_collections import config_flags

from icl_jax import experiment
from icl_jax import fields as fields_lib
from icl_jax import runtime
from icl_jax.errors import UserError

HELP = ('--help', '-h', '-?', '--helpfull', '--helpshort')
# The upper bound of integer flags that become counts, steps or indices: JAX's int32 (and
# SLURM's C ints) cannot hold more, and no sweep needs more.
INT32_MAX = 2**31 - 1


def _ours(module: str) -> bool:
  """Whether a module's flags are the program's: icl_jax's and the launcher's (by dotted
  name, or by path for the module run as __main__), not those of absl, orbax or TFDS."""
  return any(name in module for name in ('icl_jax', 'launch'))


def require_finite(flag: flags.FlagHolder) -> flags.FlagHolder:
  """`flag` (a float flag), refusing nan and inf, which its bounds let through."""
  flags.register_validator(flag, lambda v: v is None or math.isfinite(v),
                           message=f'--{flag.name} must be a finite number')
  return flag


def exit_on_help(argv: list[str], doc: str | None) -> None:
  """With a help flag: the program's docstring and all its flags on stdout, exit 0."""
  if not any(a in HELP for a in argv[1:]):
    return
  print((doc or '').strip() + '\n')
  full = '--helpfull' in argv
  for module in sorted(flags.FLAGS.flags_by_module_dict(), key=lambda m: (not _ours(m), m)):
    if full or _ours(module):
      print(flags.FLAGS.module_help(module) + '\n')
  if not full:
    print('(--helpfull also lists the flags of absl, orbax and TFDS: logging, debugging.)')
  sys.exit(0)


def parser(doc: str | None) -> Callable[[list[str]], list[str]]:
  """A flags_parser for app.run: help, then absl's parsing with one-line errors."""

  def parse(argv: list[str]) -> list[str]:
    exit_on_help(argv, doc)
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      message = ' '.join(str(e).split()).rstrip('.')
      print(f'error: {message}. Run with --help to list the flags.', file=sys.stderr)
      sys.exit(2)

  return parse


def define_config_flag() -> flags.FlagHolder:
  """--config: an experiment file path[:args], or a shipped experiment's name."""
  return config_flags.DEFINE_config_file(
      'config', None, 'Experiment: a config file path[:args] (experiments/gpicl_digits.py:smoke), '
      'or the name of one shipped with icl_jax (gpicl_digits:smoke).', lock_config=True)


def define_compilation_cache_flag() -> flags.FlagHolder:
  return flags.DEFINE_string(
      'compilation_cache', runtime.default_compilation_cache(),
      'Directory of JAX\'s persistent compilation cache, so a resumed or repeated run skips '
      'compiling; \'\' turns it off. Default: $ICL_JAX_COMPILATION_CACHE, else '
      '$XDG_CACHE_HOME/icl_jax/jax (~/.cache/icl_jax/jax).')


@contextlib.contextmanager
def user_errors_exit() -> Iterator[None]:
  """A UserError ends the program with its message as one `error:` line, exit code 2."""
  try:
    yield
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def config_parser(doc: str | None, require_config: bool = True
                  ) -> Callable[[list[str]], list[str]]:
  """A flags_parser for app.run in a program with --config (`define_config_flag`)."""
  return lambda argv: parse_config_flags(argv, require_config, doc)


def parse_config_flags(argv: list[str], require_config: bool = True,
                       doc: str | None = None) -> list[str]:
  """absl's flag parsing, with a bad --config or --config.* reported as one `error:` line.

  Left alone, ml_collections' config flags end in a traceback (an unknown field, a config
  file without get_config, an experiment argument's UserError) or in absl's FATAL message
  with exit code 1; a config file that fails to load raises only when first read.
  """
  exit_on_help(argv, doc)
  argv[:] = _with_experiment_path(argv)  # sys.argv too: later readers see the path.
  try:
    remaining = flags.FLAGS(argv)
    if not require_config and config_arg(argv) is None:
      return remaining
    config = flags.FLAGS['config'].value
    if not isinstance(config, ml_collections.ConfigDict):
      getattr(config, 'to_dict', None)  # A file that failed to load raises on any access.
      raise UserError(f'The get_config() of {config_arg(argv)!r} returned '
                      f'{type(config).__name__}, not a ConfigDict. Return one, as '
                      f'experiments/gpicl_digits.py does.')
  except SystemExit as e:  # The experiment file exited while ml_collections loaded it.
    path = experiment.split_config_arg(config_arg(argv) or '?')[0]
    print(f'error: Experiment file {path} exited (code {e.code!r}) while it was loaded. An '
          f'experiment file only defines get_config(arg) and, for a sweep, sweep(add, arg); '
          f'remove the exit.', file=sys.stderr)
    sys.exit(2)
  except Exception as e:  # pylint: disable=broad-except
    print(f'error: {describe_flag_error(e, argv)}', file=sys.stderr)
    sys.exit(2)
  return remaining


def _experiment_failure(chain: list[BaseException], path: str | None) -> str | None:
  """The message for an exception raised by the experiment file's own code (at import or
  in get_config), naming its file and line; None if the error is not the file's."""
  if not path:
    return None
  path = os.path.abspath(experiment.split_config_arg(path)[0])
  for e in chain:
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if os.path.abspath(f.filename) == path]
    if frames:
      return (f'Experiment file {path} failed at {path}:{frames[-1].lineno}: '
              f'{type(e).__name__}: {e}. Fix it there.')
  return None


def describe_flag_error(error: Exception, argv: list[str]) -> str:
  """The problem and its fix, in one line, for an error raised while parsing flags."""
  chain = [error]
  while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and nxt not in chain:
    chain.append(nxt)
  path = config_arg(argv)
  user_errors = [e for e in chain if isinstance(e, UserError)]
  if user_errors:  # From the experiment file (its arguments); the deepest is the original.
    return str(user_errors[-1])
  failure = _experiment_failure(chain, path)
  if failure:
    return failure
  for e in chain:
    if isinstance(e, OSError) and 'Failed loading config file' in str(e):
      reason = str(e).strip().splitlines()[-1].strip()
      return (f'Cannot load config file {path!r}: {reason}. Pass '
              f'--config=path/to/experiment.py[:args], e.g. experiments/gpicl_digits.py, or '
              f'the name of a shipped experiment: {", ".join(experiment.experiment_names())}.')
    if isinstance(e, AttributeError) and "has no attribute 'get_config'" in str(e):
      return (f'Config file {path!r} defines no get_config(). An experiment file defines '
              f'get_config(arg=None) returning a ConfigDict; see experiments/gpicl_digits.py.')
  unknown = _unknown_override(chain, argv)
  if unknown:
    return unknown
  message = ' '.join(str(error).split()).rstrip('.')  # absl's messages may span lines.
  match = re.match(r'flag --config\.([\w.]+)=(.*?): (.*)', message)
  config = flags.FLAGS['config'].value
  if match and isinstance(config, ml_collections.ConfigDict):
    field, value, reason = match.groups()
    current = fields_lib.get(config, field)
    kind = type(current).__name__
    return (f'--config.{field}={value} is not a valid {kind} ({reason}). Pass a value of '
            f'type {kind}, like the current one: --config.{field}={current!r}.')
  if 'Flag --config must have a value other than None' in message:
    if path is None:
      return ('--config is missing. Pass --config=path/to/experiment.py[:args], e.g. '
              'experiments/gpicl_digits.py.')
    return (f'The get_config() of {path!r} returned None. Return a ConfigDict, as '
            f'experiments/gpicl_digits.py does.')
  if isinstance(error, flags.Error):
    return f'{message}. Run with --help to list the flags.'
  return (f'Cannot parse the command line ({type(error).__name__}: {message}). Check '
          f'--config and the --config.* overrides; --helpfull lists them.')


def _with_experiment_path(argv: list[str]) -> list[str]:
  """argv with a --config that names a shipped experiment (`gpicl_digits:smoke`) replaced
  by its file's path."""
  out, words = [], iter(argv)
  for arg in words:
    if arg.startswith('--config='):
      arg = '--config=' + experiment.resolve_config_arg(arg.split('=', 1)[1])
    elif arg == '--config':
      out.append(arg)
      arg = experiment.resolve_config_arg(next(words, ''))
    out.append(arg)
  return out


def config_arg(argv: list[str]) -> str | None:
  """The raw value of --config, given as `--config=x` or `--config x`."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _unknown_override(chain: list[BaseException], argv: list[str]) -> str | None:
  """The message for a --config.a.b override naming a field the config lacks, if that is
  the error: ml_collections raises a KeyError or AttributeError naming the missing key."""
  for e in chain:
    if not isinstance(e, (KeyError, AttributeError)):
      continue
    text = str(e).replace('\\n', ' ').replace('\\', '')
    suggestion = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
    key = suggestion.group(2) if suggestion else next(iter(re.findall(r"'(\w+)'", text)), None)
    for arg in argv:
      match = re.match(r'--config\.([^=]+)', arg)
      if key and match and key in match.group(1).split('.'):
        field = match.group(1)
        hint = ''
        if suggestion:
          fixed = '.'.join(suggestion.group(1) if k == key else k for k in field.split('.'))
          hint = f' Did you mean --config.{fixed}?'
        return (f'--config.{field}: the config has no field {key!r}.{hint} The fields are '
                f'listed in docs/config.md; --helpfull shows every --config.* flag.')
  return None
