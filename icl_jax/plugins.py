"""Plugins: extensions kept outside the package, imported by every program at its start.

An extension is one file that registers itself when imported: a baseline
(`icl_jax.baselines.registry.register`), a dataset source (`icl_jax.data.sources.register`),
a launcher backend (launch/backends/), a task family or a model. Inside the package such a
file is found by its folder; outside it, name it in ICL_JAX_PLUGINS, a comma-separated list
of Python files or importable module names:

  ICL_JAX_PLUGINS=~/icl/my_learner.py,mylab.icl_sources icl-eval --workdir W --baselines mine

The training, evaluation and sweep commands (and the sweep's workers, which inherit the
environment) and `icl_jax.load` import them before anything else reads a registry.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback

from icl_jax.errors import UserError

ENV = 'ICL_JAX_PLUGINS'
_loaded: dict[str, object] = {}


def load() -> list[str]:
  """Imports each plugin named in $ICL_JAX_PLUGINS once; returns their names. UserError
  naming the plugin, the file and line where it failed, if one cannot be imported."""
  names = [n.strip() for n in os.environ.get(ENV, '').split(',') if n.strip()]
  for name in names:
    if name not in _loaded:
      _loaded[name] = _import(name)
  return names


def _import(name: str) -> object:
  path = os.path.abspath(os.path.expanduser(name))
  is_file = name.endswith('.py') or os.sep in name
  try:
    if not is_file:
      return importlib.import_module(name)
    if not os.path.isfile(path):
      raise UserError(f'Plugin {name!r} (from ${ENV}) is not a file. Name Python files or '
                      f'importable modules, separated by commas.')
    module_name = f'icl_jax_plugin_{hashlib.sha1(path.encode()).hexdigest()[:8]}'
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # Pickling (SLURM) finds its classes by this name.
    spec.loader.exec_module(module)
    return module
  except UserError:
    raise
  except BaseException as e:  # pylint: disable=broad-except
    where = next((f'{frame.filename}:{frame.lineno}' for frame in
                  reversed(traceback.extract_tb(e.__traceback__))
                  if not frame.filename.startswith('<frozen')), name)
    raise UserError(f'Plugin {name!r} (from ${ENV}) failed to import at {where}: '
                    f'{type(e).__name__}: {e}. Fix it, or drop it from ${ENV}.') from None
