"""examples/quickstart.ipynb runs from top to bottom against a tiny run made here, so the
notebook the docs show cannot rot."""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, 'examples', 'quickstart.ipynb')


@pytest.mark.slow
def test_the_quickstart_notebook_runs(trained_run, monkeypatch):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  workdir, _, _ = trained_run
  monkeypatch.setenv('ICL_JAX_NOTEBOOK_WORKDIR', workdir)
  monkeypatch.setenv('MPLBACKEND', 'Agg')
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': REPO}}).execute()
  printed = ''.join(o.get('text', '') for cell in notebook.cells if cell.cell_type == 'code'
                    for o in cell.get('outputs', []))
  assert f'{workdir}: step 40' in printed
  assert 'accuracy over the last 10 positions: model' in printed
  assert 'predictions:' in printed
