"""The task families: the one registry the trainer, the config and the docs read.

Every family's `sample(key, task_key, *, batch_size, seq_len, num_tasks, unseen, options,
active_dim=None)` is a pure, jit-able function returning an Episode of B episodes of T
examples, each from one task; task i is derived from `fold_in(task_key, i)` with ids from
`projected.sample_task_ids` (seen [0, num_tasks), unseen [2**31, 2**32)), so pools cost
no memory. `num_tasks` (-1: a fresh task per episode) and `active_dim` may be traced.

A family that `reads_dataset` ('projected', GPICL's) takes the dataset too, as keywords:
`x_NxD, y_N, num_classes, proj_scale, bias_fraction, projection` (see projected.sample). Its
number of classes is the dataset's, so its `num_classes` is None; the synthetic families draw
their own inputs, and their shape follows from TaskOptions alone.

`y_variance` is E[y^2] under the prior (noise included, x_scale=1, x_shift=0, all
coordinates active): the squared error of always predicting 0, which normalises the
squared error of a regression family (linear: D, Garg et al.'s "normalised by d").
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from icl_jax.tasks import functions
from icl_jax.tasks import gp
from icl_jax.tasks import parity
from icl_jax.tasks import projected
from icl_jax.tasks import recall
from icl_jax.tasks.episode import Episode
from icl_jax.tasks.options import TaskOptions


class Family(NamedTuple):
  kind: str  # 'regression' or 'classification'.
  sample: Callable[..., Episode]
  # Classification: C; regression: 1. None where the family reads a dataset: C is the
  # dataset's, known once it is loaded, not a function of the options.
  num_classes: Callable[[TaskOptions], int] | None
  y_variance: Callable[[TaskOptions], float]  # Regression: E[y^2]; classification: 1.0.
  # The sampler also takes the dataset (x_NxD, y_N, num_classes, proj_scale, bias_fraction,
  # projection) and ignores TaskOptions.
  reads_dataset: bool = False
  # What figures and tables call the family's tasks (a dataset's name where it reads one).
  title: str = ''
  # What this family asks of config.task beyond each field's own check: the problem and
  # its fix (one line), or None (config.validate calls it).
  check: Callable[[Any], str | None] | None = None

  @property
  def uses_curriculum(self) -> bool:
    """Garg et al.'s curriculum grows the inputs' dimension and the points a regression
    loss counts: only the regression families have either."""
    return self.kind == 'regression'


def _one_output(options: TaskOptions) -> int:
  del options
  return 1


def _unit_variance(options: TaskOptions) -> float:
  return 1.0 + options.noise_std**2


def _dim_variance(options: TaskOptions) -> float:
  return options.dim + options.noise_std**2


def _sparsity_variance(options: TaskOptions) -> float:
  return options.sparsity + options.noise_std**2


def _not_regression(options: TaskOptions) -> float:
  del options
  return 1.0


def _regression(sample, y_variance, title, check=None) -> Family:
  return Family('regression', sample, _one_output, y_variance, title=title, check=check)


def _sparsity_within_dim(t) -> str | None:
  if t.sparsity <= t.dim:
    return None
  return (f'config.task.sparsity={t.sparsity} exceeds config.task.dim={t.dim}: a '
          f'{t.family} task picks that many of the dim coordinates; lower it.')


def _tree_depth(t) -> str | None:
  if t.tree_depth <= 16:
    return None
  return (f'config.task.tree_depth={t.tree_depth} would give 2**{t.tree_depth} leaves per '
          f'task; use at most 16 (Garg et al. use 4).')


def _two_classes(t) -> str | None:
  if t.num_classes >= 2:
    return None
  return f'config.task.num_classes must be >= 2 for recall, got {t.num_classes!r}.'


# Insertion order is the order the config's error messages list them in.
FAMILIES: dict[str, Family] = {
    'projected': Family('classification', projected.sample, None, _not_regression,
                        reads_dataset=True),
    'linear': _regression(functions.sample_linear, _dim_variance, 'linear functions'),
    'sparse_linear': _regression(functions.sample_sparse_linear, _sparsity_variance,
                                 'sparse linear functions', _sparsity_within_dim),
    # E[y^2] = E|x|^2 = D by the sqrt(2/hidden) scale, for any number of hidden units.
    'relu2nn': _regression(functions.sample_relu2nn, _dim_variance, '2-layer ReLU networks'),
    'tree': _regression(functions.sample_tree, _unit_variance,  # y is a N(0, 1) leaf.
                        'decision trees', _tree_depth),
    'gp': _regression(gp.sample_gp, _unit_variance, 'GP-prior functions'),  # k(x, x) = 1.
    'parity': Family('classification', parity.sample_parity, lambda options: 2,
                     _not_regression, title='sparse parities', check=_sparsity_within_dim),
    'recall': Family('classification', recall.sample_recall,
                     lambda options: options.num_classes, _not_regression,
                     title='associative recall', check=_two_classes),
}

# The families that need nothing but TaskOptions (every sampler takes the same keywords).
SYNTHETIC_FAMILIES: dict[str, Family] = {
    name: family for name, family in FAMILIES.items() if not family.reads_dataset}


def register(name: str, family: Family) -> Family:
  """Adds a task family: one file, `tasks/<name>.py` (the package imports every module in
  it) or a plugin (icl_jax/plugins.py), calls this with its sampler; `config.task.family`
  may then name it. Its settings are TaskOptions' (config.task's synthetic fields)."""
  if name in FAMILIES and FAMILIES[name] is not family:
    raise ValueError(f'Two task families are named {name!r}.')
  FAMILIES[name] = family
  if not family.reads_dataset:
    SYNTHETIC_FAMILIES[name] = family
  return family
