"""Meta-train a model: python -m icl_jax.main --config experiments/x.py[:args] --workdir DIR.

Override any field with --config.path=value, e.g. --config.train.steps=100.
Exit codes: 0 trained; 2 a problem to fix (one `error:` line); 75 stopped by SIGTERM,
SIGHUP, SIGUSR1, SIGUSR2 or Ctrl-C after saving the step reached (rerun to resume).
Multi-host: the launcher sets ICL_JAX_DISTRIBUTED=1 (and, off SLURM/TPU, the
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables) and every
process runs this same command.
"""

import sys

# Before anything starts JAX's backend: process settings (allocator) the project applies.
from icl_jax import runtime
runtime.configure()

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

from icl_jax import cli
from icl_jax import plugins
from icl_jax import status as status_lib

CONFIG = cli.define_config_flag()
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
COMPILATION_CACHE = cli.define_compilation_cache_flag()


def main(argv):
  del argv
  runtime.start(COMPILATION_CACHE.value, quiet=not flags.FLAGS['verbosity'].present)
  from icl_jax import train  # pylint: disable=g-import-not-at-top
  with cli.user_errors_exit():
    runtime.initialize_distributed()
    runtime.check_backend()
    plugins.load()
    try:
      train.train_and_evaluate(CONFIG.value, _WORKDIR.value)
    except train.Preempted as e:
      print(f'preempted: {e}', file=sys.stderr)
      sys.exit(status_lib.EXIT_PREEMPTED)


def run() -> None:
  """The `icl-train` command, and `python -m icl_jax.main`."""
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=cli.config_parser(__doc__))


if __name__ == '__main__':
  run()
