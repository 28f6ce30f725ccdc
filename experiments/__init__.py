"""Experiment files: `get_config(arg)` (and `sweep(add, arg)` for sweeps), each with its
command lines in its docstring. Installed as icl_jax.experiments; `--config NAME[:args]`
finds them by name (icl_jax/sweep.py resolve_config_arg)."""
