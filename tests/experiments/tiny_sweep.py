"""A sweep of seconds-long points for the launcher tests: 2 model sizes x 2 task counts.

The tests pass --config.data.data_dir; `steps` sets the run length.
"""

from icl_jax import config as config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, steps=8, widths='8+16', empty=False, duplicate=False)
  c = config_lib.base_config()
  c.task.num_tasks = 4
  c.task.seq_len = 10
  c.model.width, c.model.depth, c.model.num_heads, c.model.qkv_size = 8, 1, 2, 4
  c.train.batch_size = 8
  c.train.steps = a.steps
  c.train.log_every_steps = 4
  c.train.eval_every_steps = a.steps
  c.train.checkpoint_every_steps = 4
  c.eval.num_episodes = 8
  c.mesh.data = 1
  return c


def sweep(add, arg=None):
  a = config_lib.parse_arg(arg, steps=8, widths='8+16', empty=False, duplicate=False)
  if a.empty:
    return
  for width in [int(w) for w in a.widths.split('+')]:
    for num_tasks in (2, -1):
      add(**{'model.width': width, 'task.num_tasks': num_tasks})
  if a.duplicate:
    add(**{'model.width': 8, 'task.num_tasks': 2})
