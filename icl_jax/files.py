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


# POSIX limits most filesystems keep: a name of 255 bytes, a path of 4096.
NAME_MAX, PATH_MAX = 255, 4096


def local(path: str, what: str) -> str:
  """`path`, if it is a path icl_jax can write and record: the one check of every path a
  user gives (workdirs, sweep roots, output and data directories). UserError for a URL
  such as gs://, a name that is not valid UTF-8 (the path goes into JSON files and logs),
  a NUL byte, a name or path longer than the filesystem allows, or a symbolic link to
  nothing.

  Workdirs and sweep roots are written with POSIX operations (atomic renames, hard-linked
  leases), which an object store does not offer. Mounted buckets work: gcsfuse, Filestore.
  """
  if not isinstance(path, (str, os.PathLike)):
    raise UserError(f'{what} must be a path (a str or os.PathLike), got '
                    f'{type(path).__name__} {path!r}.')
  path = os.fspath(path)
  try:
    encoded = path.encode('utf-8')
  except UnicodeEncodeError:
    raise UserError(f'{what} {path!r} is not valid UTF-8 (its name was given as raw bytes): '
                    f'icl_jax records paths in JSON files and logs. Rename it with UTF-8 '
                    f'characters, or pass another one.') from None
  if '\0' in path:
    raise UserError(f'{what} {path!r} holds a NUL character, which no file name can; pass '
                    f'another path.')
  longest = max((len(part.encode('utf-8')) for part in path.split(os.sep)), default=0)
  if longest > NAME_MAX or len(encoded) > PATH_MAX:
    raise UserError(f'{what} is too long ({len(encoded)} bytes, a name of {longest}): '
                    f'filesystems allow names of {NAME_MAX} bytes and paths of {PATH_MAX}. '
                    f'Pass a shorter one.')
  if os.path.islink(path) and not os.path.exists(path):
    raise UserError(f'{what} {path!r} is a symbolic link to {os.readlink(path)!r}, which does '
                    f'not exist. Create its target, or pass another path.')
  match = _URL.match(path)
  if match:
    bucket = path[match.end():].split('/')[0] or 'BUCKET'
    raise UserError(f'{what} {path!r} is a {match.group(1)}:// URL, which icl_jax does not '
                    f'write to: a workdir needs atomic renames and leases, which an object '
                    f'store lacks. Mount it (e.g. gcsfuse {bucket} /mnt/{bucket}) and pass the '
                    f'path under the mount.')
  return path


# Written into every output directory the project fills (icl_jax.evaluate --out,
# icl_jax.report --out): it says which entries there are the project's to replace.
OUTPUT_MARKER = '.icl_jax-outputs.json'


def claim_output_dir(out: str, names: Iterable[str], what: str,
                     written_before: bool = False) -> None:
  """Makes `out` an output directory of the project's, for files named in `names`: it must
  be new or empty, or hold only such entries that the project wrote there (its marker, or
  `written_before`: outputs of a version from before the marker). Then marks it. UserError
  naming an entry of someone else's otherwise: the project overwrites only its own files."""
  names = set(names)
  marker = os.path.join(out, OUTPUT_MARKER)
  if os.path.isdir(out):
    ours = lambda e: e in names or any(e.startswith(f'{n}.tmp.') for n in names)
    entries = sorted(set(os.listdir(out)) - {OUTPUT_MARKER})
    foreign = [e for e in entries if not ours(e)]
    marked = os.path.isfile(marker) and not os.path.islink(marker)
    if foreign or (entries and not (marked or written_before)):
      raise UserError(f'{what} {out} holds files icl_jax did not write there '
                      f'({", ".join(map(repr, (foreign or entries)[:3]))}); it writes only '
                      f'into a new or empty directory, or one it wrote before. Choose another '
                      f'directory.')
  elif os.path.lexists(out):
    raise UserError(f'{what} {out} is not a directory; choose a directory.')
  write_json(marker, {'written_by': 'icl_jax', 'files': sorted(names)})


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
