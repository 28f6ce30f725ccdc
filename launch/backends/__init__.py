"""Launcher backends: how a sweep's groups reach their workers (see base.Backend).

Each backend is one file that registers itself (`registry.register`): processes.py (vmap,
local), slurm.py, tpu_vm.py. Importing this package imports every module in it, so a new
backend is one file here, or a plugin file named in ICL_JAX_PLUGINS (icl_jax/plugins.py),
which `python -m launch.sweep` imports before it reads its flags.
"""

import importlib
import pkgutil

# Before a backend imports jax (a SLURM task unpickles launch.backends.slurm.GroupTask first
# thing): the project's process settings (see icl_jax/runtime.py).
from icl_jax import runtime
runtime.configure()

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f'{__name__}.{_module.name}')
