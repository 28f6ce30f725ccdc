r"""Hidden progress on sparse parity (Barak et al. 2022): a long flat loss, then a sudden drop.

One fixed k-sparse parity of n bits (task.num_tasks = 1: the task is learned in the weights,
as in Barak et al., not in context), a small Transformer reading the paper's prompt, Adam.
The loss sits at ln 2 while SGD's progress hides in the weights, then falls to 0 within a
few hundred steps; the flat stretch grows with n (Barak et al.: about n^(k-1) for SGD on
MLPs). The sweep varies n over `dims` with `seeds` seeds each; the report draws every
point's training curve (training_curves.png) and the plateau length against n.

  python -m launch.sweep --config experiments/sparse_parity.py --root workdirs/sparse_parity
  python -m icl_jax.report --root workdirs/sparse_parity
  # In-context parity instead (a fresh subset every episode): much harder.
  python -m launch.sweep --config experiments/sparse_parity.py:num_tasks=-1 --root ...
"""

from icl_jax import config as config_lib


def _arg(arg):
  return config_lib.parse_arg(arg, dims='40+60+80', k=3, num_tasks=1, seeds=2, steps=2000,
                              width=64, depth=2, batch_size=64, smoke=False)


def get_config(arg=None):
  a = _arg(arg)
  c = config_lib.base_config()
  c.task.family = 'parity'
  c.task.num_tasks = a.num_tasks
  c.task.dim = int(a.dims.split('+')[-1])
  c.task.sparsity = a.k
  c.task.seq_len = 32
  c.task.prompt = 'gpicl'

  c.model.width, c.model.depth = a.width, a.depth
  c.model.num_heads, c.model.qkv_size = 4, a.width // 4

  c.train.steps = a.steps
  c.train.batch_size = a.batch_size
  c.train.lr = 1e-3
  c.train.grad_clip = 1.0
  c.train.log_every_steps = 25  # The drop takes ~50 steps: finer logs resolve it.
  # One task, learned in the weights: evaluating along the way would only say 0 or 1.
  c.train.eval_every_steps = a.steps
  c.train.checkpoint_every_steps = 500
  c.eval.num_episodes = 256
  if a.smoke:
    config_lib.shrink_for_smoke(c, steps=20)
    c.task.dim = 8
  return c


def sweep(add, arg=None):
  a = _arg(arg)
  dims = [8] if a.smoke else [int(d) for d in a.dims.split('+')]
  for dim in dims:
    for seed in range(1 if a.smoke else a.seeds):
      add(**{'task.dim': dim, 'seed': seed})
