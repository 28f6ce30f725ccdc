"""icl_jax: meta-train black-box sequence models into general-purpose in-context learners.

The public Python API (see docs/evaluation.md, "From Python"):
  icl_jax.load(workdir, step=None)  -> icl_jax.Trained: a trained model's parameters, with
                                       logits / predict / sample_episodes
  icl_jax.workload.build(config)    -> the datasets, Spec and abstract state of a config
"""

__version__ = "0.1.0"

__all__ = ['Trained', 'load']


def __getattr__(name):
  # Lazy: `import icl_jax.report` (or any light submodule) must not pull in JAX and TFDS.
  if name in __all__:
    from icl_jax import api  # pylint: disable=g-import-not-at-top
    return getattr(api, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
