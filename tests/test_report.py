"""Sweep reports on hand-written sweep roots: table cells, phases, plateaus, partial points."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import pytest

from icl_jax import report as report_lib
from icl_jax.errors import UserError
from icl_jax.report import figures as figures_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LN10 = math.log(10)
ON_PLATEAU = LN10 + 0.01  # Loss of a uniform guess over 10 classes, plus noise.
OFF_PLATEAU = LN10 - 0.5


def summary(seen_first, seen_last, unseen_first, unseen_last):
  return {'seen/acc_first': seen_first, 'seen/acc_last': seen_last,
          'unseen/acc_first': unseen_first, 'unseen/acc_last': unseen_last}


def loss_records(leaves_at=None, final_step=300, every=50):
  """Training records every `every` steps; the loss leaves the plateau at `leaves_at`."""
  return [{'step': s, 'train/loss': ON_PLATEAU if leaves_at is None or s < leaves_at
           else OFF_PLATEAU, 'train/accuracy': 0.1}
          for s in range(every, final_step + 1, every)]


def point_name(overrides):
  return ','.join(f'{k}={v}' for k, v in sorted(overrides.items()))


def full_config(overrides):
  config = {'seed': 0, 'data': {'dataset': 'digits'},
            'task': {'num_tasks': 2**16, 'seq_len': 50},
            'model': {'width': 64, 'depth': 2, 'num_heads': 4},
            'train': {'steps': 300, 'batch_size': 64, 'lr': 1e-3}}
  for path, value in overrides.items():
    *parents, leaf = path.split('.')
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def write_json(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(obj, f)


def write_point(root, workdir, overrides, state='done', acc=None, records=(), num_params=None,
                step=300, error=None, log=None, eval_results=None, point_json=True,
                state_size=None):
  """One point's files as the launcher writes them; state 'pending' writes no directory."""
  path = os.path.join(root, workdir)
  if state == 'pending':
    return
  if point_json:
    write_json(os.path.join(path, 'point.json'), {
        'name': point_name(overrides), 'overrides': overrides,
        'config': full_config(overrides)})
  os.makedirs(path, exist_ok=True)
  if records:
    with open(os.path.join(path, 'metrics.jsonl'), 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in records)
  if state in ('done', 'failed'):
    write_json(os.path.join(path, 'status.json'), {
        'status': state, 'step': step, 'summary': acc or {}, 'num_params': num_params,
        'num_classes': 10, 'seconds': 12.5, 'error': error, 'log': log,
        'state_size': state_size})
  for eval_step, acc_eval in (eval_results or {}).items():
    write_json(os.path.join(path, 'eval', str(eval_step), 'results.json'), {
        'step': eval_step, 'summary': acc_eval, 'phase': 'unused', 'plateau_steps': None})


def write_sweep(root, points, with_sweep_json=True):
  """points: (overrides, kwargs of write_point); returns {name: workdir}."""
  os.makedirs(root, exist_ok=True)
  listed, workdirs = [], {}
  for i, (overrides, kwargs) in enumerate(points):
    workdir = f'point_{i:02d}'
    write_point(root, workdir, overrides, **kwargs)
    listed.append({'name': point_name(overrides), 'workdir': workdir, 'overrides': overrides})
    workdirs[point_name(overrides)] = workdir
  if with_sweep_json:
    write_json(os.path.join(root, 'sweep.json'), {
        'experiment': 'experiments/phase_transition_digits.py', 'arg': 'smoke',
        'points': listed})
  return workdirs


def grid_point(width, num_tasks, seed):
  return {'model.width': width, 'task.num_tasks': num_tasks, 'seed': seed}


PARAMS = {32: 10_000, 64: 40_000}


@pytest.fixture(name='sweep', scope='module')
def fixture_sweep(tmp_path_factory):
  """(root, report of it into <root>/report): width x num_tasks x seed, in every state.

  Drawn once for the module: figures take seconds on a busy CPU.

  Cells (unseen acc last; phase):
    width=32: 16 -> 0.10, 0.12 memorisation | 256 pending | inf -> 0.10 no_learning, failed
    width=64: 16 -> 0.15 (eval) task_id, running | 256 none | inf -> 0.70, 0.60 general
  """
  root = str(tmp_path_factory.mktemp('report') / 'sweep')
  log = os.path.join(root, 'point_03', 'log.txt')
  points = [
      (grid_point(32, 16, 0), dict(acc=summary(0.9, 0.9, 0.1, 0.1), num_params=PARAMS[32],
                                   records=loss_records(leaves_at=100),
                                   # Not the final step: must be ignored.
                                   eval_results={100: summary(0.1, 0.9, 0.1, 0.9)})),
      (grid_point(32, 16, 1), dict(acc=summary(0.9, 0.92, 0.1, 0.12), num_params=PARAMS[32],
                                   records=loss_records(leaves_at=150))),
      (grid_point(32, -1, 0), dict(acc=summary(0.1, 0.1, 0.1, 0.1), num_params=PARAMS[32],
                                   records=loss_records(leaves_at=None, final_step=300))),
      (grid_point(32, -1, 1), dict(state='failed', error='NaN loss at step 40', log=log,
                                   step=40, records=loss_records(final_step=40, every=20))),
      (grid_point(64, 16, 0), dict(acc=summary(0.9, 0.9, 0.1, 0.1), num_params=PARAMS[64],
                                   records=loss_records(leaves_at=50),
                                   # Final step: its summary wins over status.json's.
                                   eval_results={300: summary(0.2, 0.9, 0.1, 0.15)})),
      (grid_point(64, 16, 1), dict(state='running', records=loss_records(final_step=100))),
      (grid_point(64, -1, 0), dict(acc=summary(0.1, 0.8, 0.1, 0.7), num_params=PARAMS[64],
                                   records=loss_records(leaves_at=200))),
      (grid_point(64, -1, 1), dict(acc=summary(0.1, 0.8, 0.1, 0.6), num_params=PARAMS[64],
                                   records=loss_records(leaves_at=250))),
      (grid_point(32, 256, 0), dict(state='pending')),
  ]
  write_sweep(root, points)
  with open(log, 'w') as f:
    f.write('Traceback ...\nFloatingPointError: NaN loss at step 40\n')
  return root, report_lib.report(root, os.path.join(root, 'report'))


@pytest.fixture(name='plots')
def fixture_plots(monkeypatch):
  """Records which figures report() asks for, without drawing them."""
  calls = []
  for name in ('plot_phase_diagram', 'plot_unseen_vs_tasks', 'plot_plateau',
               'plot_training_curves'):
    monkeypatch.setattr(figures_lib, name,
                        lambda path, *args, name=name: calls.append(os.path.basename(path)))
  return calls


def read_csv(path):
  with open(path, newline='') as f:
    return {row['name']: row for row in csv.DictReader(f)}


def table_rows(table_text, first_cell):
  """The cells of the markdown row that starts with first_cell (label excluded)."""
  for line in table_text.splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if cells[0] == first_cell:
      yield cells[1:]


def test_report_tables_count_states_and_list_failures(sweep):
  sweep, result = sweep
  text = result['table']
  header = next(table_rows(text, 'model \\ num_tasks'))
  assert header == ['16', '256', 'inf']  # inf after every finite count.
  # Rows name the swept model fields and the parameter count the points reported.
  acc_32, phase_32 = table_rows(text, 'width=32 (10k params)')
  acc_64, phase_64 = table_rows(text, 'width=64 (40k params)')
  assert acc_32 == ['0.110', 'pending', '0.100 (1/2 done)']
  assert acc_64 == ['0.150 (1/2 done)', '-', '0.650']
  assert phase_32 == ['memorisation', 'pending', 'no_learning (1/2)']
  assert phase_64 == ['task_identification (1/2)', '-', 'general_learning']
  assert text.index('width=32') < text.index('width=64')  # Ordered by num_params.
  assert result['counts'] == {'done': 6, 'failed': 1, 'running': 1, 'pending': 1}
  assert 'points: 9 | 6 done, 1 failed, 1 running, 1 pending' in text
  log = os.path.join(sweep, 'point_03', 'log.txt')
  assert (f'FAILED model.width=32,seed=1,task.num_tasks=-1: NaN loss at step 40 (log: {log})'
          in text.splitlines())
  assert result['swept'] == ['model.width', 'task.num_tasks', 'seed']


def test_report_csv_rows(sweep):
  _, result = sweep
  rows = read_csv(result['csv'])
  assert len(rows) == 9
  with open(result['csv']) as f:
    columns = next(csv.reader(f))
  assert columns[:6] == ['name', 'status', 'workdir', 'model.width', 'task.num_tasks', 'seed']
  assert len(columns) == len(set(columns))  # Swept fixed fields are not repeated.
  for column in ('model.depth', 'num_params', 'train.batch_size', 'step', 'phase',
                 'plateau_steps', 'train/loss', 'seconds', 'log', 'error'):
    assert column in columns

  memorised = rows['model.width=32,seed=0,task.num_tasks=16']
  assert memorised['status'] == 'done' and memorised['workdir'] == 'point_00'
  assert memorised['summary_from'] == 'status'  # eval/100 is not the final step.
  assert float(memorised['unseen/acc_last']) == 0.1
  assert memorised['phase'] == 'memorisation'
  assert memorised['plateau_steps'] == '100' and memorised['left_plateau'] == 'True'
  assert memorised['num_params'] == '10000' and memorised['model.depth'] == '2'
  assert memorised['train.batch_size'] == '64' and memorised['step'] == '300'
  assert float(memorised['train/loss']) == pytest.approx(OFF_PLATEAU)

  evaluated = rows['model.width=64,seed=0,task.num_tasks=16']
  assert evaluated['summary_from'] == 'eval'
  assert float(evaluated['seen/acc_first']) == 0.2
  assert float(evaluated['unseen/acc_last']) == 0.15
  assert evaluated['phase'] == 'task_identification'

  stuck = rows['model.width=32,seed=0,task.num_tasks=-1']
  assert stuck['task.num_tasks'] == 'inf'
  assert stuck['phase'] == 'no_learning'
  assert stuck['plateau_steps'] == '' and stuck['left_plateau'] == 'False'

  failed = rows['model.width=32,seed=1,task.num_tasks=-1']
  assert failed['status'] == 'failed' and failed['error'] == 'NaN loss at step 40'
  assert failed['phase'] == '' and failed['unseen/acc_last'] == ''
  assert failed['log'].endswith(os.path.join('point_03', 'log.txt'))

  running = rows['model.width=64,seed=1,task.num_tasks=16']
  assert running['status'] == 'running' and running['step'] == '100'
  assert running['phase'] == '' and running['left_plateau'] == ''  # May still leave it.

  pending = rows['model.width=32,seed=0,task.num_tasks=256']
  assert pending['status'] == 'pending' and pending['step'] == ''
  assert pending['task.num_tasks'] == '256'  # From sweep.json: the point has no files.
  assert result['rows'][0]['name'] == 'model.width=32,seed=0,task.num_tasks=16'


def test_report_draws_readable_figures_into_out(sweep):
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  sweep, result = sweep
  out = os.path.join(sweep, 'report')
  assert result['csv'] == os.path.join(out, 'summary.csv')
  assert result['skipped'] == {}
  assert set(result['figures']) == {'phase_diagram.png', 'unseen_vs_tasks.png', 'plateau.png',
                                    'training_curves.png'}
  for path in result['figures'].values():
    assert os.path.dirname(path) == out
    height, width, _ = matplotlib.image.imread(path).shape
    assert height > 200 and width > 300
  assert not os.path.exists(os.path.join(sweep, 'summary.csv'))


def test_report_never_replaces_a_file_it_did_not_write(sweep, tmp_path):
  root, _ = sweep
  out = tmp_path / 'figures'
  out.mkdir()
  (out / 'notes.txt').write_text('mine\n')
  with pytest.raises(UserError, match=r"--out .*figures holds files icl_jax did not write there "
                                      r"\('notes.txt'\)"):
    report_lib.report(root, str(out))
  assert os.listdir(out) == ['notes.txt']


def test_cell_phase_takes_the_most_common_label():
  def done(phase):
    return report_lib.PointRecord('p', 'p', 'p', {}, {}, state='done', phase=phase)
  points = [done('memorisation'), done('general_learning'), done('general_learning'),
            report_lib.PointRecord('q', 'q', 'q', {}, {}, state='failed')]
  assert report_lib.cell_phase(points) == ('general_learning', 2)
  assert report_lib.phase_cell(points) == 'general_learning (2/4)'
  # A tie goes to the label listed first in diagnose.PHASES.
  assert report_lib.cell_phase(points[:2]) == ('general_learning', 1)


def test_rows_are_ordered_by_num_params_not_by_label(tmp_path, plots):
  root = str(tmp_path / 'sweep')
  done = lambda params: dict(acc=summary(0.1, 0.1, 0.1, 0.1), num_params=params,
                             records=loss_records())
  write_sweep(root, [
      ({'model.width': 32, 'model.depth': 8}, done(100_000)),
      ({'model.width': 64, 'model.depth': 1}, done(50_000)),
  ])
  result = report_lib.report(root)
  text = result['table']
  assert text.index('width=64,depth=1 (50k params)') < text.index('width=32,depth=8 (100k params)')
  # task.num_tasks is not swept: one column, the configured count.
  assert next(table_rows(text, 'model \\ num_tasks')) == ['65536']
  assert next(table_rows(text, 'width=64,depth=1 (50k params)')) == ['0.100']
  # The plateau plot needs a varied batch size or task count.
  assert 'plateau.png' in result['skipped'] and 'plateau.png' not in result['figures']
  assert plots == ['phase_diagram.png', 'unseen_vs_tasks.png', 'training_curves.png']
  assert result['figures']['phase_diagram.png'] == os.path.join(root, 'phase_diagram.png')


def test_unswept_model_is_one_row_and_batch_size_plateau(tmp_path, plots):
  root = str(tmp_path / 'sweep')
  write_sweep(root, [
      ({'train.batch_size': 32}, dict(acc=summary(0.1, 0.1, 0.1, 0.1), num_params=1000,
                                      records=loss_records(leaves_at=250))),
      ({'train.batch_size': 128}, dict(acc=summary(0.1, 0.1, 0.1, 0.1), num_params=1000,
                                       records=loss_records(leaves_at=100))),
  ])
  result = report_lib.report(root)
  assert next(table_rows(result['table'], 'width=64,depth=2 (1k params)')) == ['0.100']
  assert 'plateau.png' in result['figures'] and 'plateau.png' in plots
  assert report_lib.plateau_fields(report_lib.read_points(root)[0], ['train.batch_size']) == [
      'train.batch_size']
  rows = read_csv(result['csv'])
  assert rows['train.batch_size=32']['plateau_steps'] == '250'
  assert rows['train.batch_size=128']['plateau_steps'] == '100'


def test_without_sweep_json_reports_point_directories(tmp_path, plots):
  root = str(tmp_path / 'sweep')
  write_sweep(root, [
      (grid_point(32, 16, 0), dict(acc=summary(0.1, 0.8, 0.1, 0.7), num_params=10,
                                   records=loss_records(leaves_at=50))),
      (grid_point(32, 64, 0), dict(state='running', records=loss_records(final_step=50))),
  ], with_sweep_json=False)
  os.makedirs(os.path.join(root, 'not_a_point'))
  result = report_lib.report(root)
  assert result['counts'] == {'done': 1, 'failed': 0, 'running': 1, 'pending': 0}
  assert next(table_rows(result['table'], 'width=32 (10 params)')) == ['0.700', 'running']
  assert result['swept'] == ['model.width', 'task.num_tasks', 'seed']


def test_partial_files_do_not_crash(tmp_path, plots):
  root = str(tmp_path / 'sweep')
  write_sweep(root, [
      # A done point whose point.json was lost: the sweep's overrides still place it.
      (grid_point(32, 16, 0), dict(acc=summary(0.1, 0.8, 0.1, 0.7), num_params=10,
                                   records=loss_records(leaves_at=50), point_json=False)),
      (grid_point(32, 16, 1), dict(state='running', records=loss_records(final_step=100))),
      (grid_point(32, 16, 2), dict(state='running', records=())),
      # Done without a summary, beside records no writer of ours makes.
      (grid_point(32, 16, 3), dict(acc={}, num_params=10, records=[
          {'no_step': 1}, {'step': 'ten', 'train/loss': 1.0}, {'step': 20, 'train/loss': 'x'},
          {'step': 30, 'train/loss': OFF_PLATEAU}])),
  ])
  # A status.json and a metrics line cut short by a writer mid-write.
  with open(os.path.join(root, 'point_01', 'status.json'), 'w') as f:
    f.write('{"status": "do')
  with open(os.path.join(root, 'point_01', 'metrics.jsonl'), 'a') as f:
    f.write('{"step": 150, "train/lo')
  # Started, no metrics yet: only the launcher's log exists.
  os.makedirs(os.path.join(root, 'point_02'), exist_ok=True)
  open(os.path.join(root, 'point_02', 'log.txt'), 'w').close()
  result = report_lib.report(root)
  rows = read_csv(result['csv'])
  assert [r['status'] for r in rows.values()] == ['done', 'running', 'running', 'done']
  assert rows['model.width=32,seed=0,task.num_tasks=16']['model.depth'] == ''  # Unknown.
  assert rows['model.width=32,seed=1,task.num_tasks=16']['step'] == '100'
  no_summary = rows['model.width=32,seed=3,task.num_tasks=16']
  assert no_summary['error'] == 'done, but no accuracy summary in status.json'
  assert no_summary['phase'] == '' and no_summary['plateau_steps'] == '30'
  assert next(table_rows(result['table'], 'width=32 (10 params)')) == ['0.700 (1/4 done)']
  assert result['counts']['done'] == 2


def test_state_size_figure_when_the_sweep_varies_the_model(tmp_path):
  """GPICL's state-size figure: accuracy against state size and against parameters."""
  root = str(tmp_path / 'sweep')
  grid = [('lstm', 64, 300, 2_000, 0.2), ('lstm', 128, 600, 8_000, 0.3),
          ('transformer', 32, 5_000, 3_000, 0.5), ('transformer', 64, 10_000, 9_000, 0.7)]
  write_sweep(root, [({'model.name': name, 'model.width': width},
                      dict(acc=summary(0.1, acc, 0.1, acc), state_size=state,
                           num_params=params))
                     for name, width, state, params, acc in grid])
  result = report_lib.report(root)
  assert 'state_size.png' in result['figures'] and 'state_size.png' not in result['skipped']
  with open(result['figures']['state_size.png'], 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  rows = read_csv(result['csv'])
  assert rows['model.name=lstm,model.width=128']['state_size'] == '600'
  points, _ = report_lib.read_points(root)
  assert len(figures_lib.state_size_points(points)) == 4


def test_plateau_against_batch_size_is_fitted_by_a_power_law(tmp_path):
  """Plateaus of 1600 * B^-0.5 steps (to the logged step): the fit finds the exponent; a
  point that never left its plateau has no length and stays out of the fit."""
  root = str(tmp_path / 'sweep')
  lengths = {16: 400, 32: 280, 64: 200, 128: 140}
  points = [({'train.batch_size': b, 'seed': 0},
             dict(acc=summary(0.1, 0.5, 0.1, 0.5), num_params=1000,
                  records=loss_records(leaves_at=n, final_step=600, every=10)))
            for b, n in lengths.items()]
  points.append(({'train.batch_size': 128, 'seed': 1},
                 dict(acc=summary(0.1, 0.1, 0.1, 0.1), num_params=1000,
                      records=loss_records(leaves_at=None, final_step=600, every=10))))
  write_sweep(root, points)
  result = report_lib.report(root)
  [(label, law)] = result['plateau_fits'].items()
  assert label == 'width=64,depth=2 (1k params)'
  assert law['exponent'] == pytest.approx(-0.5, abs=0.02) and law['points'] == 4
  assert law['coef'] == pytest.approx(1600, rel=0.1) and law['r2'] > 0.99
  assert f'plateau vs batch size, {label}: ' in result['table']
  assert 'plateau.png' in result['figures']
  rows = read_csv(result['csv'])
  assert rows['seed=1,train.batch_size=128']['left_plateau'] == 'False'


def test_power_law_needs_three_distinct_positive_values():
  assert report_lib.power_law([1, 2], [4, 2]) is None
  assert report_lib.power_law([1, 2, 2], [4, 2, 2]) is None
  assert report_lib.power_law([0, 2, 4], [4, 2, 1]) is None
  law = report_lib.power_law([1, 2, 4], [8, 4, 2])
  assert law['exponent'] == pytest.approx(-1.0) and law['coef'] == pytest.approx(8.0)


def test_adam_epsilon_and_biased_fraction_are_plateau_fields(tmp_path):
  root = str(tmp_path / 'sweep')
  done = lambda leaves: dict(acc=summary(0.1, 0.5, 0.1, 0.5), num_params=1000,
                             records=loss_records(leaves_at=leaves))
  write_sweep(root, [({'train.eps': 1e-16, 'task.bias_fraction': 0.0}, done(100)),
                     ({'train.eps': 1e-8, 'task.bias_fraction': 0.0}, done(150)),
                     ({'train.eps': 1e-16, 'task.bias_fraction': 0.5}, done(50)),
                     ({'train.eps': 1e-8, 'task.bias_fraction': 0.5}, done(None))])
  result = report_lib.report(root)
  points, swept = report_lib.read_points(root)
  assert report_lib.plateau_fields(points, swept) == ['train.eps', 'task.bias_fraction']
  assert 'plateau.png' in result['figures'], result['skipped']
  assert result['plateau_fits'] == {}  # The batch size is not swept.


def test_training_curves_are_written_and_drawn_per_point(tmp_path):
  """training_curves.csv: a row per logged step or evaluation of every point, blank
  where a step has only one of them; the figure gets its accuracy panel."""
  root = str(tmp_path / 'sweep')
  evals = [{'step': s, 'unseen/acc_first': 0.1, 'unseen/acc_last': a}
           for s, a in ((100, 0.2), (200, 0.6))]
  write_sweep(root, [({'model.depth': d, 'seed': seed},
                      dict(acc=summary(0.1, 0.5, 0.1, 0.5), num_params=1000 * d,
                           records=loss_records(leaves_at=100, final_step=200) + evals))
                     for d in (1, 2) for seed in (0, 1)])
  result = report_lib.report(root)
  assert 'training_curves.png' in result['figures']
  with open(os.path.join(root, 'training_curves.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  mine = [r for r in rows if r['name'] == 'model.depth=2,seed=1']
  assert [r['step'] for r in mine] == ['50', '100', '150', '200']
  assert float(mine[0]['train/loss']) == pytest.approx(ON_PLATEAU)
  assert mine[0]['unseen/acc_last'] == '' and float(mine[3]['unseen/acc_last']) == 0.6
  assert len(rows) == 4 * 4 and set(rows[0]) == {
      'name', 'model.depth', 'seed', 'step', 'train/loss', 'unseen/acc_first',
      'unseen/acc_last'}
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  height, width, _ = matplotlib.image.imread(result['figures']['training_curves.png']).shape
  assert width > 2 * height  # Two panels: the loss, and the accuracies during training.
  points, swept = report_lib.read_points(root)
  assert [len(g) for g in figures_lib.curve_groups(points, swept).values()] == [2, 2]


def test_no_done_point_skips_figures(tmp_path, plots):
  root = str(tmp_path / 'sweep')
  write_sweep(root, [
      (grid_point(32, 16, 0), dict(state='failed', error='out of memory', step=0)),
      (grid_point(32, -1, 0), dict(state='pending')),
  ])
  result = report_lib.report(root)
  assert result['figures'] == {} and plots == []
  assert set(result['skipped']) == {'phase_diagram.png', 'unseen_vs_tasks.png', 'plateau.png',
                                    'training_curves.png'}
  assert next(table_rows(result['table'], 'width=32')) == ['failed', 'pending']
  assert 'FAILED model.width=32,seed=0,task.num_tasks=16: out of memory (log: none)' in (
      result['table'].splitlines())
  assert os.path.exists(result['csv'])


def test_a_figure_that_fails_to_draw_is_skipped(tmp_path, plots, monkeypatch):
  def broken(path, *args):
    raise ValueError('no room for the legend')
  monkeypatch.setattr(figures_lib, 'plot_unseen_vs_tasks', broken)
  root = str(tmp_path / 'sweep')
  write_sweep(root, [(grid_point(32, 16, 0), dict(acc=summary(0.1, 0.8, 0.1, 0.7),
                                                  num_params=10, records=loss_records()))])
  result = report_lib.report(root)
  assert result['skipped']['unseen_vs_tasks.png'] == (
      'drawing failed: ValueError: no room for the legend')
  assert list(result['figures']) == ['phase_diagram.png', 'training_curves.png']
  assert plots == ['phase_diagram.png', 'training_curves.png']


@pytest.mark.parametrize('make_root,message', [
    (lambda root: None, 'is not a directory'),
    (lambda root: os.makedirs(root), 'holds no points'),
    (lambda root: write_json(os.path.join(root, 'sweep.json'), {'points': []}),
     'holds no points'),
    (lambda root: (os.makedirs(root), open(os.path.join(root, 'sweep.json'), 'w').write('{')),
     'is not a sweep file'),
])
def test_bad_roots_raise_user_error(tmp_path, make_root, message):
  root = str(tmp_path / 'sweep')
  make_root(root)
  with pytest.raises(UserError, match=message) as error:
    report_lib.report(root)
  if message != 'is not a sweep file':
    assert 'python -m launch.sweep' in str(error.value)


def test_cli(tmp_path):
  root = str(tmp_path / 'sweep')
  write_sweep(root, [
      (grid_point(32, 16, 0), dict(state='failed', error='out of memory', step=0)),
      (grid_point(32, -1, 0), dict(state='running', records=loss_records(final_step=50))),
  ])
  run = lambda *args: subprocess.run([sys.executable, '-m', 'icl_jax.report', *args], cwd=REPO,
                                     capture_output=True, text=True, timeout=120)
  ok = run('--root', root)
  assert ok.returncode == 0, ok.stderr
  lines = ok.stdout.splitlines()
  assert '| width=32 | failed | running |' in lines
  assert 'FAILED model.width=32,seed=0,task.num_tasks=16: out of memory (log: none)' in lines
  assert f'wrote {os.path.join(root, "summary.csv")}' in lines
  assert 'skipped phase_diagram.png: no point is done with an accuracy summary yet' in lines
  bad = run('--root', str(tmp_path / 'missing'))
  assert bad.returncode == 2
  assert bad.stderr.startswith('error: Sweep root') and 'Traceback' not in bad.stderr


def test_report_imports_no_jax():
  """The report runs where only the sweep's files are: importing it (and its CLI) must not
  pull in JAX, orbax or TFDS, nor the trainer's modules that do."""
  heavy = ('jax', 'orbax', 'tensorflow_datasets', 'icl_jax.train', 'icl_jax.config',
           'icl_jax.checkpoint')
  code = ('import sys, icl_jax.report, icl_jax.report.__main__\n'
          f'heavy = {heavy!r}\n'
          'loaded = [m for m in sys.modules if m in heavy or m.split(".")[0] in heavy]\n'
          'assert not loaded, loaded\n')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stderr
