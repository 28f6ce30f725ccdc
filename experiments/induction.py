r"""Induction heads (Olsson et al. 2022): associative recall and the in-context phase change.

Every episode is a fresh mapping of K keys to values (task family `recall`); the paper's
prompt [x_t, onehot(y_{t-1})] puts a key and the previous value in one token, so predicting
y_t means finding the earlier token of the same key and copying the value that came one
token later: a previous-token head and an induction head, which need two layers. Training
sits on a plateau (just below ln C: what the values seen so far say about the next one),
then the loss drops suddenly as the late positions, where the key has been seen, become
predictable while the first ones stay at chance. The sweep trains depth 1 (no induction
circuit possible) beside depth 2, with `seeds` seeds each; the report draws every point's
training curve (training_curves.png), with the in-context gain (accuracy late minus early in
the episode) over training.

  python -m launch.sweep --config experiments/induction.py --root workdirs/induction
  python -m icl_jax.report --root workdirs/induction
"""

from icl_jax import config as config_lib


def _arg(arg):
  return config_lib.parse_arg(arg, num_keys=16, num_values=10, depths='1+2', seeds=2,
                              steps=2000, width=64, smoke=False)


def get_config(arg=None):
  a = _arg(arg)
  c = config_lib.base_config()
  c.task.family = 'recall'
  c.task.num_tasks = -1  # A fresh mapping every episode: only in-context copying helps.
  c.task.dim = a.num_keys
  c.task.num_classes = a.num_values
  c.task.seq_len = 40
  c.task.prompt = 'gpicl'

  c.model.width, c.model.depth = a.width, int(a.depths.split('+')[-1])
  c.model.num_heads, c.model.qkv_size = 4, a.width // 4

  c.train.steps = a.steps
  c.train.batch_size = 64
  c.train.lr = 1e-3
  c.train.grad_clip = 1.0
  c.train.log_every_steps = 25
  c.train.eval_every_steps = 100  # The in-context gain over training, not just at the end.
  c.train.checkpoint_every_steps = 500
  c.eval.num_episodes = 256
  if a.smoke:
    config_lib.shrink_for_smoke(c, steps=20)
    c.task.dim = 4
  return c


def sweep(add, arg=None):
  a = _arg(arg)
  depths = [1] if a.smoke else [int(d) for d in a.depths.split('+')]
  for depth in depths:
    for seed in range(1 if a.smoke else a.seeds):
      add(**{'model.depth': depth, 'seed': seed})
