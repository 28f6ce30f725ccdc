r"""Garg et al. (2022), 2-layer ReLU networks with 100 hidden units, y = sqrt(2/100) w2 . relu(W1 x).

Same options and commands as experiments/garg_linear.py (see its docstring), e.g.

  python -m icl_jax.main --config experiments/garg_relu2nn.py --workdir workdirs/garg_relu2nn
  python -m icl_jax.main --config experiments/garg_relu2nn.py:setting=cpu --workdir workdirs/garg_relu2nn_cpu
  python -m icl_jax.evaluate --workdir workdirs/garg_relu2nn_cpu
"""

from icl_jax import presets


def get_config(arg=None):
  return presets.garg('relu2nn', arg)
