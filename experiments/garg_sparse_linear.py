r"""Garg et al. (2022), sparse linear regression: w has 3 non-zero N(0, 1) coordinates (task.sparsity), compared with Lasso and least squares.

Same options and commands as experiments/garg_linear.py (see its docstring), e.g.

  python -m icl_jax.main --config experiments/garg_sparse_linear.py --workdir workdirs/garg_sparse_linear
  python -m icl_jax.main --config experiments/garg_sparse_linear.py:setting=cpu --workdir workdirs/garg_sparse_linear_cpu
  python -m icl_jax.evaluate --workdir workdirs/garg_sparse_linear_cpu
"""

from icl_jax import presets


def get_config(arg=None):
  return presets.garg('sparse_linear', arg)
