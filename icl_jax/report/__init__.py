r"""The report of a sweep: one table of every point, and the phase diagram of the grid.

  python -m icl_jax.report --root DIR [--out DIR]

Reads the sweep root that the sweep launcher writes (`sweep.json`, and per point
`point.json`, `status.json`, `metrics.jsonl`, optionally `eval/<step>/results.json`) and
writes to `--out` (default: the root itself):
  summary.csv          one row per point: its state, swept fields, accuracies, phase, plateau.
  phase_diagram.png    model size x number of tasks: seen and unseen accuracy at the last
                       positions, and the phase label (GPICL's Figure 3).
  unseen_vs_tasks.png  unseen-task accuracy against the number of tasks, per model size.
  training_curves.csv  every point's training loss at each logged step, and its unseen-task
                       accuracy at each evaluation during training.
  plateau.png          loss-plateau length against batch size, number of tasks, Adam's
                       epsilon or the biased fraction, when the sweep varies them, with
                       the power law fitted against batch size.
  training_curves.png  the curves of training_curves.csv, a line per point.
Then prints markdown tables of unseen accuracy and phase per cell, the counts of done,
failed, running and pending points, and the reason of every failure. Points that have not
finished, or failed, never stop the report: they show up as such.

  points.py       reading a sweep root into PointRecords
  grid.py         model size x number of tasks: cells, markdown tables, the text report
  summary_csv.py  the columns and rows of summary.csv
  figures.py      the figures (matplotlib is imported only to draw them)
No JAX, orbax or TFDS: the report runs anywhere the sweep's files can be read.
"""

from __future__ import annotations

import os
from typing import Any

from icl_jax import files
from icl_jax import status as status_lib
from icl_jax.errors import UserError
from icl_jax.report import figures as figures_lib
from icl_jax.report.figures import draw_figures, plateau_fields
from icl_jax.report.grid import Grid, cell_mean, cell_phase, count_states, make_grid
from icl_jax.report.grid import acc_cell, phase_cell, plateau_power_laws, power_law
from icl_jax.report.grid import report_text
from icl_jax.report.points import PointRecord, load_point, read_points
from icl_jax.report.points import BATCH_SIZE
from icl_jax.report.summary_csv import CSV_FILE, CURVES_FILE, csv_columns, csv_row
from icl_jax.report.summary_csv import curve_columns, curve_rows

__all__ = ['report', 'PointRecord', 'load_point', 'read_points', 'Grid', 'make_grid',
           'cell_mean', 'cell_phase', 'acc_cell', 'phase_cell', 'count_states', 'report_text',
           'csv_columns', 'csv_row', 'draw_figures', 'plateau_fields', 'plateau_power_laws',
           'power_law']


# What the report writes into --out.
OUTPUTS = (CSV_FILE, CURVES_FILE, figures_lib.PHASE_DIAGRAM, figures_lib.UNSEEN_VS_TASKS,
           figures_lib.PLATEAU, figures_lib.STATE_SIZE, figures_lib.TRAINING_CURVES)


def report(root: str, out: str | None = None) -> dict[str, Any]:
  """Writes summary.csv and the figures of the sweep at `root` into `out` (default: root).

  Returns {'root', 'out', 'csv': path, 'figures': {name: path}, 'skipped': {name: reason},
  'table': the text to print, 'rows': the CSV rows as dicts, 'counts': {state: n},
  'swept': the swept fields, 'plateau_fits': {row label: power law of the plateau
  length in the batch size} when the sweep varies the batch size}.
  """
  files.local(root, 'Sweep root')
  if out is not None:
    status_lib.check_output_dir(files.local(out, 'Output directory'), '--out')
    if (os.path.abspath(out) != os.path.abspath(root)
        and os.path.exists(os.path.join(out, status_lib.SWEEP_FILE))):
      raise UserError(f'--out {out} is the root of another sweep, whose summary.csv and '
                      'figures are there; choose another --out (default: --root itself).')
  points, swept = read_points(root)
  if out is not None and os.path.abspath(out) != os.path.abspath(root):
    files.claim_output_dir(out, OUTPUTS, '--out', written_before=os.path.isfile(
        os.path.join(out, CSV_FILE)))
  out = out or root
  os.makedirs(out, exist_ok=True)
  columns = csv_columns(swept)
  rows = [csv_row(p, columns) for p in points]
  csv_path = os.path.join(out, CSV_FILE)
  files.write_csv(csv_path, columns, ([row[c] for c in columns] for row in rows))
  files.write_csv(os.path.join(out, CURVES_FILE), curve_columns(swept),
                  (row for p in points for row in curve_rows(p, swept)))
  grid = make_grid(points, swept)
  fits = plateau_power_laws(points, grid, BATCH_SIZE) if BATCH_SIZE in swept else {}
  figures, skipped = draw_figures(out, points, swept, grid, fits)
  table = report_text(points, grid)
  for label, law in fits.items():
    table += (f'\nplateau vs batch size, {label}: {law["coef"]:.3g} * B^{law["exponent"]:.2f} '
              f'steps (R^2 {law["r2"]:.2f}, {law["points"]} points that left the plateau)')
  return {'root': root, 'out': out, 'csv': csv_path, 'figures': figures, 'skipped': skipped,
          'table': table, 'rows': rows, 'counts': count_states(points), 'swept': swept,
          'plateau_fits': fits}
