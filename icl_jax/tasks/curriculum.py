"""Garg et al.'s curriculum: the input dimension and the number of examples grow with the step.

At step s the sampler keeps the first `dim(s)` coordinates of x (the rest are zero before y
is computed) and the loss counts the first `points(s)` examples of each sequence. Shapes never
change, so one compiled step serves the whole curriculum; because the models are causal, the
predictions at the counted positions are exactly those of the truncated sequence. Both
values are functions of the step alone, so a resumed run continues the schedule exactly.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections


@dataclasses.dataclass(frozen=True)
class Curriculum:
  dim_start: int
  dim_inc: int
  dim_end: int
  points_start: int
  points_inc: int
  points_end: int
  every_steps: int

  @classmethod
  def from_config(cls, task_config: ml_collections.ConfigDict) -> Curriculum | None:
    """The task's curriculum, or None when it is off (full dim and points from step 0)."""
    c = task_config.curriculum
    if not c.enabled:
      return None
    return cls(c.dim_start, c.dim_inc, task_config.dim, c.points_start, c.points_inc,
               task_config.seq_len, c.every_steps)

  def at(self, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(active_dim, active_points) at `step`, int32 scalars (step may be traced)."""
    stage = jnp.asarray(step, jnp.int32) // self.every_steps
    dim = jnp.minimum(self.dim_start + self.dim_inc * stage, self.dim_end)
    points = jnp.minimum(self.points_start + self.points_inc * stage, self.points_end)
    return dim.astype(jnp.int32), points.astype(jnp.int32)
