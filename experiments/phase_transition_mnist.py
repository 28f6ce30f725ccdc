r"""GPICL's phase diagram at paper scale: MNIST, model size 2..512 x 2^0..2^24 tasks.

For GPU/TPU hosts (MNIST prepared once with `tfds build mnist --file_format=array_record`,
see experiments/gpicl_mnist.py). Each point is experiments/gpicl_mnist.py with the paper's
[x_t, onehot(y_{t-1})] prompt; the grid is the paper's heatmap. With the vmap backend a
model size is one group: its task counts and seeds train as one program over all devices.

  # Every point (7 model sizes x 13 task counts x seeds), one group per model size.
  python -m launch.sweep --config experiments/phase_transition_mnist.py --root /shared/sweeps/mnist
  # On a SLURM cluster: one array task per group.
  python -m launch.sweep --config experiments/phase_transition_mnist.py --root /shared/sweeps/mnist \
      --backend slurm --slurm_partition gpu --slurm_gpus_per_node 8
  # A Cloud TPU VM pod slice: every worker runs the vmap backend.
  python -m launch.sweep --config experiments/phase_transition_mnist.py --root /mnt/sweeps/mnist \
      --backend tpu_vm --tpu my-v4-32 --zone us-central2-b
  python -m icl_jax.report --root /shared/sweeps/mnist
  # A coarser grid: '+'-separated lists; 'inf' is an infinite task pool.
  python -m launch.sweep --config experiments/phase_transition_mnist.py:sizes=64+256,tasks=16+65536+inf ...
"""

from icl_jax import config as config_lib
from icl_jax import presets

_SIZES = '2+8+32+64+128+256+512'
_TASKS = '+'.join(str(2**k) for k in range(0, 25, 2)) + '+inf'


def _arg(arg):
  return config_lib.parse_arg(arg, smoke=False, sizes=_SIZES, tasks=_TASKS, seeds=2,
                              steps=50_000)


def get_config(arg=None):
  a = _arg(arg)
  # The paper's setting (as experiments/gpicl_mnist.py's defaults); the sweep sets the model
  # size and task count of each point.
  c = presets.gpicl_mnist(steps=a.steps)
  if a.smoke:
    config_lib.shrink_for_smoke(c, steps=20)
  # Set after the smoke shrink, so smoke configs keep them as they always have.
  c.train.eval_every_steps = 5000
  c.train.checkpoint_every_steps = 5000
  return c


def sweep(add, arg=None):
  a = _arg(arg)
  sizes = [int(s) for s in a.sizes.split('+')]
  tasks = presets.task_counts(a.tasks)
  seeds = range(a.seeds)
  if a.smoke:
    sizes, tasks, seeds = [8, 16], [1, 2**16], range(1)
  for size in sizes:
    for num_tasks in tasks:
      for seed in seeds:
        # The paper keeps 8 heads of key/query/value size 32 at every model size.
        add(**{'model.width': size, 'task.num_tasks': num_tasks, 'seed': seed})
