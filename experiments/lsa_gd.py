r"""von Oswald et al. (2023): one linear self-attention layer trained on linear regression
learns one step of gradient descent.

Tokens are the context_query prompt's: contexts [x_j, y_j] and queries [x_j, 0] (theirs),
d = 10, 10 context examples, w ~ N(0, I). The model is `lsa`: linear self-attention only, no
softmax, LayerNorm or MLP; its read-out is minus the query's y-coordinate. Evaluation sets its
normalised error beside `gd`, one step of gradient descent from w = 0 with the learning rate
tuned on training tasks; icl_jax.models.gd_construction is the weight setting that computes
exactly that step (tests/test_model_families.py checks it).

Deviation: x ~ N(0, I) as in Garg et al. rather than von Oswald et al.'s U(-1, 1) (the task
families draw Gaussian inputs; task.x_scale rescales them).

  python -m icl_jax.main --config experiments/lsa_gd.py --workdir workdirs/lsa_gd
  python -m icl_jax.evaluate --workdir workdirs/lsa_gd --baselines gd,least_squares,averaging
  # Deeper LSA stacks (von Oswald et al.: K layers ~ K steps of GD with preconditioning):
  python -m icl_jax.main --config experiments/lsa_gd.py:depth=3 --workdir workdirs/lsa_gd3
"""

from icl_jax import config as config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, dim=10, points=10, depth=1, steps=3000, lr=1e-3, smoke=False)
  c = config_lib.base_config()
  c.task.family = 'linear'
  c.task.num_tasks = -1
  c.task.dim = a.dim
  c.task.seq_len = a.points + 1  # The last position predicts a query from `points` examples.
  c.task.prompt = 'context_query'

  c.model.name = 'lsa'
  c.model.depth = a.depth
  c.model.num_heads = 1
  c.model.qkv_size = a.dim + 1  # The construction's key/query/value size: the token's.
  c.model.init_scale = 0.1  # At 1.0, Gaussian inputs in d = 10 never leave the zero predictor.

  c.train.steps = a.steps
  c.train.batch_size = 256
  c.train.lr = a.lr
  c.train.grad_clip = 1.0
  c.train.log_every_steps = 100
  c.train.eval_every_steps = 1000
  c.train.checkpoint_every_steps = 1000
  c.eval.num_episodes = 1024
  c.eval.first_positions, c.eval.last_positions = 1, 1
  if a.smoke:
    c.task.dim, c.task.seq_len, c.model.qkv_size = 3, 4, 4
    c.train.steps, c.train.batch_size = 20, 16
    c.train.log_every_steps = c.train.eval_every_steps = c.train.checkpoint_every_steps = 10
    c.eval.num_episodes = 32
  return c
