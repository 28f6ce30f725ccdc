"""The grid of a sweep: model size x number of tasks, averaged over everything else.

Rows are the swept model fields (ordered by parameter count), columns the task counts;
each cell holds its points. The text report is two markdown tables of the cells (unseen
accuracy, phase), the counts of each state, and one line per failed point.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np

from icl_jax import diagnose
from icl_jax import fields as fields_lib
from icl_jax.report.points import NUM_TASKS
from icl_jax.report.points import PointRecord
from icl_jax.status import DONE, FAILED, STATES

INF_LABEL = 'inf'


def value_key(x: Any) -> tuple:
  """Sorts mixed values: numbers by value, then strings; None last."""
  if x is None:
    return (3, '')
  if fields_lib.is_number(x):
    return (0, x)
  return (1 if isinstance(x, bool) else 2, str(x))


def num_tasks_key(n: Any) -> tuple:
  """Finite task counts ascending, then the infinite pool, then unknown."""
  return (1, 0) if n == fields_lib.INFINITE_TASKS else (0,) + value_key(n)


def format_num_tasks(n: Any, tex: bool = False) -> str:
  if n == fields_lib.INFINITE_TASKS:
    return r'$\infty$' if tex else INF_LABEL
  if n is None:
    return '?'
  if tex and isinstance(n, int) and n > 1 and n & (n - 1) == 0:
    return f'$2^{{{n.bit_length() - 1}}}$'
  return str(n)


@dataclasses.dataclass
class Grid:
  """Points grouped into cells: rows are model sizes, columns task counts."""
  model_fields: list[str]
  rows: list[tuple]
  row_labels: list[str]
  cols: list[Any]
  cells: dict[tuple[tuple, Any], list[PointRecord]]

  def row_of(self, point: PointRecord) -> tuple:
    return tuple(point.get(f) for f in self.model_fields)

  def points(self, row: tuple, col: Any) -> list[PointRecord]:
    return self.cells.get((row, col), [])


def make_grid(points: Sequence[PointRecord], swept: Sequence[str]) -> Grid:
  model_fields = [f for f in swept if f.startswith('model.')]
  grid = Grid(model_fields, [], [], [], {})
  for p in points:
    grid.cells.setdefault((grid.row_of(p), p.get(NUM_TASKS)), []).append(p)
  by_row = collections.defaultdict(list)
  for p in points:
    by_row[grid.row_of(p)].append(p)

  def size_key(row):
    sizes = [p.num_params for p in by_row[row] if p.num_params is not None]
    # Rows without a known size (nothing finished) go after the measured ones.
    return (min(sizes) if sizes else math.inf, tuple(value_key(v) for v in row))

  grid.rows = sorted(by_row, key=size_key)
  grid.row_labels = [_row_label(model_fields, row, by_row[row]) for row in grid.rows]
  grid.cols = sorted({p.get(NUM_TASKS) for p in points}, key=num_tasks_key)
  return grid


def _row_label(model_fields: Sequence[str], row: tuple, points: Sequence[PointRecord]) -> str:
  """The swept model fields, then the parameter count once a point of the row reports it:
  `width=64 (52k params)`."""
  if model_fields:
    label = ','.join(f'{f.split(".", 1)[1]}={v}' for f, v in zip(model_fields, row))
  else:  # Nothing swept about the model: name the one model all points share, if known.
    width, depth = points[0].get('model.width'), points[0].get('model.depth')
    label = f'width={width},depth={depth}' if width is not None else 'model'
  sizes = sorted({p.num_params for p in points if p.num_params is not None})
  if sizes:
    label += f' ({"-".join(format_count(n) for n in (sizes[0], sizes[-1])[:len(sizes)])} params)'
  return label


def format_count(n: int) -> str:
  """10000 -> '10k', 1234567 -> '1.2M', 950 -> '950'."""
  for scale, suffix in ((1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if n >= scale:
      value = n / scale
      return f'{value:.2g}{suffix}' if value < 10 else f'{value:.0f}{suffix}'
  return str(n)


def done_accs(points: Sequence[PointRecord], key: str) -> list[float]:
  """The accuracies `key` of the done points that have one."""
  return [p.acc(key) for p in points if p.acc(key) is not None]


def cell_mean(points: Sequence[PointRecord], key: str) -> float | None:
  values = done_accs(points, key)
  return float(np.mean(values)) if values else None


def cell_phase(points: Sequence[PointRecord]) -> tuple[str | None, int]:
  """The most common phase among the done points (ties: diagnose.PHASES order), its count."""
  counts = collections.Counter(p.phase for p in points if p.state == DONE and p.phase)
  if not counts:
    return None, 0
  best = max(diagnose.PHASES, key=lambda ph: (counts[ph], -diagnose.PHASES.index(ph)))
  return best, counts[best]


# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------
def _empty_cell(points: Sequence[PointRecord]) -> str:
  """What a cell with no result shows: '-' if no point, else the states of its points."""
  states = sorted({p.state for p in points}, key=STATES.index)
  return '/'.join(states) if states else '-'


def acc_cell(points: Sequence[PointRecord], key: str = 'unseen/acc_last') -> str:
  mean = cell_mean(points, key)
  if mean is None:
    return _empty_cell(points)
  done = len(done_accs(points, key))
  return f'{mean:.3f}' + (f' ({done}/{len(points)} done)' if done < len(points) else '')


def phase_cell(points: Sequence[PointRecord]) -> str:
  label, count = cell_phase(points)
  if label is None:
    return _empty_cell(points)
  return label + (f' ({count}/{len(points)})' if count < len(points) else '')


def markdown_table(grid: Grid, cell: Callable[[Sequence[PointRecord]], str]) -> str:
  head = ['model \\ num_tasks'] + [format_num_tasks(c) for c in grid.cols]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' + '---:|' * len(grid.cols)]
  for row, label in zip(grid.rows, grid.row_labels):
    cells = [cell(grid.points(row, col)) for col in grid.cols]
    lines.append('| ' + ' | '.join([label] + cells) + ' |')
  return '\n'.join(lines)


def power_law(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float] | None:
  """y = coef * x^exponent by least squares in log-log space, with its R^2; None with fewer
  than 3 distinct x (two points always fit exactly) or a non-positive value."""
  if len(set(xs)) < 3 or min(list(xs) + list(ys)) <= 0:
    return None
  lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
  exponent, intercept = np.polyfit(lx, ly, 1)
  residual = ly - (exponent * lx + intercept)
  total = ((ly - ly.mean())**2).sum()
  r2 = 1.0 - (residual**2).sum() / total if total > 0 else 1.0
  return {'exponent': float(exponent), 'coef': float(np.exp(intercept)), 'r2': float(r2),
          'points': len(xs)}


def plateau_power_laws(points: Sequence[PointRecord], grid: Grid,
                       field: str) -> dict[str, dict[str, float]]:
  """{row label: power_law(field value, plateau steps)} over the done points of each grid
  row that left the plateau (one that never did has no length to fit, only a bound)."""
  labels = dict(zip(grid.rows, grid.row_labels))
  out = {}
  for row in grid.rows:
    left = [p for p in points if grid.row_of(p) == row and p.state == DONE and p.left_plateau
            and fields_lib.is_number(p.get(field))]
    fitted = power_law([p.get(field) for p in left], [p.plateau_steps for p in left])
    if fitted is not None:
      out[labels[row]] = fitted
  return out


def count_states(points: Sequence[PointRecord]) -> dict[str, int]:
  counts = collections.Counter(p.state for p in points)
  return {s: counts[s] for s in STATES}


def report_text(points: Sequence[PointRecord], grid: Grid) -> str:
  counts = count_states(points)
  lines = ['Unseen-task accuracy, last positions (mean over the other swept fields):', '',
           markdown_table(grid, acc_cell), '',
           'Phase (most common label among done points):', '',
           markdown_table(grid, phase_cell), '',
           f'points: {len(points)} | ' + ', '.join(f'{n} {s}' for s, n in counts.items())]
  for p in points:
    if p.state == FAILED:
      lines.append(f'FAILED {p.name}: {p.error or "no error recorded"} (log: {p.log or "none"})')
  return '\n'.join(lines)
