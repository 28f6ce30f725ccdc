r"""GPICL in the paper's setting: MNIST, 2^k tasks, N_M = 256, T = 100, batch 128.

For GPU/TPU hosts. MNIST must be prepared once on a host with internet:
  pip install 'icl_jax[prepare]'
  tfds build mnist --file_format=array_record --data_dir $TFDS_DATA_DIR

  python -m icl_jax.main --config experiments/gpicl_mnist.py:num_tasks=65536 --workdir ...
  python -m icl_jax.main --config experiments/gpicl_mnist.py:num_tasks=-1,model_size=512 ...
  # Seconds on a CPU (still needs MNIST prepared).
  python -m icl_jax.main --config experiments/gpicl_mnist.py:smoke --workdir /tmp/smoke
"""

from icl_jax import config as config_lib
from icl_jax import presets


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, paper_format=True, num_tasks=2**16,
                             model_size=256, steps=50_000)
  c = presets.gpicl_mnist(arg.num_tasks, arg.model_size, arg.steps,
                          paper_format=arg.paper_format)
  if arg.smoke:
    config_lib.shrink_for_smoke(c, steps=20)
  return c
