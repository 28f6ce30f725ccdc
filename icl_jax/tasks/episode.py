"""The unit every sampler produces and every model and baseline consumes."""

from typing import NamedTuple

import jax


class Episode(NamedTuple):
  """A batch of B sequences of T labelled examples.

  x_BxTxD: float32 inputs. y_BxT: int32 labels in [0, num_classes).
  """
  x_BxTxD: jax.Array
  y_BxT: jax.Array
