"""The sweep report's command line: python -m icl_jax.report --root DIR [--out DIR].

Prints the tables, then one `wrote PATH` line per file and one `skipped NAME: why` line
per figure not drawn. A sweep root it cannot report prints one `error:` line (no
traceback) and exits 2.
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import app
from absl import flags

from icl_jax import cli
from icl_jax import report as report_lib
from icl_jax.errors import UserError


def main(argv: Sequence[str]) -> None:
  del argv
  try:
    result = report_lib.report(flags.FLAGS.root, flags.FLAGS.out)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(result['table'])
  print()
  for path in [result['csv'], *result['figures'].values()]:
    print(f'wrote {path}')
  for name, reason in result['skipped'].items():
    print(f'skipped {name}: {reason}')


def define_flags(flag_values=None) -> None:
  """Flags of the CLI; defined only when run as a program, so importing stays side-effect
  free. `flag_values`: where to define them (default absl's global FLAGS)."""
  fv = dict(flag_values=flags.FLAGS if flag_values is None else flag_values)
  flags.DEFINE_string('root', None, 'Sweep root (the --root given to the sweep launcher).',
                      required=True, **fv)
  flags.DEFINE_string('out', None, 'Output dir for summary.csv and figures; default --root.',
                      **fv)


def run() -> None:
  """The `icl-report` command."""
  define_flags()
  app.run(main, flags_parser=cli.parser(__doc__))


if __name__ == '__main__':
  run()
