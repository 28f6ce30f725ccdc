"""The launcher backends by name: `--backend NAME` picks one (validated against this)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from icl_jax.errors import UserError

if TYPE_CHECKING:
  from . import base

_BACKENDS: dict[str, base.Backend] = {}


def register(backend: base.Backend) -> base.Backend:
  """Adds a backend (an instance of a base.Backend subclass); returns it."""
  if not backend.name or not backend.name.replace('_', '').isalnum():
    raise ValueError(f'A backend needs a name of letters, digits and _, got {backend.name!r}.')
  if backend.name in _BACKENDS and type(_BACKENDS[backend.name]) is not type(backend):
    first = type(_BACKENDS[backend.name]).__module__
    raise ValueError(f'Backend {backend.name!r} is registered twice ({first} and '
                     f'{type(backend).__module__}).')
  _BACKENDS[backend.name] = backend
  return backend


def names() -> list[str]:
  return list(_BACKENDS)


def get(name: str) -> base.Backend:
  try:
    return _BACKENDS[name]
  except KeyError:
    raise UserError(f'Unknown backend {name!r}; known: {", ".join(_BACKENDS)}. A new one is a '
                    f'file in launch/backends/ or a plugin (ICL_JAX_PLUGINS).') from None


def all_backends() -> list[base.Backend]:
  return list(_BACKENDS.values())
