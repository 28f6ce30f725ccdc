"""Config builders and option parsers shared by experiment files.

Experiment files are loaded by path (ml_collections' config flags), so what several of them
share lives here, in the package, and they import it (`from icl_jax import presets`): never
one experiment file from another, and never a copy of one inside another. An experiment file
parses its own options and applies its `smoke` shrink; a builder here returns the full-size
config.
"""

from __future__ import annotations

import ml_collections

from icl_jax import config as config_lib
from icl_jax import fields
from icl_jax.errors import UserError

# Garg et al.'s model sizes: (width, depth, heads). GPT-2-style pre-LN, learned positions.
# `cpu` is `tiny` made 4 layers deep: 2 layers do not reach least squares at d = 8.
GARG_SIZES = {
    'tiny': (64, 2, 2),
    'small': (256, 4, 4),
    'standard': (256, 12, 8),
    'cpu': (64, 4, 2),
}
# The paper's setting and the one that trains on a 2-core CPU in minutes.
GARG_SETTINGS = {
    'paper': dict(size='standard', dim=20, steps=500_000, lr=1e-4, curriculum=1, warmup=0,
                  grad_clip=0.0),
    'cpu': dict(size='cpu', dim=8, steps=4000, lr=1e-3, curriculum=0, warmup=200,
                grad_clip=1.0),
}


def _linear_class(family: str) -> bool:
  return family in ('linear', 'sparse_linear')


def garg(family: str, arg: str | None) -> ml_collections.ConfigDict:
  """Garg et al.'s function-class experiment for `family`, with the options of `arg`.

  `setting=paper` (default): d = 20, the curriculum over dims (5 -> 20, +1 every 2000 steps)
  and points (2d + 1 = 41 for the linear classes, 101 for trees and ReLU networks), Adam at
  1e-4, batch 64, 500k steps, the `standard` model. `setting=cpu`: d = 8, no curriculum,
  the `cpu` model, lr 1e-3 after 200 warm-up steps, 4000 steps. Any option given overrides
  the setting's (0 / '' / -1: the setting's value).
  """
  a = config_lib.parse_arg(arg, setting='paper', size='', dim=0, points=0, steps=0, lr=0.0,
                           curriculum=-1, noise_std=0.0, batch_size=64, num_tasks=-1,
                           smoke=False)
  if a.setting not in GARG_SETTINGS:
    raise UserError(f'Unknown setting {a.setting!r}; choose one of {list(GARG_SETTINGS)}.')
  s = dict(GARG_SETTINGS[a.setting])
  s.update({k: a[k] for k in ('size', 'dim', 'steps', 'lr') if a[k]})
  if a.curriculum != -1:
    s['curriculum'] = a.curriculum
  if s['size'] not in GARG_SIZES:
    raise UserError(f'Unknown size {s["size"]!r}; choose one of {list(GARG_SIZES)}.')
  width, depth, heads = GARG_SIZES[s['size']]

  c = config_lib.base_config()
  c.task.family = family
  c.task.prompt = 'interleaved'
  c.task.num_tasks = a.num_tasks
  c.task.noise_std = a.noise_std
  c.task.dim = s['dim']
  c.task.seq_len = a.points or (2 * s['dim'] + 1 if _linear_class(family) else 101)
  cur = c.task.curriculum
  cur.enabled = bool(s['curriculum'])
  cur.dim_start = min(5, s['dim'])
  cur.dim_inc = 1
  cur.points_start = min(11 if _linear_class(family) else 26, c.task.seq_len)
  cur.points_inc = 2 if _linear_class(family) else 5
  cur.every_steps = 2000

  c.model.width, c.model.depth, c.model.num_heads = width, depth, heads
  c.model.qkv_size = width // heads
  c.model.mlp_ratio = 4
  c.model.positions = 'learned'

  c.train.steps = s['steps']
  c.train.batch_size = a.batch_size
  c.train.lr = s['lr']
  c.train.warmup_steps = s['warmup']
  c.train.grad_clip = s['grad_clip']
  c.train.log_every_steps = 100
  c.train.eval_every_steps = min(1000, s['steps'])
  c.train.checkpoint_every_steps = min(1000, s['steps'])
  c.eval.num_episodes = 256
  c.eval.first_positions = 1
  # The summary's "last" positions: those beyond k = d examples, where least squares is exact.
  c.eval.last_positions = max(1, c.task.seq_len - s['dim'] - 1)
  if a.smoke:
    c.task.dim, c.task.seq_len = 4, 9
    cur.enabled, cur.dim_start, cur.points_start = False, 4, 9
    c.model.width, c.model.depth, c.model.num_heads, c.model.qkv_size = 16, 1, 2, 8
    c.train.steps, c.train.batch_size, c.train.warmup_steps = 20, 16, 0
    c.train.log_every_steps = c.train.eval_every_steps = c.train.checkpoint_every_steps = 10
    c.eval.num_episodes, c.eval.last_positions = 32, 4
  return c


def task_counts(text: str) -> list[int]:
  """A '+'-separated list of task-pool sizes, 'inf' for an infinite pool: '1+64+inf' ->
  [1, 64, fields.INFINITE_TASKS]."""
  return [fields.INFINITE_TASKS if t == 'inf' else int(t) for t in text.split('+')]


def gpicl_digits(num_tasks: int, width: int, steps: int, *, depth: int = 2,
                 prompt: str = 'context_query', positions: str = 'learned',
                 eval_every_steps: int = 500) -> ml_collections.ConfigDict:
  """GPICL tasks on the embedded 8x8 digits, sized to train on a CPU in minutes.

  T = 50 examples an episode, `num_tasks` tasks (fields.INFINITE_TASKS: a fresh one every
  episode); a Transformer of the given width and depth with 4 heads of size width / 4; Adam
  at 1e-3 after 100 warm-up steps, clipped at 1, batch 64. Evaluations and checkpoints every
  `eval_every_steps`.
  """
  c = config_lib.base_config()
  c.data.dataset = 'digits'
  c.data.image_shape = (8, 8)

  c.task.num_tasks = num_tasks
  c.task.seq_len = 50
  c.task.prompt = prompt

  c.model.width = width
  c.model.depth = depth
  c.model.num_heads = 4
  c.model.qkv_size = width // 4
  c.model.mlp_ratio = 4
  c.model.positions = positions

  c.train.steps = steps
  c.train.batch_size = 64
  c.train.lr = 1e-3
  c.train.warmup_steps = 100
  c.train.grad_clip = 1.0
  c.train.log_every_steps = 50
  c.train.eval_every_steps = eval_every_steps
  c.train.checkpoint_every_steps = eval_every_steps
  c.eval.num_episodes = 256
  return c


def gpicl_mnist(num_tasks: int = 2**16, model_size: int = 256, steps: int = 50_000, *,
                paper_format: bool = True) -> ml_collections.ConfigDict:
  """GPICL in the paper's setting: MNIST, T = 100, batch 128, N_M = `model_size`.

  The defaults are the paper's main run. `paper_format`: the paper's [x_t, onehot(y_{t-1})]
  tokens, else the `context_query` prompt.
  """
  c = config_lib.base_config()
  c.data.dataset = 'mnist'
  c.data.image_shape = (28, 28)

  c.task.num_tasks = num_tasks
  c.task.seq_len = 100
  c.task.prompt = 'gpicl' if paper_format else 'context_query'

  # The paper's appendix: 4 layers, 8 heads, key/query/value size 32, MLP 4 x N_M.
  c.model.width = model_size
  c.model.depth = 4
  c.model.num_heads = 8
  c.model.qkv_size = 32
  c.model.mlp_ratio = 4

  # Adam settings of a public re-implementation (lr 2e-4, eps 1e-10, clip 2.0); the
  # paper does not state them.
  c.train.steps = steps
  c.train.batch_size = 128
  c.train.lr = 2e-4
  c.train.eps = 1e-10
  c.train.grad_clip = 2.0
  c.train.warmup_steps = 1000
  c.train.log_every_steps = 100
  c.train.eval_every_steps = 2500
  c.train.checkpoint_every_steps = 2500
  c.eval.num_episodes = 1024
  return c
