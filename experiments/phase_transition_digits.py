r"""GPICL's phase diagram on the embedded 8x8 digits: model size x number of tasks x seeds.

Few tasks are memorised (seen-task accuracy high from the first example, unseen at chance);
many tasks force a general in-context learner (unseen accuracy rises along the sequence).
Uses the `context_query` prompt, which leaves the loss plateau within minutes on a CPU
(see experiments/gpicl_digits.py); experiments/phase_transition_mnist.py is the paper's
setting with its own prompt format.

  # The whole sweep (vmap backend: one program per model size), then its figures.
  python -m launch.sweep --config experiments/phase_transition_digits.py --root sweeps/digits
  python -m icl_jax.report --root sweeps/digits
  # Seconds per point, for checking the pipeline end to end.
  python -m launch.sweep --config experiments/phase_transition_digits.py:smoke --root /tmp/pt
  # Other grids: widths and task counts are '+'-separated lists; 'inf' is an infinite pool.
  python -m launch.sweep --config experiments/phase_transition_digits.py:widths=16+32+64,seeds=2 \
      --root sweeps/digits_wide
  # One point on its own (the config without sweep overrides is the first model size).
  python -m icl_jax.main --config experiments/phase_transition_digits.py:num_tasks=16 --workdir ...
"""

from icl_jax import config as config_lib
from icl_jax import fields
from icl_jax import presets


def _arg(arg):
  return config_lib.parse_arg(
      arg, smoke=False, widths='16+64', tasks='1+4+16+64+256+1024+4096+16384+65536+inf',
      seeds=1, steps=1200, num_tasks=2**16)


def get_config(arg=None):
  a = _arg(arg)
  # experiments/gpicl_digits.py's setting at the grid's first width, evaluated more often.
  c = presets.gpicl_digits(a.num_tasks, int(a.widths.split('+')[0]), a.steps,
                           eval_every_steps=400)
  if a.smoke:
    config_lib.shrink_for_smoke(c, steps=20)
  return c


def sweep(add, arg=None):
  a = _arg(arg)
  widths = [int(w) for w in a.widths.split('+')]
  tasks = presets.task_counts(a.tasks)
  seeds = range(a.seeds)
  if a.smoke:  # A 2 x 3 grid of tiny models: the whole pipeline in about a minute.
    widths, tasks, seeds = [8, 16], [1, 64, fields.INFINITE_TASKS], range(1)
  for width in widths:
    for num_tasks in tasks:
      for seed in seeds:
        add(**{'model.width': width, 'task.num_tasks': num_tasks, 'seed': seed,
               'model.qkv_size': max(width // 4, 1)})
