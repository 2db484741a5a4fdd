"""Writing results a user can load: tidy CSV, JSON and figures, each written atomically.

Every writer goes to a temporary file in the destination directory and renames it into place,
so an interrupted run never leaves a half-written or corrupt file under the final name.
`atomic_write_files` does that for several files at once: every one is written in full before
the first is renamed, so a full disk leaves the old set, never a mix of old and new files.
`csv_bytes` and `json_sha256` give what a reader needs to verify a file later (its bytes as
written, hence their sha256, and a canonical hash of a JSON record's content).

A temporary file is named `.<final name>.<8 random characters>.tmp` in the destination
directory; only a killed process (SIGKILL, a power cut) leaves one behind, and
`remove_stale_temp_files` deletes those of given final names, and no other file.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import tempfile
from typing import Any, Callable, Collection, Iterable, Sequence

import numpy as np


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


_TEMP_NAME = re.compile(r"^\.(.+)\.[a-z0-9_]{8}\.tmp$")  # mkstemp's 8 random characters


def temp_file_target(entry: str) -> str | None:
  """The final name a temporary file of these writers is for (".a.csv.x1y2z3w4.tmp" -> "a.csv"),
  or None for any other name."""
  match = _TEMP_NAME.match(entry)
  return match.group(1) if match else None


def remove_stale_temp_files(directory: str, targets: Collection[str] | Callable[[str], bool],
                            older_than: float | None = None) -> list[str]:
  """Deletes the temporary files these writers left in `directory` for the final names
  `targets` (a collection of names, or a predicate on a name), and only those last modified
  before `older_than` (a `time.time()`) when given; returns the names deleted.

  Only a killed writer leaves one, so call it where no live process is writing those names (an
  output directory this run holds, its own files), or with `older_than` a time since which no
  process that was writing them before is alive."""
  wanted = targets if callable(targets) else set(targets).__contains__
  removed = []
  try:
    entries = sorted(os.listdir(directory))
  except OSError:
    return removed
  for entry in entries:
    target = temp_file_target(entry)
    if target is None or not wanted(target):
      continue
    path = os.path.join(directory, entry)
    try:
      if older_than is None or os.stat(path).st_mtime < older_than:
        os.unlink(path)
        removed.append(entry)
    except OSError:
      pass
  return removed


def _write_temp(path: str, data: bytes) -> str:
  """Writes `data` (flushed to disk) to a new temporary file next to `path`; returns its name."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                             dir=directory)
  try:
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are for sharing
    with os.fdopen(fd, "wb") as fh:
      fh.write(data)
      fh.flush()
      os.fsync(fh.fileno())
  except BaseException:
    _remove_quietly(tmp)
    raise
  return tmp


def _remove_quietly(path: str) -> None:
  try:
    os.unlink(path)
  except OSError:
    pass


def _atomic_write_bytes(path: str, data: bytes) -> None:
  tmp = _write_temp(path, data)
  try:
    os.replace(tmp, path)
  except BaseException:
    _remove_quietly(tmp)
    raise


def atomic_write_files(files: dict[str, bytes]) -> None:
  """Writes several files, each through a temporary file and a rename; every temporary file is
  complete (and flushed) before the first rename, so an error while writing (a full disk, a
  read-only directory) leaves none of them changed and no temporary file behind."""
  written: list[tuple[str, str]] = []
  try:
    for path, data in files.items():
      written.append((_write_temp(path, data), path))
    for tmp, path in written:
      os.replace(tmp, path)
  except BaseException:
    for tmp, _ in written:
      if os.path.exists(tmp):
        _remove_quietly(tmp)
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


def json_bytes(obj: Any) -> bytes:
  """The bytes `atomic_write_json` writes: indented JSON, NaN/inf as null."""
  return (json.dumps(_plain(obj), indent=2, sort_keys=False, allow_nan=False) + "\n").encode(
      "utf-8")


def atomic_write_json(path: str, obj: Any) -> None:
  """Writes JSON; NaN/inf never appear in the file (they become null: flag them separately)."""
  _atomic_write_bytes(path, json_bytes(obj))


def json_sha256(obj: Any) -> str:
  """sha256 of an object's canonical JSON (sorted keys, no spaces, NaN/inf as null): the same
  for the object before `atomic_write_json` and for what `json.load` reads back."""
  text = json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


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


def csv_bytes(rows: Iterable[dict], columns: Sequence[str]) -> tuple[bytes, int]:
  """Tidy rows (dicts) as CSV bytes with the given columns (non-finite floats become empty
  cells), and the number of rows."""
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="raise",
                          lineterminator="\n")
  writer.writeheader()
  n = 0
  for row in rows:
    writer.writerow({c: _csv_cell(row.get(c)) for c in columns})
    n += 1
  return buf.getvalue().encode("utf-8"), n


def atomic_write_csv(path: str, rows: Iterable[dict], columns: Sequence[str]) -> int:
  """Writes tidy rows (dicts) with the given columns; non-finite floats become empty cells.

  Returns the number of rows written.
  """
  data, n = csv_bytes(rows, columns)
  _atomic_write_bytes(path, data)
  return n


def figure_bytes(fig, **kwargs) -> bytes:
  """A matplotlib figure rendered to bytes (PNG by default), for `atomic_write_files`."""
  buf = io.BytesIO()
  fig.savefig(buf, format=kwargs.pop("format", "png"), **kwargs)
  return buf.getvalue()


def atomic_savefig(fig, path: str, **kwargs) -> None:
  """Saves a matplotlib figure atomically (PNG by default)."""
  _atomic_write_bytes(path, figure_bytes(fig, **kwargs))


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
