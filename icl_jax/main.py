"""Meta-train a model: python -m icl_jax.main --config experiments/x.py[:args] --workdir DIR.

Override any field with --config.path=value, e.g. --config.train.steps=100.
Exit codes: 0 trained; 2 a problem to fix (one `error:` line); 75 stopped by SIGTERM,
SIGUSR1, SIGUSR2 or Ctrl-C after saving the step reached (rerun to resume).
Multi-host: the launcher sets ICL_JAX_DISTRIBUTED=1 (and, off SLURM/TPU, the
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables) and every
process runs this same command.
"""

import os
import re
import sys

# Before anything starts JAX's backend: process settings (allocator) the project applies.
from icl_jax import runtime
runtime.configure()

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from icl_jax import cli
from icl_jax import fields as fields_lib
from icl_jax import status as status_lib
from icl_jax import sweep as sweep_lib
from icl_jax.errors import UserError

CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment: a config file path[:args] (experiments/gpicl_digits.py:smoke), '
    'or the name of one shipped with icl_jax (gpicl_digits:smoke).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
COMPILATION_CACHE = flags.DEFINE_string(
    'compilation_cache', runtime.default_compilation_cache(),
    'Directory of JAX\'s persistent compilation cache, so a resumed or repeated run skips '
    'compiling; \'\' turns it off. Default: $ICL_JAX_COMPILATION_CACHE, else '
    '$XDG_CACHE_HOME/icl_jax/jax (~/.cache/icl_jax/jax).')


def initialize_distributed() -> None:
  """Starts JAX's multi-controller runtime when the launcher asks for it."""
  if os.environ.get('ICL_JAX_DISTRIBUTED') != '1':
    return
  import jax  # pylint: disable=g-import-not-at-top
  kwargs = {}
  if 'JAX_COORDINATOR_ADDRESS' in os.environ:
    kwargs = dict(coordinator_address=os.environ['JAX_COORDINATOR_ADDRESS'],
                  num_processes=int(os.environ['JAX_NUM_PROCESSES']),
                  process_id=int(os.environ['JAX_PROCESS_ID']))
  # Without arguments JAX detects SLURM and Cloud TPU environments itself.
  jax.distributed.initialize(**kwargs)


def parse_flags_optional_config(argv: list[str], doc: str | None = None) -> list[str]:
  """parse_flags for programs (launch.sweep) where --config may be absent."""
  return parse_flags(argv, require_config=False, doc=doc)


def parse_flags(argv: list[str], require_config: bool = True,
                doc: str | None = None) -> list[str]:
  """absl's flag parsing, with a bad --config or --config.* reported as one `error:` line.

  Left alone, ml_collections' config flags end in a traceback (an unknown field, a config
  file without get_config, an experiment argument's UserError) or in absl's FATAL message
  with exit code 1; a config file that fails to load raises only when first read.
  """
  cli.exit_on_help(argv, __doc__ if doc is None else doc)
  argv[:] = _with_experiment_path(argv)  # sys.argv too: later readers see the path.
  try:
    remaining = flags.FLAGS(argv)
    if not require_config and config_arg(argv) is None:
      return remaining
    config = CONFIG.value
    if not isinstance(config, ml_collections.ConfigDict):
      getattr(config, 'to_dict', None)  # A file that failed to load raises on any access.
      raise UserError(f'The get_config() of {config_arg(argv)!r} returned '
                      f'{type(config).__name__}, not a ConfigDict. Return one, as '
                      f'experiments/gpicl_digits.py does.')
  except Exception as e:  # pylint: disable=broad-except
    print(f'error: {describe_flag_error(e, argv)}', file=sys.stderr)
    sys.exit(2)
  return remaining


def describe_flag_error(error: Exception, argv: list[str]) -> str:
  """The problem and its fix, in one line, for an error raised while parsing flags."""
  chain = [error]
  while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and nxt not in chain:
    chain.append(nxt)
  path = config_arg(argv)
  user_errors = [e for e in chain if isinstance(e, UserError)]
  if user_errors:  # From the experiment file (its arguments); the deepest is the original.
    return str(user_errors[-1])
  for e in chain:
    if isinstance(e, OSError) and 'Failed loading config file' in str(e):
      reason = str(e).strip().splitlines()[-1].strip()
      return (f'Cannot load config file {path!r}: {reason}. Pass '
              f'--config=path/to/experiment.py[:args], e.g. experiments/gpicl_digits.py, or '
              f'the name of a shipped experiment: {", ".join(sweep_lib.experiment_names())}.')
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
      arg = '--config=' + sweep_lib.resolve_config_arg(arg.split('=', 1)[1])
    elif arg == '--config':
      out.append(arg)
      arg = sweep_lib.resolve_config_arg(next(words, ''))
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
                f'listed in README.md (Config schema); --helpfull shows every --config.* flag.')
  return None


def main(argv):
  del argv
  if not flags.FLAGS['verbosity'].present:
    # Orbax and TFDS log every save and read at INFO; --verbosity=0 brings them back.
    logging.set_verbosity(logging.WARNING)
  from icl_jax import train  # pylint: disable=g-import-not-at-top
  runtime.enable_compilation_cache(COMPILATION_CACHE.value)
  initialize_distributed()
  try:
    train.train_and_evaluate(CONFIG.value, _WORKDIR.value)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except train.Preempted as e:
    print(f'preempted: {e}', file=sys.stderr)
    sys.exit(status_lib.EXIT_PREEMPTED)


def run() -> None:
  """The `icl-train` command, and `python -m icl_jax.main`."""
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  run()
