"""Meta-train a model: python -m icl_jax.main --config experiments/x.py[:args] --workdir DIR.

Override any field with --config.path=value, e.g. --config.train.steps=100.
Multi-host: the launcher sets ICL_JAX_DISTRIBUTED=1 (and, off SLURM/TPU, the
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables) and every
process runs this same command.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from icl_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file[:args].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
flags.mark_flags_as_required(['config', 'workdir'])


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


def main(argv):
  del argv
  if not flags.FLAGS['verbosity'].present:
    # Orbax and TFDS log every save and read at INFO; --verbosity=0 brings them back.
    logging.set_verbosity(logging.WARNING)
  from icl_jax import train  # pylint: disable=g-import-not-at-top
  initialize_distributed()
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
