r"""Garg et al. (2022), depth-4 decision trees on the signs of coordinates, leaves ~ N(0, 1), compared with scikit-learn trees.

Same options and commands as experiments/garg_linear.py (see its docstring), e.g.

  python -m icl_jax.main --config experiments/garg_tree.py --workdir workdirs/garg_tree
  python -m icl_jax.main --config experiments/garg_tree.py:setting=cpu --workdir workdirs/garg_tree_cpu
  python -m icl_jax.evaluate --workdir workdirs/garg_tree_cpu
"""

from icl_jax import presets


def get_config(arg=None):
  return presets.garg('tree', arg)
