"""Writing results a user can load: tidy CSV, JSON and figures, each written atomically.

Every writer goes to a temporary file in the destination directory and renames it into place,
so an interrupted run never leaves a half-written or corrupt file under the final name.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from typing import Any, Iterable, Sequence

import numpy as np


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _atomic_write_bytes(path: str, data: bytes) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                             dir=directory)
  try:
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are for sharing
    with os.fdopen(fd, "wb") as fh:
      fh.write(data)
      fh.flush()
      os.fsync(fh.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` through a temporary file in the same directory and a rename."""
  _atomic_write_bytes(path, data)


def atomic_write_text(path: str, text: str) -> None:
  _atomic_write_bytes(path, text.encode("utf-8"))


def _plain(value: Any) -> Any:
  """Converts numpy scalars/arrays to Python values; non-finite floats to None (JSON null)."""
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return _plain(value.tolist())
  if isinstance(value, (np.floating, float)):
    value = float(value)
    return value if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.bool_):
    return bool(value)
  return value


def atomic_write_json(path: str, obj: Any) -> None:
  """Writes JSON; NaN/inf never appear in the file (they become null: flag them separately)."""
  atomic_write_text(path, json.dumps(_plain(obj), indent=2, sort_keys=False,
                                     allow_nan=False) + "\n")


def _csv_cell(value: Any) -> Any:
  if value is None:
    return ""
  if isinstance(value, (float, np.floating)):
    value = float(value)
    if not math.isfinite(value):
      return ""
    return repr(value)
  if isinstance(value, (bool, np.bool_)):
    return str(bool(value))
  return value


def atomic_write_csv(path: str, rows: Iterable[dict], columns: Sequence[str]) -> int:
  """Writes tidy rows (dicts) with the given columns; non-finite floats become empty cells.

  Returns the number of rows written.
  """
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="raise",
                          lineterminator="\n")
  writer.writeheader()
  n = 0
  for row in rows:
    writer.writerow({c: _csv_cell(row.get(c)) for c in columns})
    n += 1
  atomic_write_text(path, buf.getvalue())
  return n


def atomic_savefig(fig, path: str, **kwargs) -> None:
  """Saves a matplotlib figure atomically (PNG by default)."""
  buf = io.BytesIO()
  fig.savefig(buf, format=kwargs.pop("format", "png"), **kwargs)
  _atomic_write_bytes(path, buf.getvalue())


def ensure_writable_dir(path: str) -> str:
  """Creates `path` if needed and checks that files can be created in it.

  Raises:
    ValueError: saying why the directory cannot be used.
  """
  if not path:
    raise ValueError("an output directory is required")
  try:
    os.makedirs(path, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".write_probe.", dir=path)
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    raise ValueError(f"cannot write to {path!r}: {e.strerror or e}") from None
  return path
