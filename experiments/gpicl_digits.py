r"""GPICL on the embedded 8x8 digits: general in-context learning in minutes on a CPU.

The default uses the `context_query` prompt (2T tokens: a labelled context token and an
unlabelled query token per example), which leaves the loss plateau in a few hundred steps
on 2 CPU cores; `paper_format` switches to the paper's [x_t, onehot(y_{t-1})] tokens.

  # The embedded default (what `make run` runs): ~10 minutes on 2 CPU cores.
  python -m icl_jax.main --config experiments/gpicl_digits.py --workdir workdirs/gpicl_digits
  # Seconds, for checking the pipeline end to end.
  python -m icl_jax.main --config experiments/gpicl_digits.py:smoke --workdir /tmp/smoke
  # The paper's prompt format; few tasks (memorisation regime).
  python -m icl_jax.main --config experiments/gpicl_digits.py:paper_format --workdir ...
  python -m icl_jax.main --config experiments/gpicl_digits.py:num_tasks=16 --workdir ...
"""

from icl_jax import config as config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, paper_format=False, num_tasks=2**16,
                             width=64, depth=2, steps=2500, positions='learned')
  c = config_lib.base_config()
  c.data.dataset = 'digits'
  c.data.image_shape = (8, 8)

  c.task.num_tasks = arg.num_tasks
  c.task.seq_len = 50
  c.task.prompt = 'gpicl' if arg.paper_format else 'context_query'

  c.model.width = arg.width
  c.model.depth = arg.depth
  c.model.num_heads = 4
  c.model.qkv_size = arg.width // 4
  c.model.mlp_ratio = 4
  c.model.positions = arg.positions

  c.train.steps = arg.steps
  c.train.batch_size = 64
  c.train.lr = 1e-3
  c.train.warmup_steps = 100
  c.train.grad_clip = 1.0
  c.train.log_every_steps = 50
  c.train.eval_every_steps = 500
  c.train.checkpoint_every_steps = 500
  c.eval.num_episodes = 256

  if arg.smoke:
    config_lib.shrink_for_smoke(c, steps=30)
  return c
