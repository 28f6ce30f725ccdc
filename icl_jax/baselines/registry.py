"""The registry of classical in-context learners: the one place evaluation, its tables and
the documentation's list read them from.

A learner is one `register(Baseline(...))` call in the module that defines it; importing
`icl_jax.baselines` imports every module of the package (and plugins, icl_jax/plugins.py),
so a new learner is one file.

    register(Baseline(
        name='knn', title='1-nearest neighbour', kind=CLASSIFICATION,
        predict=functools.partial(predict_knn, k=1)))

`predict` takes the episodes of a family of its kind: a classifier (x_BxTxD, y_BxT,
num_classes) -> scores_BxTxC, a regressor (x_BxTxD, y_BxT) -> pred_BxT, at every position
from the examples before it; jit-able unless `host` (numpy in and out, e.g. scikit-learn).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

CLASSIFICATION, REGRESSION = 'classification', 'regression'


@dataclasses.dataclass(frozen=True)
class Baseline:
  name: str  # What --baselines and results.json call it.
  title: str  # What tables and figures call it.
  kind: str  # CLASSIFICATION or REGRESSION: the families it serves.
  predict: Callable[..., Any]
  # (config.task) -> keyword arguments of `predict` from the task's prior, e.g. ridge's
  # lambda from the label noise.
  prior: Callable[[Any], dict[str, Any]] | None = None
  # Picks a hyperparameter on training-pool episodes, disjoint from the evaluation ones:
  # (x_BxTxD, y_BxT[, num_classes]) -> (value, anything); `predict` then gets it as the
  # keyword `tuned`.
  tune: Callable[..., tuple[Any, Any]] | None = None
  tuned: str = 'lr'
  host: bool = False  # numpy in and out, called outside jit.
  # Whether a run of a family (its name) is compared with it when --baselines is not given.
  default: Callable[[str], bool] = lambda family: True


_REGISTRY: dict[tuple[str, str], Baseline] = {}


def register(baseline: Baseline) -> Baseline:
  if baseline.kind not in (CLASSIFICATION, REGRESSION):
    raise ValueError(f'Baseline {baseline.name!r}: kind must be {CLASSIFICATION!r} or '
                     f'{REGRESSION!r}, got {baseline.kind!r}.')
  key = (baseline.kind, baseline.name)
  if key in _REGISTRY and _REGISTRY[key] != baseline:
    raise ValueError(f'Two {baseline.kind} baselines are named {baseline.name!r}.')
  _REGISTRY[key] = baseline
  return baseline


def available(regression: bool) -> dict[str, Baseline]:
  """Every learner for a family of this kind, in registration order."""
  kind = REGRESSION if regression else CLASSIFICATION
  return {name: b for (k, name), b in _REGISTRY.items() if k == kind}


def defaults(regression: bool, family: str) -> list[str]:
  """The learners a run of `family` is compared with when none are named."""
  return [name for name, b in available(regression).items() if b.default(family)]


def title(name: str, regression: bool) -> str:
  """What tables call a learner; its name where none is registered."""
  b = available(regression).get(name)
  return b.title if b is not None else name
