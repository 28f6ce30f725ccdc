"""The sweep's figures, drawn from its PointRecords and their grid; matplotlib only here.

  phase_diagram.png    model size x number of tasks: seen and unseen accuracy at the last
                       positions, and the phase label (GPICL's Figure 3).
  unseen_vs_tasks.png  unseen-task accuracy against the number of tasks, per model size.
  plateau.png          loss-plateau length against batch size, number of tasks, Adam's
                       epsilon or the biased fraction, when the sweep varies them; a
                       power law fitted to it against batch size (GPICL section 4.4).
  training_curves.png  every point's training loss, and its unseen-task accuracy early
                       and late in the episode at each evaluation during training.
  state_size.png       unseen-task accuracy against accessible state size and against
                       parameter count, one line per model, when the sweep varies the
                       model (GPICL's state-size figure; experiments/state_size.py).
"""

from __future__ import annotations

import collections
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from icl_jax import diagnose
from icl_jax import fields as fields_lib
from icl_jax import files
from icl_jax.report.grid import Grid, cell_mean, cell_phase, done_accs, format_num_tasks
from icl_jax.report.grid import num_tasks_key, value_key
from icl_jax.report.points import BATCH_SIZE, NUM_TASKS, SEED
from icl_jax.report.points import PointRecord
from icl_jax.status import DONE

PHASE_DIAGRAM, UNSEEN_VS_TASKS, PLATEAU = 'phase_diagram.png', 'unseen_vs_tasks.png', 'plateau.png'
STATE_SIZE, TRAINING_CURVES = 'state_size.png', 'training_curves.png'
# The plateau's interventions (GPICL section 4.4), besides the number of tasks.
EPS, BIAS_FRACTION = 'train.eps', 'task.bias_fraction'
PLATEAU_FIELDS = (BATCH_SIZE, NUM_TASKS, EPS, BIAS_FRACTION)
MODEL_NAMES = {'lstm': 'LSTM', 'outer_lstm': 'outer-product LSTM', 'transformer': 'Transformer',
               'lsa': 'linear self-attention'}
PHASE_ABBREV = {'general_learning': 'GL', 'task_identification': 'TI',
                'memorisation': 'M', 'no_learning': 'NL'}
PHASE_COLORS = {'general_learning': '#2ca02c', 'task_identification': '#ff7f0e',
                'memorisation': '#1f77b4', 'no_learning': '#f4a6a6'}
EMPTY_COLOR = '#eeeeee'


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _chances(points: Sequence[PointRecord]) -> list[float]:
  return sorted({1.0 / p.num_classes for p in points if p.state == DONE and p.num_classes})


def positions(field: str, values: Sequence[Any]) -> dict[Any, float]:
  """x of each value of `field`: linear for a fraction (it includes 0), log2 otherwise."""
  if field == BIAS_FRACTION:
    return {v: float(v) for v in values if fields_lib.is_number(v)}
  return log2_positions(values, fields_lib.INFINITE_TASKS if field == NUM_TASKS else None)


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
    if fields_lib.INFINITE_TASKS in xs and len(xs) > 1:
      # The infinite pool sits past a gap, not at a real log2 position.
      ax.axvline(xs[fields_lib.INFINITE_TASKS] - 1, color='gray', ls=':', lw=0.8,
                 label='axis break: ∞ (a new task every episode) is not to scale')
  else:
    ax.set_xticklabels([f'{v:g}' if isinstance(v, float) else str(v) for v in xs])
  ax.set_xlabel({NUM_TASKS: 'number of tasks', BATCH_SIZE: 'batch size', EPS: "Adam's epsilon",
                 BIAS_FRACTION: 'biased fraction of each batch'}.get(field, field))


def plot_phase_diagram(path: str, grid: Grid, chances: Sequence[float]) -> None:
  plt = _pyplot()
  from matplotlib import colors as mcolors  # pylint: disable=g-import-not-at-top
  from matplotlib import patches  # pylint: disable=g-import-not-at-top
  num_rows, num_cols = len(grid.rows), len(grid.cols)
  # Three panels stacked, each as wide as its columns need: readable at a page's width
  # (side by side, a sweep of 2^0..2^16 tasks made a strip whose text vanished).
  panel_w, panel_h = max(4.0, 0.52 * num_cols + 2.6), max(1.8, 0.42 * num_rows + 1.2)
  fig, axes = plt.subplots(3, 1, figsize=(panel_w + 1.6, 3 * panel_h + 0.4), squeeze=False)
  axes = axes[:, 0]
  chance = f' (chance {", ".join(f"{c:.2f}" for c in chances)})' if chances else ''
  for ax, key, title in ((axes[0], 'seen/acc_last', 'seen tasks'),
                         (axes[1], 'unseen/acc_last', 'unseen tasks')):
    values_RxC = np.full((num_rows, num_cols), np.nan)
    for i, row in enumerate(grid.rows):
      for j, col in enumerate(grid.cols):
        mean = cell_mean(grid.points(row, col), key)
        values_RxC[i, j] = np.nan if mean is None else mean
    cmap = plt.get_cmap('viridis').with_extremes(bad=EMPTY_COLOR)
    image = ax.imshow(np.ma.masked_invalid(values_RxC), cmap=cmap, vmin=0, vmax=1,
                      aspect='auto', origin='lower')
    fig.colorbar(image, ax=ax, label='accuracy,\nlast positions', fraction=0.05, pad=0.02)
    for (i, j), v in np.ndenumerate(values_RxC):
      if not np.isnan(v):
        ax.text(j, i, f'{v:.2f}', ha='center', va='center', fontsize=8,
                color='white' if v < 0.6 else 'black')
    ax.set_title(f'{title}: accuracy at the last positions{chance}', fontsize=9)

  ax = axes[2]
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

  for ax in axes:
    ax.set_xticks(range(num_cols))
    ax.set_xticklabels([format_num_tasks(c, tex=True) for c in grid.cols])
    ax.set_yticks(range(num_rows))
    ax.set_yticklabels(grid.row_labels, fontsize=8)
    ax.set_ylabel('model size')
  axes[-1].set_xlabel('number of tasks (∞: a new task every episode)')
  fig.tight_layout()
  files.save_figure(fig, path)
  plt.close(fig)


def plot_unseen_vs_tasks(path: str, grid: Grid, chances: Sequence[float]) -> None:
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  xs = log2_positions(grid.cols, infinite=fields_lib.INFINITE_TASKS)
  colors = plt.get_cmap('plasma')(np.linspace(0.05, 0.8, max(len(grid.rows), 1)))
  for color, row, label in zip(colors, grid.rows, grid.row_labels):
    line_x, mean, lo, hi = [], [], [], []
    for col in grid.cols:
      values = done_accs(grid.points(row, col), 'unseen/acc_last')
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
  files.save_figure(fig, path)
  plt.close(fig)


def plateau_fields(points: Sequence[PointRecord], swept: Sequence[str]) -> list[str]:
  """The plateau fields (PLATEAU_FIELDS) that the sweep varies."""
  return [f for f in PLATEAU_FIELDS if f in swept and len({p.get(f) for p in points}) > 1]


def plot_plateau(path: str, points: Sequence[PointRecord], grid: Grid,
                 fields: Sequence[str],
                 batch_fits: Mapping[str, Mapping[str, float]] | None = None) -> None:
  """Plateau length against each field, a line per model size (and the other field)."""
  plt = _pyplot()
  known = [p for p in points if p.state == DONE and p.left_plateau is not None]
  fig, axes = plt.subplots(1, len(fields), figsize=(6.0 * len(fields), 4.2), squeeze=False)
  for ax, field in zip(axes[0], fields):
    _plateau_panel(plt, ax, known, grid, field, [f for f in fields if f != field],
                   batch_fits or {})
  fig.tight_layout()
  files.save_figure(fig, path)
  plt.close(fig)


def _plateau_panel(plt, ax, known: Sequence[PointRecord], grid: Grid, field: str,
                   others: Sequence[str], batch_fits: Mapping[str, Mapping[str, float]]
                   ) -> None:
  from matplotlib import lines as mlines  # pylint: disable=g-import-not-at-top
  xs = positions(field, sorted({p.get(field) for p in known}, key=value_key))
  groups = collections.defaultdict(list)
  for p in known:
    groups[(grid.row_of(p),) + tuple(p.get(f) for f in others)].append(p)
  order = sorted(groups, key=lambda g: (grid.rows.index(g[0]), tuple(map(num_tasks_key, g[1:]))))
  colors = plt.get_cmap('plasma')(np.linspace(0.05, 0.8, max(len(groups), 1)))
  row_labels = dict(zip(grid.rows, grid.row_labels))
  censored_any = False
  # Lines that coincide (equal plateau lengths) stay visible: each later one thinner, dashed
  # differently and drawn on top.
  styles = ('-', '--', '-.', ':')
  for i, (color, group) in enumerate(zip(colors, order)):
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
    ax.plot(line_x, [np.mean(steps_by_x[x]) for x in line_x], color=color, label=label,
            lw=max(3.0 - 0.6 * i, 1.0), ls=styles[i % len(styles)], zorder=2 + 0.01 * i)
  if field == BATCH_SIZE:
    # GPICL: the plateau shortens about as a power of the batch size. Drawn on the log2
    # axis the x values use, per model (the fit pools the other fields' values).
    for label, law in batch_fits.items():
      grid_x = np.linspace(min(xs.values()), max(xs.values()), 50)
      ax.plot(grid_x, law['coef'] * np.exp2(grid_x)**law['exponent'], color='black', lw=1,
              ls=':', label=f'{label}: fit {law["coef"]:.3g} B^{law["exponent"]:.2f} '
              f'(R² {law["r2"]:.2f})')
  _axis_labels(ax, xs, field)  # First: its axis break joins the legend.
  handles, _ = ax.get_legend_handles_labels()
  if censored_any:
    handles.append(mlines.Line2D([], [], color='gray', marker='^', ls='none',
                                 markerfacecolor='none',
                                 label='never left the plateau\n(at its final step)'))
  ax.legend(handles=handles, fontsize=7)
  ax.set_ylabel('steps until loss < ln(classes) - %g' % diagnose.PLATEAU_MARGIN)
  ax.set_ylim(bottom=0)
  ax.grid(alpha=0.3)
  ax.set_title('Loss-plateau length (line: mean, counting censored points as their final '
               'step)', fontsize=9)


def state_size_points(points: Sequence[PointRecord]) -> list[PointRecord]:
  """The done points with an accuracy, a state size and a parameter count."""
  return [p for p in points if p.acc('unseen/acc_last') is not None
          and p.state_size and p.num_params]


def plot_state_size(path: str, points: Sequence[PointRecord], chances: Sequence[float]) -> None:
  """Two panels sharing the accuracy axis: against state size, and against parameters."""
  plt = _pyplot()
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharey=True)
  models = sorted({str(p.get('model.name')) for p in points})
  for ax, field, label in ((axes[0], 'state_size', 'accessible state size (floats per sequence, '
                                                   'log scale)'),
                           (axes[1], 'num_params', 'parameters (log scale)')):
    for model in models:
      mine = [p for p in points if str(p.get('model.name')) == model]
      by_x = collections.defaultdict(list)
      for p in mine:
        by_x[p.get(field)].append(p.acc('unseen/acc_last'))
      xs = sorted(by_x)
      line, = ax.plot(xs, [np.mean(by_x[x]) for x in xs], marker='o', lw=2,
                      label=MODEL_NAMES.get(model, model))
      for x in xs:
        ax.scatter([x] * len(by_x[x]), by_x[x], color=line.get_color(), s=12, alpha=0.5)
    for chance in chances:
      ax.axhline(chance, color='gray', ls='--', lw=1, label=f'chance ({chance:.2f})')
    ax.set_xscale('log')
    # Minor ticks' labels (2x10^4, 3x10^4, ...) run into one another over a decade or two.
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel('unseen-task accuracy, last positions')
  axes[0].set_ylim(0, 1.02)
  axes[0].set_title('against the state the next prediction can draw on', fontsize=10)
  axes[1].set_title('against the parameter count', fontsize=10)
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc='lower center', ncol=len(labels), fontsize=8, frameon=False)
  fig.suptitle('Meta-test accuracy by model family and size (lines: mean over seeds; dots: '
               'seeds)', fontsize=10)
  fig.tight_layout(rect=(0, 0.07, 1, 0.95))
  files.save_figure(fig, path)
  plt.close(fig)


def curve_groups(points: Sequence[PointRecord],
                 swept: Sequence[str]) -> dict[tuple, list[PointRecord]]:
  """Points with a loss curve, grouped by their swept values other than the seed."""
  fields = [f for f in swept if f != SEED]
  groups = collections.defaultdict(list)
  for p in points:
    if p.losses:
      groups[tuple(p.get(f) for f in fields)].append(p)
  return dict(sorted(groups.items(), key=lambda g: tuple(value_key(v) for v in g[0])))


def plot_training_curves(path: str, points: Sequence[PointRecord],
                         swept: Sequence[str]) -> None:
  """Training loss against step (left) and, when the runs evaluated along the way, the
  unseen-task accuracy at the last positions (solid) and the first (dotted) against step
  (right): a line per point, a colour per value of the swept fields other than the seed."""
  plt = _pyplot()
  groups = curve_groups(points, swept)
  fields = [f for f in swept if f != SEED]
  with_evals = any(len(p.evals) > 1 for ps in groups.values() for p in ps)
  # One legend below the panels, where it covers no curve: a row per `ncol` entries.
  ncol = 3 if with_evals else 2
  rows = math.ceil((len(groups) + 1) / ncol)
  fig, axes = plt.subplots(1, 2 if with_evals else 1, squeeze=False,
                           figsize=(12 if with_evals else 6.5, 4.0 + 0.2 * rows))
  # Distinct hues while they last (tab10); a sequential map beyond, where order is the key.
  colors = (plt.get_cmap('tab10')(np.arange(len(groups))) if len(groups) <= 10 else
            plt.get_cmap('viridis')(np.linspace(0.0, 0.85, len(groups))))
  for color, (values, mine) in zip(colors, groups.items()):
    label = ', '.join(f'{_short(f)}={format_num_tasks(v) if f == NUM_TASKS else v}'
                      for f, v in zip(fields, values)) or 'all points'
    label += f' ({len(mine)} seeds)' if len(mine) > 1 else ''
    for i, p in enumerate(mine):
      steps, losses = zip(*p.losses)
      axes[0][0].plot(steps, losses, color=color, lw=1.2, alpha=0.85,
                      label=label if i == 0 else None)
      if with_evals and len(p.evals) > 1:
        steps, first, last = zip(*p.evals)
        axes[0][1].plot(steps, last, color=color, lw=1.5)
        axes[0][1].plot(steps, first, color=color, lw=1.0, ls=':')
  for chance in sorted({p.num_classes for ps in groups.values() for p in ps if p.num_classes}):
    axes[0][0].axhline(math.log(chance), color='gray', ls='--', lw=0.8,
                       label=f'ln {chance} (chance)')
  axes[0][0].set_xlabel('training step')
  axes[0][0].set_ylabel('training loss (cross-entropy)')
  axes[0][0].set_ylim(bottom=0)
  axes[0][0].grid(alpha=0.3)
  axes[0][0].set_title('Training loss, a line per point', fontsize=9)
  if with_evals:
    ax = axes[0][1]
    ax.set_xlabel('training step')
    ax.set_ylabel('unseen-task accuracy')
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title('Unseen tasks during training: last positions (solid) vs first (dotted)',
                 fontsize=9)
  handles, labels = axes[0][0].get_legend_handles_labels()
  fig.legend(handles, labels, loc='lower center', ncol=ncol, fontsize=7, frameon=False)
  fig.tight_layout(rect=(0, min(0.03 + 0.045 * rows, 0.4), 1, 1))
  files.save_figure(fig, path)
  plt.close(fig)


def _short(field: str) -> str:
  return {BATCH_SIZE: 'batch', NUM_TASKS: 'tasks', BIAS_FRACTION: 'biased'}.get(
      field, field.rsplit('.', 1)[-1])


def draw_figures(out: str, points: Sequence[PointRecord], swept: Sequence[str], grid: Grid,
                 batch_fits: Mapping[str, Mapping[str, float]] | None = None
                 ) -> tuple[dict[str, str], dict[str, str]]:
  """({figure: path} drawn, {figure: why not}); a figure that cannot be drawn is skipped.
  `batch_fits`: grid.plateau_power_laws of the batch size, drawn into plateau.png."""
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
    skipped[PLATEAU] = f'the sweep varies none of {", ".join(PLATEAU_FIELDS)}'
  elif not any(p.state == DONE and p.left_plateau is not None for p in points):
    skipped[PLATEAU] = 'no done point has training-loss records and a class count'
  else:
    draw(PLATEAU, plot_plateau, points, grid, fields, batch_fits)
  if any(p.losses for p in points):
    draw(TRAINING_CURVES, plot_training_curves, points, swept)
  else:
    skipped[TRAINING_CURVES] = 'no point has training-loss records yet'
  sized = state_size_points(points)
  if 'model.name' not in swept:
    pass  # Not a study of model families: the figure does not apply.
  elif not sized:
    skipped[STATE_SIZE] = 'no done point has an accuracy, a state size and a parameter count'
  else:
    draw(STATE_SIZE, plot_state_size, sized, _chances(sized))
  return drawn, skipped
