"""What every command line shares: --help that exits 0 listing every flag, and flag
errors as one `error:` line with exit code 2 (absl's own exit 1 with a FATAL banner)."""

from __future__ import annotations

import math
import sys
from typing import Callable

from absl import flags

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
