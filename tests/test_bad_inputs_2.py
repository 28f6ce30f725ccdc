"""Bad input and damaged files, round two (issue 15): one table of cases a researcher hits at
2 a.m., each ending in one `error:` line with exit code 2 (or, where the damage is ours to
mend, in a warning and a correct result), with nothing the user had changed.

The command-line cases run as real subprocesses, two at a time (each pays for importing JAX);
every case compares hashes of what the user had before and after. The rest go through the
same functions in this process: data dirs, hand-edited workdir files, finished runs, a full
disk. Two hypothesis tests close it: every numeric flag of every program refuses what is
out of range at parsing, and any damage to a workdir's files or a cache is read back or
refused in one UserError, never another exception.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Callable

from absl import flags
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
from PIL import Image
import pytest

from helpers import prepare_image_dataset
from icl_jax import recovery
from icl_jax import config as config_lib
from icl_jax import diagnose
from icl_jax import metrics as metrics_lib
from icl_jax import status as status_lib
from icl_jax import runs as runs_lib
from icl_jax import train
from icl_jax.data import load
from icl_jax.errors import UserError
from helpers import snapshot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INT32_MAX = 2**31 - 1


# ---------------------------------------------------------------------------------------
# The command line: one table, run as subprocesses.
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
  id: str
  module: str
  args: Callable[[dict], list[str]]  # From the context's paths.
  message: str  # A regex the `error:` line must match.
  protected: tuple[str, ...] = ('workdir',)  # Context paths that must not change.


def _npz(path, num_classes=10, damaged=False):
  if damaged:
    with open(path, 'wb') as f:
      f.write(b'PK\x03\x04 cut short by a full disk')
  else:
    images = np.random.default_rng(0).integers(0, 255, (60, 8, 8), np.uint8)
    np.savez(path, x_test=images, y_test=np.arange(60) % num_classes)
  return path


CASES = [
    # Every numeric flag at its edges: refused by the parser, never replaced by a default.
    Case('eval_num_tasks_zero', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--num_tasks_eval', '0'],
         r'--num_tasks_eval=0: 0 is not an integer in the range \[1, 2147483647\]'),
    Case('eval_num_tasks_negative', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--num_tasks_eval=-5'], r'range \[1, 2147483647\]'),
    Case('eval_num_tasks_beyond_int32', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--num_tasks_eval', str(2**31)],
         r'--num_tasks_eval=2147483648: .*range'),
    Case('eval_step_negative', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--step=-1'], r'--step=-1: .*range \[0, '),
    Case('eval_step_huge', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--step', str(10**20)], r'--step=10{20}: .*range'),
    Case('eval_step_not_saved', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--step', '7'],
         r'has no checkpoint at step 7; available steps: 20, 40'),
    Case('eval_step_not_a_number', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--step', 'latest'], r"--step=latest: .*int"),
    # Outputs aimed where they do not belong.
    Case('eval_out_inside_checkpoints', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--out', os.path.join(c['workdir'], 'checkpoints',
                                                                     '40')],
         r'inside the checkpoints of the run in .*orbax manages'),
    Case('eval_out_is_the_workdir', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--out', c['workdir']],
         r"is a training run's workdir"),
    Case('eval_out_over_another_runs_results', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--out', c['other_eval']],
         r'holds the results of /elsewhere/run at step 5', ('workdir', 'other_eval')),
    Case('eval_out_is_a_url', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--out', 'gs://bucket/eval'],
         r"Output directory 'gs://bucket/eval' is a gs:// URL"),
    # Datasets to meta-test on that are missing, damaged or do not fit.
    Case('eval_image_folder_missing', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--datasets', f'folder:{c["tmp"]}/no_such_dir'],
         r'Image folder .*/no_such_dir does not exist'),
    Case('eval_array_file_damaged', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--datasets', f'npz:{c["damaged_npz"]}'],
         r'Cannot read array file .*damaged\.npz', ('workdir', 'damaged_npz')),
    Case('eval_array_file_more_classes', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--datasets', f'npz:{c["npz30"]}'],
         r"has 30 classes but the model predicts 10"),
    Case('eval_dataset_name_typo', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--datasets', 'mnsit'],
         r"Unknown dataset 'mnsit'\. Did you mean"),
    Case('eval_tfds_dataset_damaged', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--datasets', 'icl_jax_test_damaged',
                    '--data_dir', c['damaged_tfds']],
         r"Dataset 'icl_jax_test_damaged' in .* is damaged .*Delete .* and prepare it again"),
    Case('eval_data_dir_is_a_file', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--data_dir', c['a_file']],
         r'The TFDS data dir .* is a file, not a directory'),
    Case('eval_workdir_empty', 'icl_jax.evaluate', lambda c: ['--workdir='],
         r"No checkpoints in ''"),
    Case('eval_workdir_is_a_file', 'icl_jax.evaluate', lambda c: ['--workdir', c['a_file']],
         r'No checkpoints in .*Pass the --workdir of a training run'),
    Case('eval_unknown_baseline', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['workdir'], '--baselines', 'knn,svm'],
         r"Unknown baselines \['svm'\]"),
    # A checkpoint whose stored config was edited: that checkpoint, and only it, is named.
    Case('eval_step_with_edited_config', 'icl_jax.evaluate',
         lambda c: ['--workdir', c['edited'], '--step', '40'],
         r'config stored with checkpoint step 40 .* cannot be used', ('edited',)),
    # The sweep launcher.
    Case('sweep_parallel_zero', 'launch.sweep',
         lambda c: ['--config', c['sweep_config'], '--root', c['root'], '--parallel', '0'],
         r'--parallel=0: 0 is not an integer in the range \[1, 1024\]', ()),
    Case('sweep_max_group_size_zero', 'launch.sweep',
         lambda c: ['--config', c['sweep_config'], '--root', c['root'], '--max_group_size=0'],
         r'--max_group_size=0: .*range \[1, 2147483647\]', ()),
    Case('sweep_device_memory_nan', 'launch.sweep',
         lambda c: ['--config', c['sweep_config'], '--root', c['root'], '--dry_run',
                    '--device_memory_gb=nan'], r'--device_memory_gb must be a finite number', ()),
    Case('sweep_device_memory_negative', 'launch.sweep',
         lambda c: ['--config', c['sweep_config'], '--root', c['root'], '--dry_run',
                    '--device_memory_gb=-1'], r'--device_memory_gb=-1: .*range', ()),
    Case('sweep_cpu_devices_huge', 'launch.sweep',
         lambda c: ['--config', c['sweep_config'], '--root', c['root'],
                    '--cpu_devices=100000'], r'--cpu_devices=100000: .*range \[0, 4096\]', ()),
    Case('sweep_root_is_a_file', 'launch.sweep',
         lambda c: ['--config', c['sweep_config'], '--root', c['a_file']],
         r"Sweep root .* is a file, not a directory", ('a_file',)),
    Case('sweep_root_empty', 'launch.sweep',
         lambda c: ['--config', c['sweep_config'], '--root='], r'--root is empty', ()),
    Case('sweep_slurm_memory_infinite', 'launch.sweep',
         lambda c: ['--config', c['sweep_config'], '--root', c['root'], '--backend=slurm',
                    '--dry_run', '--slurm_mem_gb=inf'], r'--slurm_mem_gb=inf: .*range', ()),
    Case('sweep_slurm_nodes_beyond_int32', 'launch.sweep',
         lambda c: ['--config', c['sweep_config'], '--root', c['root'], '--backend=slurm',
                    '--dry_run', f'--slurm_nodes={2**31}'], r'--slurm_nodes=2147483648: .*range',
         ()),
    Case('sweep_only_group_negative', 'launch.sweep',
         lambda c: ['--root', c['root'], '--launch=x', '--only_group=-1'],
         r'--only_group=-1: .*range \[0, ', ()),
    # The report.
    Case('report_root_is_a_file', 'icl_jax.report', lambda c: ['--root', c['a_file']],
         r"Sweep root .* is not a directory", ('a_file',)),
    Case('report_out_inside_checkpoints', 'icl_jax.report',
         lambda c: ['--root', c['tmp'], '--out', os.path.join(c['workdir'], 'checkpoints')],
         r'inside the checkpoints of the run'),
    Case('report_out_over_another_sweep', 'icl_jax.report',
         lambda c: ['--root', c['tmp'], '--out', c['other_sweep']],
         r'is the root of another sweep', ('other_sweep',)),
    # Training.
    Case('train_workdir_empty', 'icl_jax.main',
         lambda c: ['--config', 'gpicl_digits:smoke', '--workdir='], r'The workdir is empty', ()),
    Case('train_workdir_is_a_file', 'icl_jax.main',
         lambda c: ['--config', 'gpicl_digits:smoke', '--workdir', c['a_file']],
         r"Workdir .* is a file, not a directory", ('a_file',)),
    Case('train_array_file_missing', 'icl_jax.main',
         lambda c: ['--config', 'gpicl_digits:smoke', '--workdir', f'{c["tmp"]}/new_run',
                    f'--config.data.dataset=npz:{c["tmp"]}/missing.npz'],
         r'Array file .*/missing\.npz does not exist', ()),
    Case('train_image_folder_of_one_label', 'icl_jax.main',
         lambda c: ['--config', 'gpicl_digits:smoke', '--workdir', f'{c["tmp"]}/new_run',
                    f'--config.data.dataset=folder:{c["one_label"]}',
                    f'--config.data.data_dir={c["tmp"]}/tfds'],
         r'has 1 label directories; a classification dataset needs at least 2', ('one_label',)),
    Case('train_data_dir_is_a_file', 'icl_jax.main',
         lambda c: ['--config', 'gpicl_digits:smoke', '--workdir', f'{c["tmp"]}/new_run',
                    f'--config.data.data_dir={c["a_file"]}'],
         r'The TFDS data dir .* is a file', ('a_file',)),
    Case('train_seed_beyond_uint32', 'icl_jax.main',
         lambda c: ['--config', 'gpicl_digits:smoke', '--workdir', f'{c["tmp"]}/new_run',
                    f'--config.seed={2**70}'], r'config\.seed', ()),
]


@pytest.fixture(scope='module')
def context(trained_run, tmp_path_factory):
  """The paths the cases use; the user's files among them are real runs and outputs."""
  workdir = trained_run[0]
  tmp = str(tmp_path_factory.mktemp('round2'))
  c = {'workdir': workdir, 'tmp': tmp, 'sweep_config': f'{REPO}/tests/experiments/tiny_sweep.py',
       'root': f'{tmp}/sweep'}
  c['a_file'] = f'{tmp}/a_file.txt'
  with open(c['a_file'], 'w') as f:
    f.write('not a directory\n')
  c['other_eval'] = f'{tmp}/other_eval'
  os.makedirs(c['other_eval'])
  with open(f'{c["other_eval"]}/results.json', 'w') as f:
    json.dump({'workdir': '/elsewhere/run', 'step': 5, 'results': {}}, f)
  c['other_sweep'] = f'{tmp}/other_sweep'
  os.makedirs(c['other_sweep'])
  with open(f'{c["other_sweep"]}/{status_lib.SWEEP_FILE}', 'w') as f:
    json.dump({'points': []}, f)
  c['damaged_npz'] = _npz(f'{tmp}/damaged.npz', damaged=True)
  c['npz30'] = _npz(f'{tmp}/npz30.npz', num_classes=30)
  c['one_label'] = f'{tmp}/one_label'
  for split in ('train', 'test'):
    os.makedirs(f'{c["one_label"]}/{split}/only')
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(f'{c["one_label"]}/{split}/only/0.png')
  c['damaged_tfds'] = f'{tmp}/damaged_tfds'
  # The run's own dataset is prepared there already (as in any data dir in use).
  shutil.copytree(os.path.join(trained_run[1].data.data_dir, 'digits'),
                  f'{c["damaged_tfds"]}/digits')
  prepare_image_dataset(c['damaged_tfds'], 'icl_jax_test_damaged', (8, 8, 1), 5,
                        lambda r, i: r.integers(0, 255, (8, 8, 1), np.uint8))
  for path in glob.glob(f'{c["damaged_tfds"]}/icl_jax_test_damaged/1.0.0/*test.array_record*'):
    with open(path, 'r+b') as f:
      f.truncate(100)
  c['edited'] = f'{tmp}/edited_run'
  shutil.copytree(workdir, c['edited'])
  with open(f'{c["edited"]}/checkpoints/40/config/metadata', 'w') as f:
    f.write('{"model": {"width": "sixteen"')  # Edited by hand, saved half-way.
  return c


@pytest.fixture(scope='module')
def cli_outcomes(context):
  """Every case's (CompletedProcess, snapshots before, snapshots after): two at a time."""
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1', PYTHONPATH=REPO)
  protected = sorted({p for case in CASES for p in case.protected})
  before = {p: snapshot_of(context[p]) for p in protected}

  def run(case):
    return subprocess.run([sys.executable, '-m', case.module, *case.args(context)],
                          cwd=context['tmp'], env=env, capture_output=True, text=True,
                          timeout=300)

  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    done = dict(zip((case.id for case in CASES), pool.map(run, CASES)))
  after = {p: snapshot_of(context[p]) for p in protected}
  return done, before, after


def snapshot_of(path):
  if os.path.isdir(path):
    return snapshot(path)
  with open(path, 'rb') as f:
    return f.read()


@pytest.mark.parametrize('case', CASES, ids=[case.id for case in CASES])
def test_command_line_case(cli_outcomes, case):
  done, before, after = cli_outcomes
  out = done[case.id]
  assert out.returncode == 2, out.stderr[-3000:]
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), out.stderr[-3000:]
  assert re.search(case.message, lines[0]), lines[0]
  for path in case.protected:
    assert after[path] == before[path], f'{case.id} changed {path}'


def test_the_table_has_at_least_forty_cases():
  assert len(CASES) >= 40 - len(IN_PROCESS_CASES)
  assert len({case.id for case in CASES}) == len(CASES)


# ---------------------------------------------------------------------------------------
# Data dirs: ours is mended with a warning; a dataset prepared by the user is named.
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """A data dir with digits prepared and both splits cached; each case damages a copy."""
  base = str(tmp_path_factory.mktemp('prepared'))
  good = {split: load('digits', split, (8, 8), base) for split in ('train', 'test')}
  return base, good


def _truncate(pattern, size=100):
  def damage(d):
    paths = glob.glob(os.path.join(d, pattern))
    assert paths, pattern
    for path in paths:
      with open(path, 'r+b') as f:
        f.truncate(size)
  return damage


def _remove(pattern):
  def damage(d):
    paths = glob.glob(os.path.join(d, pattern))
    assert paths, pattern
    for path in paths:
      os.remove(path)
  return damage


def _write(relative, text):
  def damage(d):
    with open(os.path.join(d, relative), 'w') as f:
      f.write(text)
  return damage


def _both(*damages):
  def damage(d):
    for f in damages:
      f(d)
  return damage


_CACHE = 'icl_jax_cache/digits/1.0.0/test-8x8-*.npz'
_PREPARED = 'digits/1.0.0'
IN_PROCESS_CASES = {
    # (damage, what the warning says)
    'cache_truncated': (_truncate(_CACHE), 'preprocessed cache .* is damaged'),
    'cache_empty': (_truncate(_CACHE, 0), 'preprocessed cache .* is damaged'),
    'cache_not_an_npz': (_both(_remove(_CACHE), _write(
        'icl_jax_cache/digits/1.0.0/test-8x8-p2-000000000000.npz', 'x')), None),
    'records_truncated': (_both(_remove(_CACHE), _truncate(f'{_PREPARED}/*test.array_record*',
                                                           500)),
                          'embedded digits dataset .* is damaged .*preparing it again'),
    'records_deleted': (_both(_remove(_CACHE), _remove(f'{_PREPARED}/*test.array_record*')),
                        'embedded digits dataset .* is damaged'),
    'dataset_info_deleted': (_remove(f'{_PREPARED}/dataset_info.json'),
                             'dataset_info.json is missing'),
    'dataset_info_garbled': (_write(f'{_PREPARED}/dataset_info.json', '{not json'),
                             'embedded digits dataset .* is damaged'),
}


@pytest.mark.parametrize('name', sorted(IN_PROCESS_CASES))
def test_damaged_data_of_ours_is_mended_with_a_warning(prepared, tmp_path, capfd, name):
  base, good = prepared
  damage, warning = IN_PROCESS_CASES[name]
  data_dir = str(tmp_path / 'd')
  shutil.copytree(base, data_dir)
  damage(data_dir)
  ds = load('digits', 'test', (8, 8), data_dir)
  np.testing.assert_array_equal(ds.x_NxD, good['test'].x_NxD)
  np.testing.assert_array_equal(ds.y_N, good['test'].y_N)
  err = capfd.readouterr().err
  assert 'Traceback' not in err and 'Variant folder' not in err, err
  if warning:
    assert re.search(warning, err), err
  # The repaired preparation and cache serve the next load without a word.
  load('digits', 'test', (8, 8), data_dir)
  assert 'warning' not in capfd.readouterr().err


def test_a_dataset_prepared_again_is_never_served_from_the_old_cache(tmp_path):
  """Same name and version, new content (a fixed builder): the cache follows the files."""
  data_dir, offset = str(tmp_path), {'value': 0}
  make = lambda r, i: np.full((8, 8, 1), (7 * i + offset['value']) % 256, np.uint8)
  prepare_image_dataset(data_dir, 'icl_jax_test_reprepared', (8, 8, 1), 4, make)
  first = load('icl_jax_test_reprepared', 'train', (8, 8), data_dir)
  shutil.rmtree(os.path.join(data_dir, 'icl_jax_test_reprepared'))
  offset['value'] = 100
  prepare_image_dataset(data_dir, 'icl_jax_test_reprepared', (8, 8, 1), 4, make)
  second = load('icl_jax_test_reprepared', 'train', (8, 8), data_dir)
  expected = (7 * np.arange(40) + 100) % 256  # TFDS shuffles the records: compare as sets.
  np.testing.assert_array_equal(np.sort(second.pixels_NxD[:, 0]), np.sort(expected))
  assert not np.array_equal(np.sort(first.pixels_NxD[:, 0]), np.sort(expected))
  caches = os.listdir(os.path.join(data_dir, 'icl_jax_cache', 'icl_jax_test_reprepared', '1.0.0'))
  assert len([c for c in caches if c.startswith('train-')]) == 1  # The stale one is gone.


# ---------------------------------------------------------------------------------------
# Workdir files edited by hand; finished runs rerun.
# ---------------------------------------------------------------------------------------
@pytest.fixture
def copied_run(trained_run, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained_run[0], workdir)
  return workdir, trained_run[1]


def test_one_edited_checkpoint_config_names_that_checkpoint_only(copied_run, caplog):
  workdir, _ = copied_run
  with open(f'{workdir}/checkpoints/40/config/metadata') as f:
    stored = json.load(f)
  stored['model']['width'] = -3  # Valid JSON, not a valid config.
  with open(f'{workdir}/checkpoints/40/config/metadata', 'w') as f:
    json.dump(stored, f)
  before = snapshot(workdir)
  reader, step, config = recovery.open_run(workdir)
  reader.store.close()
  assert step == 20 and config.model.width == 16  # The other checkpoint still restores.
  err = caplog.text
  assert 'step 40' in err and 'config.model.width' in err and 'step 20' not in err, err
  assert 'Exception ignored' not in err and 'Traceback' not in err
  assert snapshot(workdir) == before


def test_foreign_lines_in_the_metrics_log_are_skipped(copied_run):
  workdir, config = copied_run
  path = f'{workdir}/metrics.jsonl'
  with open(path, 'ab') as f:
    f.write(b'# a note I added\n42\n{"note": "no step"}\n{"step": "ten"}\n\xff\xfe\x00binary\n'
            b'{"step": 3, "train/loss": "high"}\n')
  records = metrics_lib.read(workdir)
  assert records and all(isinstance(r['step'], int) for r in records)
  assert diagnose.plateau_length(records, 10) is None or isinstance(
      diagnose.plateau_length(records, 10), int)
  # Resuming past them (a longer run) keeps training; the log stays readable.
  config = config_lib.from_dict(config.to_dict())
  config.train.steps = 45
  train.train_and_evaluate(config, workdir)
  assert max(r['step'] for r in metrics_lib.read(workdir)) == 45


def test_a_garbled_status_is_not_taken_for_done(copied_run):
  workdir, config = copied_run
  with open(f'{workdir}/{status_lib.STATUS_FILE}', 'w') as f:
    f.write('{"status": "done", "step": "forty"')  # Cut short by hand.
  assert runs_lib.finished_result(config, workdir, 40) is None
  with open(f'{workdir}/{status_lib.STATUS_FILE}', 'w') as f:
    json.dump({'status': 'done', 'step': 40, 'summary': 'fine'}, f)
  assert runs_lib.finished_result(config, workdir, 40) is None


@pytest.mark.parametrize('steps,says', [
    (40, r'already trained to step 40; nothing to train'),
    (20, r'trained to step 40, more than the 20 steps asked for; nothing to train'),
])
def test_a_finished_run_rerun_reports_and_changes_nothing(copied_run, capfd, steps, says):
  workdir, config = copied_run
  config = config_lib.from_dict(config.to_dict())
  config.train.steps = steps
  before = snapshot(workdir)
  summary = train.train_and_evaluate(config, workdir)
  assert summary == status_lib.read(workdir)['summary']
  err = capfd.readouterr().err
  assert re.search(says, err), err
  assert re.search(r'step 40 \| seen tasks: acc first', err), err
  assert f'results: {os.path.abspath(workdir)}/status.json' in err
  assert 'compiling' not in err  # Restored (verified), but nothing compiled.
  assert snapshot(workdir) == before


# ---------------------------------------------------------------------------------------
# A full disk during a checkpoint save.
# ---------------------------------------------------------------------------------------
def test_a_save_that_cannot_be_written_stops_the_run_with_one_line(trained_run, data_dir,
                                                                   tmp_path):
  """Files over 12 KB cannot be written (`ulimit -f`: EFBIG, as a full disk's ENOSPC, with
  SIGXFSZ ignored so the write fails rather than the process): the first checkpoint's data
  file fails, in orbax's background thread. A shell sets the limit, because a preexec_fn
  would fork this multithreaded (JAX) process."""
  del trained_run  # It prepared digits in data_dir: preparing here would hit the limit too.
  workdir = str(tmp_path / 'run')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1', PYTHONPATH=REPO)
  command = [sys.executable, '-m', 'icl_jax.main', '--config', 'gpicl_digits:smoke',
             '--workdir', workdir, f'--config.data.data_dir={data_dir}', '--compilation_cache=']
  out = subprocess.run(
      ['bash', '-c', 'trap "" XFSZ; ulimit -f 12; exec "$@"', 'bash', *command],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-3000:]
  assert 'Traceback' not in out.stderr and 'Exception ignored' not in out.stderr, out.stderr
  errors = [line for line in out.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1, out.stderr
  assert re.search(r'error: Saving checkpoint step 10 to .*/checkpoints failed: File too large '
                   r'\(.* MB free there now\)\. No checkpoint was saved before; the partial one '
                   r'was removed\. Free some space', errors[0]), errors[0]
  status = status_lib.read(workdir)
  assert status['status'] == status_lib.FAILED and status['step'] == 10
  assert 'Saving checkpoint step 10' in status['error']
  assert os.listdir(f'{workdir}/checkpoints') == []  # No partial step left behind.
  # It stopped by the next save at the latest (saves run in the background), not at 30.
  assert max(r['step'] for r in metrics_lib.read(workdir)) <= 20


# ---------------------------------------------------------------------------------------
# Properties.
# ---------------------------------------------------------------------------------------
def _program_flags():
  """{program: FlagValues with its own flags} for every entry point."""
  from icl_jax import evaluate  # pylint: disable=g-import-not-at-top
  from icl_jax.report import __main__ as report_main  # pylint: disable=g-import-not-at-top
  # Importing the launcher defines its flags, SLURM's and main's on absl's FLAGS.
  importlib.import_module('launch.sweep')
  programs = {'launch.sweep': flags.FLAGS}
  for name, define in (('icl_jax.evaluate', evaluate.define_flags),
                       ('icl_jax.report', report_main.define_flags)):
    programs[name] = flags.FlagValues()
    define(programs[name])
  return programs


NUMERIC = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(['0', '-0', '1e400', '0x10', ' 3', '', 'nan', '2**31']))


@settings(max_examples=120, deadline=None, database=None)
@given(data=st.data(), value=NUMERIC)
def test_every_numeric_flag_refuses_out_of_range_values_when_parsed(data, value):
  numeric = {}
  for program, fv in _program_flags().items():
    for module, fs in fv.flags_by_module_dict().items():
      if 'icl_jax' in module or 'launch' in module:
        numeric.update({(program, f.name): f for f in fs
                        if isinstance(f.parser, (flags.IntegerParser, flags.FloatParser))})
  assert len(numeric) >= 15  # evaluate's, the launcher's and SLURM's (the report has none).
  flag = numeric[data.draw(st.sampled_from(sorted(numeric)))]
  # Bounded on both sides: no flag takes a value JAX's int32 (or SLURM) cannot hold.
  assert flag.parser.lower_bound is not None and flag.parser.upper_bound is not None, flag.name
  assert (flag.parser.upper_bound <= INT32_MAX
          or isinstance(flag.parser, flags.FloatParser)), flag.name
  # Parsed as the program parses it (the parser's bounds, then the flag's validators),
  # without touching the flag's value in the shared registry.
  try:
    parsed = flag.parser.parse(str(value))
    for validator in flag.validators:
      if not validator.checker(parsed):
        raise ValueError(validator.message)
  except (ValueError, TypeError, OverflowError, flags.Error):
    return
  assert flag.parser.lower_bound <= parsed <= flag.parser.upper_bound
  assert np.isfinite(parsed)


DAMAGES = st.one_of(
    st.tuples(st.just('truncate'), st.floats(0, 1)),
    st.tuples(st.just('flip'), st.floats(0, 1)),
    st.tuples(st.just('append'), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just('replace'), st.binary(max_size=60)))


def _damage(path, how):
  kind, arg = how
  with open(path, 'rb') as f:
    data = f.read()
  if kind == 'truncate':
    data = data[:int(len(data) * arg)]
  elif kind == 'flip' and data:
    i = min(int(len(data) * arg), len(data) - 1)
    data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
  elif kind == 'append':
    data += arg
  elif kind == 'replace':
    data = arg
  with open(path, 'wb') as f:
    f.write(data)


@pytest.fixture(scope='module')
def damage_base(trained_run, prepared, tmp_path_factory):
  base = str(tmp_path_factory.mktemp('damage_base'))
  shutil.copytree(trained_run[0], f'{base}/run')
  shutil.copytree(prepared[0], f'{base}/data')
  return base


@settings(max_examples=30, deadline=None, database=None)
@given(target=st.sampled_from(['config', 'metrics', 'status', 'cache']), how=DAMAGES)
def test_any_damage_is_read_back_or_refused_in_one_user_error(damage_base, tmp_path_factory,
                                                               target, how):
  work = str(tmp_path_factory.mktemp('damaged'))
  shutil.copytree(damage_base, work, dirs_exist_ok=True)
  run, data_dir = f'{work}/run', f'{work}/data'
  path = {'config': f'{run}/checkpoints/40/config/metadata',
          'metrics': f'{run}/metrics.jsonl', 'status': f'{run}/{status_lib.STATUS_FILE}',
          'cache': glob.glob(f'{data_dir}/icl_jax_cache/digits/1.0.0/test-8x8-*.npz')[0]}[target]
  _damage(path, how)
  try:
    if target == 'config':
      reader, step, config = recovery.open_run(run, 40)
      reader.store.close()
      assert config.model.width == 16
    elif target == 'metrics':
      records = metrics_lib.read(run)
      diagnose.plateau_length(records, 10)
    elif target == 'status':
      status_lib.read(run)
      status_lib.run_state(run, 40)
    else:
      assert load('digits', 'test', (8, 8), data_dir).x_NxD.shape == (360, 64)
  except UserError as e:
    assert '\n' not in str(e)
