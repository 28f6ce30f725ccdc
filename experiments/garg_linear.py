r"""Garg et al. (2022): in-context linear regression, w, x ~ N(0, I_d), against least squares.

Interleaved prompt x_1, y_1, x_2, ..., squared error at every prefix, evaluated as the
normalised squared error (divided by d) vs. the number of examples, beside least squares,
ridge, Lasso, tuned gradient descent, 3-NN and averaging on the very same episodes.

  # The paper's setting (d = 20, curriculum, 500k steps; for accelerators).
  python -m icl_jax.main --config experiments/garg_linear.py --workdir workdirs/garg_linear
  # What trains on a 2-core CPU in minutes: d = 8, 17 examples, a 4-layer width-64 model.
  python -m icl_jax.main --config experiments/garg_linear.py:setting=cpu --workdir workdirs/garg_cpu
  python -m icl_jax.evaluate --workdir workdirs/garg_cpu      # curves: error.png, results.csv
  # Model size, noise, a finite pool of tasks (Raventos et al.'s task diversity):
  python -m icl_jax.main --config experiments/garg_linear.py:size=small,noise_std=0.5 ...
  python -m icl_jax.main --config experiments/garg_linear.py:setting=cpu,num_tasks=64 ...
  # Seconds, for checking the pipeline end to end.
  python -m icl_jax.main --config experiments/garg_linear.py:smoke --workdir /tmp/garg_smoke

Options (`:a=1,b=2`): setting (paper|cpu), size (tiny|small|standard|cpu), dim, points,
steps, lr, curriculum (1|0), noise_std, batch_size, num_tasks (-1: a fresh w per episode),
smoke.
"""

from icl_jax import presets


def get_config(arg=None):
  return presets.garg('linear', arg)
