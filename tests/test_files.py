"""One atomic writer: an error (or a kill) mid-write leaves the old file whole."""

import os

import pytest

from icl_jax import files
from icl_jax import results


def test_an_error_mid_write_keeps_the_old_file_and_no_temporary(tmp_path):
  path = str(tmp_path / 'out' / 'results.json')
  files.write_json(path, {'old': 1})
  with pytest.raises(RuntimeError):
    with files.atomic_write(path) as f:
      f.write('{"new": ')  # Half of the new file is on disk under the temporary name.
      raise RuntimeError('killed')
  assert files.read_json(path) == {'old': 1}
  assert os.listdir(tmp_path / 'out') == ['results.json']


def test_a_figure_that_fails_to_render_leaves_the_old_png(tmp_path, monkeypatch):
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  curves = {'unseen': {'model': {'mean': [0.1, 0.5, 0.9], 'ci95': [0.0, 0.1, 0.1]}}}
  path = str(tmp_path / 'accuracy.png')
  results.plot(path, curves, {'unseen': 'digits'}, 0.1)
  with open(path, 'rb') as f:
    old = f.read()
  assert old.startswith(b'\x89PNG')

  def half_then_fail(self, f, **kwargs):
    del self, kwargs
    f.write(b'\x89PNG half')
    raise OSError('No space left on device')

  monkeypatch.setattr(figure.Figure, 'savefig', half_then_fail)
  with pytest.raises(OSError):
    results.plot(path, curves, {'unseen': 'digits'}, 0.1)
  with open(path, 'rb') as f:
    assert f.read() == old
  assert os.listdir(tmp_path) == ['accuracy.png']
