"""Shared by the test modules: the tiny config every training test uses."""

from icl_jax import config as config_lib


def tiny_config(data_dir, **overrides):
  """Seconds per run on CPU. Overrides are section__field=value."""
  c = config_lib.base_config()
  c.data.data_dir = data_dir
  c.task.num_tasks = 4  # Memorisation: the loss falls within tens of steps.
  c.task.seq_len = 10
  c.model.width, c.model.depth, c.model.num_heads, c.model.qkv_size = 16, 1, 2, 8
  c.train.batch_size = 16
  c.train.lr = 3e-3
  c.train.steps = 40
  c.train.log_every_steps = 5
  c.train.eval_every_steps = 1000
  c.train.checkpoint_every_steps = 20
  c.eval.num_episodes = 16
  for path, value in overrides.items():
    section, field = path.split('__')
    c[section][field] = value
  return c
