"""Every file the project writes (status, manifests, results, CSV tables, figures) is
written atomically through `atomic_write`, safe on shared disks."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import socket
from typing import IO, Any, Iterable, Iterator, Sequence

from icl_jax.errors import UserError

_URL = re.compile(r'^([A-Za-z][A-Za-z0-9+.-]*)://')


def local(path: str, what: str) -> str:
  """`path`, if it is a local (or mounted) one; UserError for a URL such as gs://.

  Workdirs and sweep roots are written with POSIX operations (atomic renames, hard-linked
  leases), which an object store does not offer. Mounted buckets work: gcsfuse, Filestore.
  """
  match = _URL.match(path)
  if match:
    bucket = path[match.end():].split('/')[0] or 'BUCKET'
    raise UserError(f'{what} {path!r} is a {match.group(1)}:// URL, which icl_jax does not '
                    f'write to: a workdir needs atomic renames and leases, which an object '
                    f'store lacks. Mount it (e.g. gcsfuse {bucket} /mnt/{bucket}) and pass the '
                    f'path under the mount.')
  return path


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'w', **open_kwargs: Any) -> Iterator[IO]:
  """The one way the project writes a file: into a temporary name beside `path`, flushed
  to disk, then renamed over it. Readers (and a kill at any moment) see the old file or
  the new one, never a partial one; on an error the old file is left as it was. Hosts
  that write the same file at once each use their own temporary name."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp.{socket.gethostname()}.{os.getpid()}'
  try:
    with open(tmp, mode, **open_kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj: Any) -> None:
  with atomic_write(path) as f:
    json.dump(obj, f, indent=1, default=str)


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
  with atomic_write(path, newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


def save_figure(fig: Any, path: str, dpi: int = 120) -> None:
  """A matplotlib figure as PNG, written through atomic_write."""
  with atomic_write(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=dpi)


def read_json(path: str) -> Any | None:
  """The file's content; None if it is missing or unreadable."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8 (binary garbage).
    return None
