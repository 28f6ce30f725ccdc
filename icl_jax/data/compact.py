"""A split's inputs as uint8 pixels plus a 256-entry table: 4x smaller than float32, exact.

`load` z-normalises a split by one scalar mean and std. Where the values before that are
integers in [0, 255] (digits' 0..16, MNIST's 0..255 at 28x28: no resize or colour mixing
made them fractional), a split is its uint8 pixels plus the normalised value of each of the
256 levels (`level_table`). The device keeps that form (`Pixels`) and the sampler looks up
only the rows it gathers.

The table is computed on the host with numpy, as `load` always normalised: a lookup moves
those float32 bits unchanged, where dividing on the device would not reproduce them (XLA's
CPU division differs from IEEE's in the last bit for a fifth of digits' values). So the
rows an episode gathers are bit for bit the rows of `Dataset.x_NxD`, on any backend, and
runs made before this form existed reproduce exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np


def normalise(values_NxD: Any, mean: Any, std: Any) -> Any:
  """(values - mean) / std in float32 (`mean`, `std`: float32 scalars), on the host: every
  z-normalised input of the project comes from this expression."""
  return (values_NxD.astype(np.float32) - mean) / std


def as_uint8(x_NxD: np.ndarray) -> np.ndarray | None:
  """The uint8 array equal to float `x_NxD`, or None if any value is not an integer in
  [0, 255] (a resize or a colour mix made it fractional): storing it would be lossy."""
  if x_NxD.size and (x_NxD.min() < 0 or x_NxD.max() > 255):
    return None
  pixels_NxD = x_NxD.astype(np.uint8)
  return pixels_NxD if np.array_equal(pixels_NxD, x_NxD) else None


def level_table(mean: np.float32, std: np.float32) -> np.ndarray:
  """float32[256]: the normalised value of each pixel level; table[pixels] equals
  normalise(pixels, mean, std) elementwise, bit for bit."""
  return normalise(np.arange(256, dtype=np.uint8), mean, std)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Pixels:
  """A split's x_NxD as the sampler reads it on device: uint8 pixels and the level table.
  `pixels[idx]` gathers rows and looks up only those, to the same float32 values as
  `Dataset.x_NxD[idx]`; `shape` is x_NxD's. A pytree: it passes through jit, vmap and
  shardings like the array it stands for."""
  values_NxD: Any  # uint8 (N, D); numpy on the host, jax.Array on devices.
  table_256: Any  # float32 (256,): level_table(mean, std) of the split.

  @property
  def shape(self) -> tuple[int, ...]:
    return self.values_NxD.shape

  def __getitem__(self, idx: Any) -> Any:
    return self.table_256[self.values_NxD[idx]]
