r"""Prior-data fitted networks (Mueller et al. 2022): a Transformer trained on functions drawn
from a Gaussian-process prior approximates the GP's posterior predictive.

Tasks: f ~ GP(0, RBF with length scale 0.6), x ~ U[0, 1]^5, noise variance 1e-4 (the PFN
paper's prior; task.length_scale, task.x_low/x_high, task.noise_std). No positional
encoding, so the context is a set, and the context_query prompt, so a query reads the
labelled context directly. Evaluation puts the model beside the exact GP posterior mean
with the prior's own hyperparameters, the Bayes-optimal predictor here, and the other
estimators.

  python -m icl_jax.main --config experiments/gp_prior.py --workdir workdirs/gp_prior
  python -m icl_jax.evaluate --workdir workdirs/gp_prior      # error.png: model vs. gp
  python -m icl_jax.main --config experiments/gp_prior.py:length_scale=0.3,dim=2 ...
  python -m icl_jax.main --config experiments/gp_prior.py:smoke --workdir /tmp/gp_smoke
"""

from icl_jax import config as config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, dim=5, points=30, length_scale=0.6, noise_std=0.01,
                           width=64, depth=4, steps=4000, lr=1e-3, smoke=False)
  c = config_lib.base_config()
  c.task.family = 'gp'
  c.task.num_tasks = -1
  c.task.dim = a.dim
  c.task.seq_len = a.points
  c.task.length_scale = a.length_scale
  c.task.noise_std = a.noise_std  # 0.01: the PFN prior's noise variance 1e-4.
  c.task.x_low, c.task.x_high = 0.0, 1.0
  c.task.prompt = 'context_query'

  c.model.width, c.model.depth, c.model.num_heads = a.width, a.depth, 4
  c.model.qkv_size = a.width // 4
  c.model.positions = 'none'

  c.train.steps = a.steps
  c.train.batch_size = 64
  c.train.lr = a.lr
  c.train.warmup_steps = 200
  c.train.grad_clip = 1.0
  c.train.log_every_steps = 100
  c.train.eval_every_steps = 1000
  c.train.checkpoint_every_steps = 1000
  c.eval.num_episodes = 256
  c.eval.first_positions, c.eval.last_positions = 1, 10
  if a.smoke:
    c.task.dim, c.task.seq_len = 2, 8
    c.model.width, c.model.depth, c.model.num_heads, c.model.qkv_size = 16, 1, 2, 8
    c.train.steps, c.train.batch_size, c.train.warmup_steps = 20, 16, 0
    c.train.log_every_steps = c.train.eval_every_steps = c.train.checkpoint_every_steps = 10
    c.eval.num_episodes, c.eval.last_positions = 32, 4
  return c
