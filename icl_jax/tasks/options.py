"""TaskOptions: the static settings of the synthetic task families.

Its own module so that the family modules (functions, gp, parity, recall) and the registry
(families.py) that imports them all read it from one place, without an import cycle.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TaskOptions:
  """Static options of all families (hashable: a static argument of jit).

  Each family reads the fields it needs. x_scale and x_shift give x = x_scale * z + x_shift
  for z from the family's base distribution, before y is computed (Akyurek et al.'s
  out-of-distribution evaluation); parity and recall ignore them.
  """
  dim: int = 20  # D: input dimension; bits n for parity; number of keys for recall.
  sparsity: int = 3  # Non-zero weights (sparse_linear); parity order k.
  hidden: int = 100  # relu2nn hidden units.
  tree_depth: int = 4  # Decision tree depth.
  noise_std: float = 0.0  # Std of Gaussian label noise added to y (regression families).
  x_scale: float = 1.0
  x_shift: float = 0.0
  length_scale: float = 0.6  # gp: RBF length scale.
  x_low: float = 0.0  # gp: z ~ U[x_low, x_high]^D.
  x_high: float = 1.0
  num_classes: int = 10  # recall: number of value classes.
