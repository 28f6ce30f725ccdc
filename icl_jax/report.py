r"""The report of a sweep: one table of every point, and the phase diagram of the grid.

  python -m icl_jax.report --root DIR [--out DIR]

Reads the sweep root that the sweep launcher writes (`sweep.json`, and per point
`point.json`, `status.json`, `metrics.jsonl`, optionally `eval/<step>/results.json`) and
writes to `--out` (default: the root itself):
  summary.csv          one row per point: its state, swept fields, accuracies, phase, plateau.
  phase_diagram.png    model size x number of tasks: seen and unseen accuracy at the last
                       positions, and the phase label (GPICL's Figure 3).
  unseen_vs_tasks.png  unseen-task accuracy against the number of tasks, per model size.
  plateau.png          loss-plateau length against batch size and/or number of tasks,
                       when the sweep varies them.
Then prints markdown tables of unseen accuracy and phase per cell, the counts of done,
failed, running and pending points, and the reason of every failure. Points that have not
finished, or failed, never stop the report: they show up as such.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math
import os
import sys
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from icl_jax import config as config_lib
from icl_jax import diagnose
from icl_jax import metrics as metrics_lib
from icl_jax.errors import UserError
from icl_jax.sweep import POINT_FILE
from icl_jax.sweep import SWEEP_FILE
from icl_jax.status import STATUS_FILE

LOG_FILE = 'log.txt'  # A point's own log, if it has one (the launcher's is in status.json).
CSV_FILE = 'summary.csv'
PHASE_DIAGRAM, UNSEEN_VS_TASKS, PLATEAU = 'phase_diagram.png', 'unseen_vs_tasks.png', 'plateau.png'

DONE, FAILED, RUNNING, PENDING = 'done', 'failed', 'running', 'pending'
STATES = (DONE, FAILED, RUNNING, PENDING)
ACC_KEYS = ('seen/acc_first', 'seen/acc_last', 'unseen/acc_first', 'unseen/acc_last')
NUM_TASKS, BATCH_SIZE, SEED = 'task.num_tasks', 'train.batch_size', 'seed'
# Shown in every CSV whether swept or not: they say what each point was.
FIXED_FIELDS = ('model.name', 'model.width', 'model.depth', 'num_params', 'state_size', NUM_TASKS,
                SEED, BATCH_SIZE)
INF_LABEL = 'inf'
PHASE_ABBREV = {'general_learning': 'GL', 'task_identification': 'TI',
                'memorisation': 'M', 'no_learning': 'NL'}
PHASE_COLORS = {'general_learning': '#2ca02c', 'task_identification': '#ff7f0e',
                'memorisation': '#1f77b4', 'no_learning': '#f4a6a6'}
EMPTY_COLOR = '#eeeeee'


# ---------------------------------------------------------------------------------------
# Reading a sweep root
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Point:
  """One point of the sweep and whatever its workdir holds so far."""
  name: str
  workdir: str  # As sweep.json lists it: relative to the root.
  path: str  # The directory itself.
  overrides: dict[str, Any]
  config: dict[str, Any]
  state: str = PENDING
  step: int | None = None
  summary: dict[str, float] = dataclasses.field(default_factory=dict)
  summary_from: str | None = None  # 'eval' (results.json) or 'status'.
  num_params: int | None = None
  state_size: int | None = None  # Floats of state per sequence (GPICL's state-size study).
  num_classes: int | None = None
  seconds: float | None = None
  error: str | None = None
  log: str | None = None
  final_loss: float | None = None
  phase: str | None = None
  plateau_steps: int | None = None
  left_plateau: bool | None = None  # None: unknown (no loss records, or not done).

  def get(self, field: str) -> Any:
    """A dotted config field: the override if the sweep set it, else the stored config."""
    if field in ('num_params', 'state_size'):
      return getattr(self, field)
    if field in self.overrides:
      return self.overrides[field]
    node = self.config
    for part in field.split('.'):
      if not isinstance(node, Mapping) or part not in node:
        return None
      node = node[part]
    return node

  def acc(self, key: str) -> float | None:
    """An accuracy that figures and tables may use: of a done point, and a real number."""
    value = self.summary.get(key) if self.state == DONE else None
    return float(value) if _is_number(value) and math.isfinite(value) else None


def _read_json(path: str) -> Any:
  """The parsed file, or None if it is missing or cut short (a writer still at work)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None


def _sweep_entries(root: str) -> list[dict[str, Any]]:
  """(name, workdir, overrides) of every point: sweep.json's list, else each point.json dir."""
  sweep_path = os.path.join(root, SWEEP_FILE)
  if os.path.exists(sweep_path):
    sweep = _read_json(sweep_path)
    if not isinstance(sweep, Mapping) or not isinstance(sweep.get('points'), list):
      raise UserError(f'{sweep_path} is not a sweep file (JSON with a "points" list); rerun '
                      f'the sweep launcher with --root {root}, or delete it to report the '
                      f'subdirectories that hold a {POINT_FILE}.')
    entries = []
    for entry in sweep['points']:
      if not isinstance(entry, Mapping):
        continue
      workdir = entry.get('workdir') or entry.get('name')
      if workdir:
        entries.append({'name': entry.get('name') or workdir, 'workdir': str(workdir),
                        'overrides': entry.get('overrides')})
    return entries
  entries = []
  for workdir in sorted(os.listdir(root)):
    point = _read_json(os.path.join(root, workdir, POINT_FILE))
    if isinstance(point, Mapping):
      entries.append({'name': point.get('name') or workdir, 'workdir': workdir,
                      'overrides': point.get('overrides')})
  return entries


def load_point(root: str, name: str, workdir: str,
               overrides: Mapping[str, Any] | None = None) -> Point:
  """Reads one point's files; any of them may be missing or partial."""
  path = os.path.join(root, workdir)
  point_json = _read_json(os.path.join(path, POINT_FILE))
  point_json = point_json if isinstance(point_json, Mapping) else {}
  if overrides is None:
    overrides = point_json.get('overrides') or {}
  config = point_json.get('config')
  point = Point(name=name, workdir=workdir, path=path, overrides=dict(overrides),
                config=dict(config) if isinstance(config, Mapping) else {})
  # Only well-formed records: a hand-edited or foreign line must not stop the report.
  records = [r for r in (metrics_lib.read(path) if os.path.isdir(path) else [])
             if isinstance(r, Mapping) and _is_number(r.get('step'))
             and _is_number(r.get('train/loss', 0.0))]
  status = _read_json(os.path.join(path, STATUS_FILE))
  _apply_status(point, status if isinstance(status, Mapping) else None, records)
  _apply_records(point, records)
  return point


def _apply_status(point: Point, status: Mapping[str, Any] | None,
                  records: Sequence[Mapping[str, Any]]) -> None:
  log_txt = os.path.join(point.path, LOG_FILE)
  if status is None:
    # No status.json yet: a log or metrics mean the launcher started it.
    started = bool(records) or os.path.exists(log_txt)
    point.state = RUNNING if started else PENDING
    point.log = log_txt if os.path.exists(log_txt) else None
    return
  state = status.get('status')
  if state in STATES:
    point.state = state
  else:
    point.state = FAILED
    point.error = f'status.json has unknown status {state!r}'
  point.step = _int_or_none(status.get('step'))
  target = _int_or_none(point.config.get('train', {}).get('steps'))
  if point.state == DONE and point.step is not None and target and point.step < target:
    point.state = RUNNING  # Done at fewer steps than it is now set to train (resumable).
  point.num_params = _int_or_none(status.get('num_params'))
  point.state_size = _int_or_none(status.get('state_size'))
  point.num_classes = _int_or_none(status.get('num_classes'))
  point.seconds = _float_or_none(status.get('seconds'))
  if status.get('error'):
    # One line, so that the FAILED lines of the report stay one per point.
    point.error = ' '.join(str(status['error']).split())
  point.log = status.get('log') or (log_txt if os.path.exists(log_txt) else None)
  summary = status.get('summary') if isinstance(status.get('summary'), Mapping) else {}
  point.summary, point.summary_from = dict(summary), 'status' if summary else None
  results = _final_eval(point)
  if results is not None:
    point.summary, point.summary_from = dict(results['summary']), 'eval'
  if point.state != DONE:
    return
  if not all(point.acc(k) is not None for k in ACC_KEYS):
    point.error = point.error or 'done, but no accuracy summary in status.json'
  elif point.num_classes:
    point.phase = diagnose.phase(point.summary, point.num_classes)
  elif results is not None and results.get('phase') in diagnose.PHASES:
    point.phase = results['phase']


def _final_eval(point: Point) -> Mapping[str, Any] | None:
  """evaluate.py's results of the point's final step: more episodes than training's eval."""
  results = _read_json(os.path.join(point.path, 'eval', str(point.step), 'results.json'))
  if (point.step is not None and isinstance(results, Mapping)
      and isinstance(results.get('summary'), Mapping)
      and all(_is_number(results['summary'].get(k)) for k in ACC_KEYS)
      and _int_or_none(results.get('step', point.step)) == point.step):
    return results
  return None


def _apply_records(point: Point, records: Sequence[Mapping[str, Any]]) -> None:
  losses = sorted((r for r in records if 'train/loss' in r), key=lambda r: r['step'])
  if losses:
    point.final_loss = float(losses[-1]['train/loss'])
  if point.step is None and records:
    point.step = max(int(r['step']) for r in records)
  if losses and point.num_classes:
    point.plateau_steps = diagnose.plateau_length(records, point.num_classes)
    if point.plateau_steps is not None:
      point.left_plateau = True
    elif point.state == DONE:
      point.left_plateau = False  # A running point may still leave it.


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _int_or_none(x: Any) -> int | None:
  return int(x) if _is_number(x) and math.isfinite(x) else None


def _float_or_none(x: Any) -> float | None:
  return float(x) if _is_number(x) else None


def collect(root: str) -> tuple[list[Point], list[str]]:
  """Every point of the sweep at `root`, and the swept fields in order of first appearance."""
  if not os.path.isdir(root):
    raise UserError(f'Sweep root {root!r} is not a directory. Run python -m launch.sweep '
                    f'--config EXPERIMENT --root {root} first, or pass the --root of a sweep.')
  entries = _sweep_entries(root)
  if not entries:
    raise UserError(f'Sweep root {root!r} holds no points: no {SWEEP_FILE} with points and '
                    f'no subdirectory with a {POINT_FILE}. Run python -m launch.sweep --config '
                    f'EXPERIMENT --root {root} first, or pass the --root of a sweep.')
  points = [load_point(root, **entry) for entry in entries]
  # The sweep author's order (model.width before model.depth), not the alphabet's.
  swept = list(dict.fromkeys(f for p in points for f in p.overrides))
  return points, swept


# ---------------------------------------------------------------------------------------
# The grid: model size x number of tasks, averaged over everything else
# ---------------------------------------------------------------------------------------
def value_key(x: Any) -> tuple:
  """Sorts mixed values: numbers by value, then strings; None last."""
  if x is None:
    return (3, '')
  if isinstance(x, (int, float)) and not isinstance(x, bool):
    return (0, x)
  return (1 if isinstance(x, bool) else 2, str(x))


def num_tasks_key(n: Any) -> tuple:
  """Finite task counts ascending, then the infinite pool, then unknown."""
  return (1, 0) if n == config_lib.INFINITE_TASKS else (0,) + value_key(n)


def format_num_tasks(n: Any, tex: bool = False) -> str:
  if n == config_lib.INFINITE_TASKS:
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
  cells: dict[tuple[tuple, Any], list[Point]]

  def row_of(self, point: Point) -> tuple:
    return tuple(point.get(f) for f in self.model_fields)

  def points(self, row: tuple, col: Any) -> list[Point]:
    return self.cells.get((row, col), [])


def make_grid(points: Sequence[Point], swept: Sequence[str]) -> Grid:
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


def _row_label(model_fields: Sequence[str], row: tuple, points: Sequence[Point]) -> str:
  if model_fields:
    return ','.join(f'{f.split(".", 1)[1]}={v}' for f, v in zip(model_fields, row))
  # Nothing swept about the model: name the one model all points share, if known.
  width, depth = points[0].get('model.width'), points[0].get('model.depth')
  return f'width={width},depth={depth}' if width is not None else 'model'


def _done(points: Sequence[Point], key: str) -> list[float]:
  return [p.acc(key) for p in points if p.acc(key) is not None]


def cell_mean(points: Sequence[Point], key: str) -> float | None:
  values = _done(points, key)
  return float(np.mean(values)) if values else None


def cell_phase(points: Sequence[Point]) -> tuple[str | None, int]:
  """The most common phase among the done points (ties: diagnose.PHASES order), its count."""
  counts = collections.Counter(p.phase for p in points if p.state == DONE and p.phase)
  if not counts:
    return None, 0
  best = max(diagnose.PHASES, key=lambda ph: (counts[ph], -diagnose.PHASES.index(ph)))
  return best, counts[best]


# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------
def _empty_cell(points: Sequence[Point]) -> str:
  """What a cell with no result shows: '-' if no point, else the states of its points."""
  states = sorted({p.state for p in points}, key=STATES.index)
  return '/'.join(states) if states else '-'


def acc_cell(points: Sequence[Point], key: str = 'unseen/acc_last') -> str:
  mean = cell_mean(points, key)
  if mean is None:
    return _empty_cell(points)
  done = len(_done(points, key))
  return f'{mean:.3f}' + (f' ({done}/{len(points)} done)' if done < len(points) else '')


def phase_cell(points: Sequence[Point]) -> str:
  label, count = cell_phase(points)
  if label is None:
    return _empty_cell(points)
  return label + (f' ({count}/{len(points)})' if count < len(points) else '')


def markdown_table(grid: Grid, cell: Callable[[Sequence[Point]], str]) -> str:
  head = ['model \\ num_tasks'] + [format_num_tasks(c) for c in grid.cols]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' + '---:|' * len(grid.cols)]
  for row, label in zip(grid.rows, grid.row_labels):
    cells = [cell(grid.points(row, col)) for col in grid.cols]
    lines.append('| ' + ' | '.join([label] + cells) + ' |')
  return '\n'.join(lines)


def count_states(points: Sequence[Point]) -> dict[str, int]:
  counts = collections.Counter(p.state for p in points)
  return {s: counts[s] for s in STATES}


def report_text(points: Sequence[Point], grid: Grid) -> str:
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


# ---------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------
def csv_columns(swept: Sequence[str]) -> list[str]:
  fields = list(swept) + [f for f in FIXED_FIELDS if f not in swept]
  return (['name', 'status', 'workdir'] + fields + ['step', *ACC_KEYS, 'summary_from', 'phase',
          'plateau_steps', 'left_plateau', 'train/loss', 'seconds', 'log', 'error'])


def csv_row(point: Point, columns: Sequence[str]) -> dict[str, Any]:
  fixed = {'name': point.name, 'status': point.state, 'workdir': point.workdir,
           'step': point.step, 'summary_from': point.summary_from, 'phase': point.phase,
           'plateau_steps': point.plateau_steps, 'left_plateau': point.left_plateau,
           'train/loss': point.final_loss, 'seconds': point.seconds, 'log': point.log,
           'error': point.error}
  # Failed points keep whatever summary they wrote: it says how far they got.
  fixed.update({k: point.summary.get(k) for k in ACC_KEYS})
  row = {}
  for column in columns:
    value = fixed[column] if column in fixed else point.get(column)
    if column == NUM_TASKS and value is not None:
      value = format_num_tasks(value)
    row[column] = '' if value is None else value
  return row


def write_csv(path: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------
def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _chances(points: Sequence[Point]) -> list[float]:
  return sorted({1.0 / p.num_classes for p in points if p.state == DONE and p.num_classes})


def log2_positions(values: Sequence[Any], infinite: Any = None) -> dict[Any, float]:
  """x of each value on a log2 axis; `infinite` goes two octaves past the largest value."""
  finite = [v for v in values if v != infinite and isinstance(v, (int, float)) and v > 0]
  xs = {v: math.log2(v) for v in finite}
  if infinite is not None and infinite in values:
    xs[infinite] = (max(xs.values()) + 2) if xs else 0.0
  return xs


def _axis_labels(ax, xs: Mapping[Any, float], field: str) -> None:
  ax.set_xticks(list(xs.values()))
  if field == NUM_TASKS:
    ax.set_xticklabels([format_num_tasks(v, tex=True) for v in xs])
    if config_lib.INFINITE_TASKS in xs and len(xs) > 1:
      # The infinite pool sits past a gap, not at a real log2 position.
      ax.axvline(xs[config_lib.INFINITE_TASKS] - 1, color='gray', ls=':', lw=0.8)
  else:
    ax.set_xticklabels([str(v) for v in xs])
  ax.set_xlabel({NUM_TASKS: 'number of tasks', BATCH_SIZE: 'batch size'}.get(field, field))


def plot_phase_diagram(path: str, grid: Grid, chances: Sequence[float]) -> None:
  plt = _pyplot()
  from matplotlib import colors as mcolors  # pylint: disable=g-import-not-at-top
  from matplotlib import patches  # pylint: disable=g-import-not-at-top
  num_rows, num_cols = len(grid.rows), len(grid.cols)
  panel_w, panel_h = max(3.2, 0.75 * num_cols + 1.6), max(2.4, 0.55 * num_rows + 1.4)
  fig, axes = plt.subplots(1, 3, figsize=(3 * panel_w + 1.5, panel_h + 0.9), squeeze=False)
  chance = f' (chance {", ".join(f"{c:.2f}" for c in chances)})' if chances else ''
  for ax, key, title in ((axes[0][0], 'seen/acc_last', 'seen tasks'),
                         (axes[0][1], 'unseen/acc_last', 'unseen tasks')):
    values_RxC = np.full((num_rows, num_cols), np.nan)
    for i, row in enumerate(grid.rows):
      for j, col in enumerate(grid.cols):
        mean = cell_mean(grid.points(row, col), key)
        values_RxC[i, j] = np.nan if mean is None else mean
    cmap = plt.get_cmap('viridis').with_extremes(bad=EMPTY_COLOR)
    image = ax.imshow(np.ma.masked_invalid(values_RxC), cmap=cmap, vmin=0, vmax=1,
                      aspect='auto', origin='lower')
    fig.colorbar(image, ax=ax, label='accuracy, last positions', fraction=0.08)
    for (i, j), v in np.ndenumerate(values_RxC):
      if not np.isnan(v):
        ax.text(j, i, f'{v:.2f}', ha='center', va='center', fontsize=8,
                color='white' if v < 0.6 else 'black')
    ax.set_title(f'{title}: accuracy{chance}', fontsize=9)

  ax = axes[0][2]
  index_RxC = np.full((num_rows, num_cols), np.nan)
  for i, row in enumerate(grid.rows):
    for j, col in enumerate(grid.cols):
      label, count = cell_phase(grid.points(row, col))
      if label is not None:
        index_RxC[i, j] = diagnose.PHASES.index(label)
        text = PHASE_ABBREV[label] + ('*' if count < len(grid.points(row, col)) else '')
        ax.text(j, i, text, ha='center', va='center', fontsize=8, fontweight='bold')
  cmap = mcolors.ListedColormap([PHASE_COLORS[ph] for ph in diagnose.PHASES]).with_extremes(
      bad=EMPTY_COLOR)
  ax.imshow(np.ma.masked_invalid(index_RxC), cmap=cmap, vmin=-0.5,
            vmax=len(diagnose.PHASES) - 0.5, aspect='auto', origin='lower')
  handles = [patches.Patch(color=PHASE_COLORS[ph], label=f'{PHASE_ABBREV[ph]}: {ph}')
             for ph in diagnose.PHASES]
  handles.append(patches.Patch(color=EMPTY_COLOR, label='not done'))
  ax.legend(handles=handles, fontsize=7, loc='upper left', bbox_to_anchor=(1.02, 1.0),
            title='*: label of only some points', title_fontsize=7)
  ax.set_title('phase (most common label)', fontsize=9)

  for ax in axes[0]:
    ax.set_xticks(range(num_cols))
    ax.set_xticklabels([format_num_tasks(c, tex=True) for c in grid.cols])
    ax.set_yticks(range(num_rows))
    ax.set_yticklabels(grid.row_labels, fontsize=8)
    ax.set_xlabel('number of tasks')
  axes[0][0].set_ylabel('model size')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_unseen_vs_tasks(path: str, grid: Grid, chances: Sequence[float]) -> None:
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  xs = log2_positions(grid.cols, infinite=config_lib.INFINITE_TASKS)
  colors = plt.get_cmap('plasma')(np.linspace(0.05, 0.8, max(len(grid.rows), 1)))
  for color, row, label in zip(colors, grid.rows, grid.row_labels):
    line_x, mean, lo, hi = [], [], [], []
    for col in grid.cols:
      values = _done(grid.points(row, col), 'unseen/acc_last')
      if not values or col not in xs:
        continue
      line_x.append(xs[col])
      mean.append(np.mean(values))
      lo.append(min(values))
      hi.append(max(values))
      ax.scatter([xs[col]] * len(values), values, color=color, s=12, alpha=0.6, zorder=3)
    if line_x:
      ax.plot(line_x, mean, color=color, lw=2, marker='o', ms=4, label=label, zorder=4)
      ax.fill_between(line_x, lo, hi, color=color, alpha=0.15)
  for chance in chances:
    ax.axhline(chance, color='gray', ls='--', lw=1, label=f'chance ({chance:.2f})')
  _axis_labels(ax, xs, NUM_TASKS)
  ax.set_ylabel('unseen-task accuracy, last positions')
  ax.set_ylim(0, 1.02)
  ax.grid(alpha=0.3)
  ax.set_title('Generalisation to unseen tasks (mean, min-max band, seeds as dots)', fontsize=9)
  ax.legend(fontsize=8, title='model size', title_fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plateau_fields(points: Sequence[Point], swept: Sequence[str]) -> list[str]:
  """The plateau fields (batch size, number of tasks) that take more than one value."""
  return [f for f in (BATCH_SIZE, NUM_TASKS)
          if f in swept and len({p.get(f) for p in points}) > 1]


def plot_plateau(path: str, points: Sequence[Point], grid: Grid, fields: Sequence[str]) -> None:
  """Plateau length against each field, a line per model size (and the other field)."""
  plt = _pyplot()
  known = [p for p in points if p.state == DONE and p.left_plateau is not None]
  fig, axes = plt.subplots(1, len(fields), figsize=(6.0 * len(fields), 4.2), squeeze=False)
  for ax, field in zip(axes[0], fields):
    _plateau_panel(plt, ax, known, grid, field, [f for f in fields if f != field])
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _plateau_panel(plt, ax, known: Sequence[Point], grid: Grid, field: str,
                   others: Sequence[str]) -> None:
  from matplotlib import lines as mlines  # pylint: disable=g-import-not-at-top
  infinite = config_lib.INFINITE_TASKS if field == NUM_TASKS else None
  xs = log2_positions(sorted({p.get(field) for p in known}, key=value_key), infinite)
  groups = collections.defaultdict(list)
  for p in known:
    groups[(grid.row_of(p),) + tuple(p.get(f) for f in others)].append(p)
  order = sorted(groups, key=lambda g: (grid.rows.index(g[0]), tuple(map(num_tasks_key, g[1:]))))
  colors = plt.get_cmap('plasma')(np.linspace(0.05, 0.8, max(len(groups), 1)))
  row_labels = dict(zip(grid.rows, grid.row_labels))
  censored_any = False
  for color, group in zip(colors, order):
    label = row_labels[group[0]] + ''.join(
        f', {_short(f)}={format_num_tasks(v) if f == NUM_TASKS else v}'
        for f, v in zip(others, group[1:]))
    steps_by_x = collections.defaultdict(list)
    for p in groups[group]:
      if p.get(field) not in xs:
        continue
      # Censored: it never left the plateau, so its length is at least the final step.
      x, censored = xs[p.get(field)], not p.left_plateau
      y = p.step if censored else p.plateau_steps
      steps_by_x[x].append(y)
      censored_any |= censored
      ax.scatter([x], [y], s=40 if censored else 14, zorder=3, marker='^' if censored else 'o',
                 facecolors='none' if censored else color, edgecolors=color)
    line_x = sorted(steps_by_x)
    ax.plot(line_x, [np.mean(steps_by_x[x]) for x in line_x], color=color, lw=1.8, label=label)
  handles, _ = ax.get_legend_handles_labels()
  if censored_any:
    handles.append(mlines.Line2D([], [], color='gray', marker='^', ls='none',
                                 markerfacecolor='none',
                                 label='never left the plateau\n(at its final step)'))
  ax.legend(handles=handles, fontsize=7)
  _axis_labels(ax, xs, field)
  ax.set_ylabel('steps until loss < ln(classes) - %g' % diagnose.PLATEAU_MARGIN)
  ax.set_ylim(bottom=0)
  ax.grid(alpha=0.3)
  ax.set_title('Loss-plateau length (line: mean, counting censored points as their final '
               'step)', fontsize=9)


def _short(field: str) -> str:
  return {BATCH_SIZE: 'batch', NUM_TASKS: 'tasks'}.get(field, field.rsplit('.', 1)[-1])


def draw_figures(out: str, points: Sequence[Point], swept: Sequence[str],
                 grid: Grid) -> tuple[dict[str, str], dict[str, str]]:
  """({figure: path} drawn, {figure: why not}); a figure that cannot be drawn is skipped."""
  drawn, skipped = {}, {}

  def draw(name, plot, *args):
    try:
      plot(os.path.join(out, name), *args)
    except Exception as e:  # pylint: disable=broad-except
      # A figure is a view of summary.csv: losing one must not lose the table and the CSV.
      skipped[name] = f'drawing failed: {type(e).__name__}: {e}'
    else:
      drawn[name] = os.path.join(out, name)

  if any(p.acc('unseen/acc_last') is not None for p in points):
    chances = _chances(points)
    draw(PHASE_DIAGRAM, plot_phase_diagram, grid, chances)
    draw(UNSEEN_VS_TASKS, plot_unseen_vs_tasks, grid, chances)
  else:
    for name in (PHASE_DIAGRAM, UNSEEN_VS_TASKS):
      skipped[name] = 'no point is done with an accuracy summary yet'
  fields = plateau_fields(points, swept)
  if not fields:
    skipped[PLATEAU] = f'the sweep varies neither {BATCH_SIZE} nor {NUM_TASKS}'
  elif not any(p.state == DONE and p.left_plateau is not None for p in points):
    skipped[PLATEAU] = 'no done point has training-loss records and a class count'
  else:
    draw(PLATEAU, plot_plateau, points, grid, fields)
  return drawn, skipped


# ---------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------
def report(root: str, out: str | None = None) -> dict[str, Any]:
  """Writes summary.csv and the figures of the sweep at `root` into `out` (default: root).

  Returns {'root', 'out', 'csv': path, 'figures': {name: path}, 'skipped': {name: reason},
  'table': the text to print, 'rows': the CSV rows as dicts, 'counts': {state: n},
  'swept': the swept fields}.
  """
  points, swept = collect(root)
  out = out or root
  os.makedirs(out, exist_ok=True)
  columns = csv_columns(swept)
  rows = [csv_row(p, columns) for p in points]
  csv_path = os.path.join(out, CSV_FILE)
  write_csv(csv_path, rows, columns)
  grid = make_grid(points, swept)
  figures, skipped = draw_figures(out, points, swept, grid)
  return {'root': root, 'out': out, 'csv': csv_path, 'figures': figures, 'skipped': skipped,
          'table': report_text(points, grid), 'rows': rows, 'counts': count_states(points),
          'swept': swept}


def main(argv: Sequence[str]) -> None:
  del argv
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  flags = absl_flags.FLAGS
  try:
    result = report(flags.root, flags.out)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(result['table'])
  print()
  for path in [result['csv'], *result['figures'].values()]:
    print(f'wrote {path}')
  for name, reason in result['skipped'].items():
    print(f'skipped {name}: {reason}')


def define_flags() -> None:
  """Flags of the CLI; defined only when run as a program, so importing stays side-effect free."""
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  absl_flags.DEFINE_string('root', None, 'Sweep root (the --root given to the sweep launcher).',
                           required=True)
  absl_flags.DEFINE_string('out', None, 'Output dir for summary.csv and figures; default --root.')


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main)
