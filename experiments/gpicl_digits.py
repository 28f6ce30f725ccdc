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
  # The meta-learner that beats 1-NN (~26 minutes on 2 CPU cores): width 128, depth 4,
  # 4 heads of 64 (the input's 64 dimensions: each head can compare whole examples), a
  # fresh task every episode, cosine learning rate, 3000 steps. Its other options may still
  # be given, e.g. :large,steps=4000 or :large,qkv_size=32 (the first large run).
  python -m icl_jax.main --config experiments/gpicl_digits.py:large --workdir workdirs/large
"""

from icl_jax import config as config_lib
from icl_jax import presets


DEFAULTS = dict(smoke=False, paper_format=False, large=False, num_tasks=2**16, width=64,
                depth=2, steps=2500, positions='learned', schedule='constant', batch_size=64,
                qkv_size=0)
# `large`: the defaults it changes; options given beside it still win.
LARGE = dict(num_tasks=-1, width=128, depth=4, steps=3000, schedule='cosine', qkv_size=64)


def get_config(text=None):
  arg = config_lib.parse_arg(text, **DEFAULTS)
  if arg.large:
    arg = config_lib.parse_arg(text, **{**DEFAULTS, **LARGE})
  c = presets.gpicl_digits(arg.num_tasks, arg.width, arg.steps, depth=arg.depth,
                           prompt='gpicl' if arg.paper_format else 'context_query',
                           positions=arg.positions)
  c.train.schedule = arg.schedule
  c.train.batch_size = arg.batch_size
  if arg.qkv_size:  # 0: the preset's width / 4 per head.
    c.model.qkv_size = arg.qkv_size
  if arg.smoke:
    config_lib.shrink_for_smoke(c, steps=30)
  return c
