"""Small files (status, manifests, CSV tables) written atomically, safe on shared disks."""

from __future__ import annotations

import csv
import json
import os
import socket
from typing import Any, Iterable, Sequence


def write_json(path: str, obj: Any) -> None:
  """Readers see the old file or the new one, never a partial one; hosts that write the
  same file at once each use their own temporary name."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp.{socket.gethostname()}.{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1, default=str)
  os.replace(tmp, path)


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
  """A CSV table, written like write_json: readers never see half of it."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp.{socket.gethostname()}.{os.getpid()}'
  with open(tmp, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  os.replace(tmp, path)


def read_json(path: str) -> Any | None:
  """The file's content; None if it is missing or unreadable."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
