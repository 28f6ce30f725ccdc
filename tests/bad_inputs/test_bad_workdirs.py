"""Bad input at the workdir boundary: paths, files the project did not write, other runs.

Each case: one UserError naming the problem and the fix, and nothing on disk changed.
"""

import os
import subprocess
import sys

import hypothesis
from hypothesis import strategies as st
import pytest

from icl_jax import runs
from icl_jax import train
from icl_jax.errors import UserError
from helpers import snapshot
from helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _refused(config, workdir, match, watched):
  before = snapshot(watched)
  with pytest.raises(UserError, match=match):
    train.train_and_evaluate(config, workdir)
  assert snapshot(watched) == before


@pytest.mark.parametrize('name,make,match', [
    ('not_utf8', lambda d: os.path.join(d, 'w\udcff'), r'is not valid UTF-8.*Rename it'),
    ('nul', lambda d: os.path.join(d, 'w\0x'), r'holds a NUL character'),
    ('too_long', lambda d: os.path.join(d, 'w' * 300), r'too long.*names of 255 bytes'),
    ('dangling_link', lambda d: (os.symlink(os.path.join(d, 'gone'), os.path.join(d, 'l')),
                                 os.path.join(d, 'l'))[1],
     r'is a symbolic link to .*gone.*which does not exist. Create its target'),
])
def test_a_workdir_path_that_cannot_be_one(data_dir, tmp_path, name, make, match):
  del name
  workdir = make(str(tmp_path))
  _refused(tiny_config(data_dir), workdir, match, str(tmp_path))


def test_a_run_is_never_placed_inside_another_run(trained_run, data_dir):
  outer, _, _ = trained_run
  for inner in (os.path.join(outer, 'checkpoints', '40', 'mine'), os.path.join(outer, 'eval2')):
    _refused(tiny_config(data_dir), inner, rf'is inside the workdir of the run in {outer}',
             outer)


@pytest.mark.parametrize('entry,make,match', [
    ('metrics.jsonl', 'link', r'metrics.jsonl is a symbolic link .*writes a run\'s files inside '
                              r'its workdir only'),
    ('status.json', 'link', r'status.json is a symbolic link'),
    ('lease.json', 'dir', r'lease.json should be a file of the run but is not one'),
    ('status.json', 'dir', r'status.json should be a file'),
    ('tb', 'file', r'tb should be a directory of the run'),
    ('checkpoints', 'link', r'checkpoints is a symbolic link'),
])
def test_a_run_file_replaced_by_something_else(data_dir, tmp_path, entry, make, match):
  workdir, elsewhere = tmp_path / 'run', tmp_path / 'elsewhere'
  workdir.mkdir()
  elsewhere.mkdir()
  target = elsewhere / entry
  if make == 'link':
    target.write_text('theirs\n')
    os.symlink(target, workdir / entry)
  elif make == 'dir':
    (workdir / entry).mkdir()
  else:
    (workdir / entry).write_text('theirs\n')
  _refused(tiny_config(data_dir), str(workdir), match, str(tmp_path))


def test_a_non_utf8_workdir_on_the_command_line_is_one_line(data_dir, tmp_path):
  workdir = os.path.join(os.fsencode(str(tmp_path)), b'run\xff')
  out = subprocess.run(
      [sys.executable, '-m', 'icl_jax.main', '--config', 'experiments/gpicl_digits.py:smoke',
       b'--workdir=' + workdir, f'--config.data.data_dir={data_dir}'],
      cwd=REPO, capture_output=True, timeout=300)
  err = out.stderr.decode(errors='replace').strip().splitlines()
  assert out.returncode == 2 and len(err) == 1 and 'is not valid UTF-8' in err[0], err
  assert not os.path.exists(workdir)


# Names a user might give: printable and control characters, quotes, newlines, bytes that
# are not UTF-8 (as the shell hands them over: surrogates), very long ones.
_NAMES = st.one_of(
    st.text(min_size=1, max_size=40),
    st.binary(min_size=1, max_size=20).map(lambda b: os.fsdecode(b.replace(b'/', b'_'))),
    st.text(alphabet='ab \'"\n\t$`\\;', min_size=1, max_size=20),
    st.integers(200, 400).map(lambda n: 'x' * n),
).filter(lambda name: '/' not in name and name not in ('.', '..'))  # Names, not paths.


@hypothesis.settings(max_examples=60, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(name=_NAMES)
def test_any_workdir_name_is_a_workdir_or_one_user_error(tmp_path, name):
  """The property of the path boundary: a usable workdir (created inside the parent), or
  exactly one UserError; nothing outside the parent touched."""
  parent = tmp_path / 'fuzz'
  parent.mkdir(exist_ok=True)
  outside = snapshot(str(tmp_path))
  workdir = os.path.join(str(parent), name)
  try:
    runs.check_workdir(workdir)
  except UserError:
    after = snapshot(str(tmp_path))
    assert {k: v for k, v in after.items() if not k.startswith('fuzz')} == {
        k: v for k, v in outside.items() if not k.startswith('fuzz')}
    return
  assert os.path.isdir(workdir)
  assert os.path.realpath(workdir).startswith(os.path.realpath(str(parent)))
