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


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, paper_format=True, num_tasks=2**16,
                             model_size=256, steps=50_000)
  c = config_lib.base_config()
  c.data.dataset = 'mnist'
  c.data.image_shape = (28, 28)

  c.task.num_tasks = arg.num_tasks
  c.task.seq_len = 100
  c.task.prompt = 'gpicl' if arg.paper_format else 'context_query'

  # The paper's appendix: 4 layers, 8 heads, key/query/value size 32, MLP 4 x N_M.
  c.model.width = arg.model_size
  c.model.depth = 4
  c.model.num_heads = 8
  c.model.qkv_size = 32
  c.model.mlp_ratio = 4

  # Adam settings of a public re-implementation (lr 2e-4, eps 1e-10, clip 2.0); the
  # paper does not state them.
  c.train.steps = arg.steps
  c.train.batch_size = 128
  c.train.lr = 2e-4
  c.train.eps = 1e-10
  c.train.grad_clip = 2.0
  c.train.warmup_steps = 1000
  c.train.log_every_steps = 100
  c.train.eval_every_steps = 2500
  c.train.checkpoint_every_steps = 2500
  c.eval.num_episodes = 1024

  if arg.smoke:
    config_lib.shrink_for_smoke(c, steps=20)
  return c
