"""Mid-group checkpoints of a training run, with Orbax: a preempted group resumes where it was.

`GroupCheckpoint` is what `initjax.batch_training.run_networks` calls after every segment of
steps: it saves the vmapped training state (parameters, optimizer state, records so far, losses,
the step reached, the results of finished rounds) every `every_steps` steps, or when
`every_minutes` have passed since the last save, and always when a SIGTERM/SIGINT is pending
(`initjax.distributed`), after which it stops the run. A rerun restores the newest complete save
whose fingerprint (the group's settings, block size and device count) matches, and the training
continues with the same segments, so its results equal those of an uninterrupted run.

On disk: <directory>/segment_<chunk>/ (Orbax: arrays + a JSON of where the run is); Orbax
writes to a temporary directory and renames it when complete. Orbax refuses arrays of size 0
(e.g. the stacked hidden layers of a depth-1 MLP): they are saved as one element and their
shapes kept in the JSON. Older saves are deleted after a newer one is complete; `remove()`
deletes the directory once the group's results are saved.

**Verified.** A save is used only if it is exactly what was saved:
  * <directory>/segment_<chunk>.sha256.json, written (atomically) once Orbax has finished,
    records the size and sha256 of every file of the save; before Orbax reads anything, every
    file must be there with that size and hash, and no other file. So a flipped bit, a cut or a
    missing file is caught before Orbax sees it (damaged bytes can decode without an error);
  * the JSON Orbax saves holds a sha256 of the arrays themselves (tree paths, dtypes, shapes and
    bytes), checked against what Orbax restores.
A save that fails either check, or has no record (killed before it was written, or saved by an
older initjax), is not used: one log line names it (and the file that differs), and the next
older save is tried, else the group restarts, so a resumed run equals an uninterrupted one byte
for byte. Restoring also deletes what a killed save left in <directory> (Orbax's
*.orbax-checkpoint-tmp* directories, a half-written record), saying so.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging as std_logging
import math
import os
import re
import shutil
import time
from typing import Any, Callable

import jax
import numpy as np
from absl import logging

from initjax.core import distributed
from initjax.core.results import atomic_write_json, remove_stale_temp_files

_SEGMENT = re.compile(r"^segment_(\d+)$")
RECORD_SUFFIX = ".sha256.json"
_ORBAX_TEMP = ".orbax-checkpoint-tmp"


def parse_every(text: str) -> tuple[int | None, float | None]:
  """'500' -> (500 steps, None); '10m' or '10min' -> (None, 10 minutes); '0' -> (None, None):
  only on a signal. Raises ValueError for anything else."""
  text = str(text).strip().lower()
  match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(m|min|minutes?)?", text)
  if not match:
    raise ValueError(f"{text!r} is not a number of steps (e.g. 500) or minutes (e.g. 10m)")
  value, minutes = float(match.group(1)), match.group(2) is not None
  if not math.isfinite(value) or value < 0:
    raise ValueError(f"{text!r} must be >= 0")
  if value == 0:
    return None, None
  if minutes:
    return None, value
  if value != int(value):
    raise ValueError(f"{text!r}: a number of steps must be an integer")
  return int(value), None


class GroupCheckpoint:
  """Saves and restores one group's training state (see the module docstring).

  Args:
    directory: where this group's saves go (one directory per group).
    fingerprint: identifies the settings the state belongs to; a save with another one is
      ignored (and replaced).
    chunk_steps: steps per recording chunk of the training loop (`training.record_chunk`).
    every_steps: save every this many steps (rounded up to whole chunks), or None.
    every_minutes: save when this many minutes have passed since the last save, or None.
    segment_steps: steps per segment when saving by time only (the longest a signal waits).
  """

  def __init__(self, directory: str, fingerprint: str, chunk_steps: int, *,
               every_steps: int | None = None, every_minutes: float | None = None,
               segment_steps: int = 100):
    self.directory = directory
    self.fingerprint = fingerprint
    steps = every_steps or segment_steps
    self.every_chunks = max(1, -(-steps // chunk_steps))
    self.save_every_segment = every_steps is not None
    self.every_seconds = None if every_minutes is None else 60.0 * every_minutes
    self._last_save = time.monotonic()

  def _saves(self) -> list[tuple[int, str]]:
    try:
      names = os.listdir(self.directory)
    except OSError:
      return []
    found = [(int(m.group(1)), os.path.join(self.directory, n))
             for n in names if (m := _SEGMENT.match(n))]
    return sorted(found, reverse=True)

  def restore(self) -> dict[str, Any] | None:
    """The newest complete, verified save with this fingerprint, as `run_networks`' payload, or
    None (see the module docstring)."""
    self._remove_leftovers()
    saves = self._saves()
    for i, (_, path) in enumerate(saves):
      try:
        meta, arrays = read_verified(path)
      except Unusable as e:
        logging.warning("checkpoint %s %s; not using it: %s", path, e,
                        "trying the next older save" if i + 1 < len(saves)
                        else "starting the group afresh")
        continue
      if meta.get("fingerprint") != self.fingerprint:
        logging.info("checkpoint %s belongs to other settings; starting the group afresh", path)
        return None
      logging.info("resuming from checkpoint %s (round %d, step %d)", path, meta["round"],
                   meta["steps"])
      arrays = _unpack_empty(arrays, meta.get("empty", {}))
      return {"round": int(meta["round"]), "chunk": int(meta["chunk"]),
              "state": list(arrays["state"]), "losses": arrays["losses"],
              "done": list(arrays.get("done") or [])}
    return None

  def _remove_leftovers(self) -> None:
    """Deletes what a killed save left here: Orbax's temporary directories and a half-written
    record (only this group's run writes into this directory)."""
    try:
      names = os.listdir(self.directory)
    except OSError:
      return
    removed = [n for n in names if _ORBAX_TEMP in n]
    for name in removed:
      shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
    removed += remove_stale_temp_files(
        self.directory, lambda target: target.endswith(RECORD_SUFFIX)
        and bool(_SEGMENT.match(target[:-len(RECORD_SUFFIX)])))
    if removed:
      logging.info("removed %d unfinished checkpoint file(s) that an earlier killed run left in "
                   "%s: %s", len(removed), self.directory, ", ".join(sorted(removed)))

  def save(self, payload: dict[str, Any], steps: int) -> str:
    """Writes `payload` (complete, or not at all), then deletes the older saves."""
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    os.makedirs(self.directory, exist_ok=True)
    path = os.path.abspath(os.path.join(self.directory, f"segment_{steps:09d}"))
    if os.path.exists(path):
      shutil.rmtree(path)
    arrays = {"state": payload["state"], "losses": payload["losses"]}
    if payload["done"]:
      arrays["done"] = payload["done"]
    arrays, empty = _pack_empty(arrays)
    meta = {"fingerprint": self.fingerprint, "round": payload["round"],
            "chunk": payload["chunk"], "steps": steps, "empty": empty,
            "arrays_sha256": arrays_sha256(arrays)}
    with _quiet_orbax():
      ocp.Checkpointer(_handler()).save(
          path, args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                        meta=ocp.args.JsonSave(meta)))
    atomic_write_json(path + RECORD_SUFFIX, {"files": file_hashes(path)})
    for _, older in self._saves():
      if os.path.abspath(older) != path:
        shutil.rmtree(older, ignore_errors=True)
        if os.path.exists(older + RECORD_SUFFIX):
          os.unlink(older + RECORD_SUFFIX)
    self._last_save = time.monotonic()
    return path

  def segment_done(self, payload: Callable[[], dict[str, Any]]) -> None:
    """After a segment: saves when due (every_steps, every_minutes, or a pending signal), and
    stops the run (`distributed.Interrupted`) once saved if a signal is pending."""
    stopping = distributed.interrupt_requested()
    due = (self.save_every_segment or stopping or (
        self.every_seconds is not None
        and time.monotonic() - self._last_save >= self.every_seconds))
    if due:
      data = payload()
      steps = data["steps"]
      path = self.save(data, steps)
      logging.info("saved checkpoint %s (round %d, step %d)", path, data["round"], steps)
    if stopping:
      distributed.check_interrupted()

  def remove(self) -> None:
    """Deletes every save of this group (its results are saved elsewhere)."""
    shutil.rmtree(self.directory, ignore_errors=True)


def arrays_sha256(arrays: Any) -> str:
  """sha256 of a tree of arrays: every leaf's tree path, dtype, shape and bytes, in tree order."""
  digest = hashlib.sha256()
  for path, a in jax.tree_util.tree_flatten_with_path(arrays)[0]:
    a = np.ascontiguousarray(np.asarray(a))
    digest.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode("utf-8"))
    digest.update(a.tobytes())
  return digest.hexdigest()


def file_hashes(path: str) -> dict[str, list]:
  """{relative path: [size, sha256]} of every file under the directory `path`."""
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      digest = hashlib.sha256()
      with open(full, "rb") as fh:
        for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
          digest.update(block)
      out[os.path.relpath(full, path)] = [os.path.getsize(full), digest.hexdigest()]
  return dict(sorted(out.items()))


class Unusable(Exception):
  """A save that cannot be used; the message says why in a few words (naming the file)."""


def read_verified(path: str) -> tuple[dict[str, Any], Any]:
  """(meta, arrays) of the save `path`, read by Orbax only after every file has been verified
  against its record, and the arrays checked against the sha256 saved with them.

  Raises:
    Unusable: saying why (the file that differs, a missing record, an Orbax error).
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  why = verify_files(path)
  if why is not None:
    raise Unusable(why)
  try:
    with _quiet_orbax():
      restored = ocp.Checkpointer(_handler()).restore(
          path, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(),
                                        meta=ocp.args.JsonRestore()))
    meta, arrays = restored["meta"], restored["arrays"]
  except Exception as e:  # pylint: disable=broad-except
    raise Unusable(f"cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                   ) from None
  if not isinstance(meta, dict) or arrays_sha256(arrays) != meta.get("arrays_sha256"):
    raise Unusable("holds arrays that do not match the sha256 recorded when they were saved "
                   "(as Orbax restores them)")
  return meta, arrays


def verify_files(path: str) -> str | None:
  """None if the save `path` holds exactly the files its record lists (sizes and sha256), else
  why not, in a few words naming the file."""
  record_path = path + RECORD_SUFFIX
  try:
    with open(record_path, encoding="utf-8") as fh:
      recorded = json.load(fh)["files"]
    if not isinstance(recorded, dict):
      raise TypeError("not an object")
  except FileNotFoundError:
    return (f"has no checksum record ({os.path.basename(record_path)}: killed before it was "
            "written, or saved by an older initjax), so it cannot be verified")
  except (OSError, ValueError, KeyError, TypeError) as e:
    return f"has an unreadable checksum record {record_path} ({e})"
  try:
    found = file_hashes(path)
  except OSError as e:
    return f"cannot be read ({e.strerror or e}: {e.filename})"
  for name, (size, sha) in found.items():
    if name not in recorded:
      return f"holds a file its checksum record does not list: {os.path.join(path, name)}"
    if [size, sha] != list(recorded[name]):
      what = (f"is {size} bytes where {recorded[name][0]} were saved" if size != recorded[name][0]
              else "does not match the sha256 recorded when it was saved")
      return f"is damaged: {os.path.join(path, name)} {what}"
  missing = sorted(set(recorded) - set(found))
  if missing:
    return f"is missing {os.path.join(path, missing[0])} (its checksum record lists it)"
  return None


def _handler():
  """Orbax's handler of a save: the arrays and the JSON, each item's handler named (so that a
  restore neither guesses them nor warns that it cannot)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  return ocp.CompositeCheckpointHandler(arrays=ocp.StandardCheckpointHandler(),
                                        meta=ocp.JsonCheckpointHandler())


class _DropOrbaxInfo(std_logging.Filter):
  """Drops Orbax's INFO and DEBUG records (dozens per save or restore, about its internals)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


@contextlib.contextmanager
def _quiet_orbax():
  """Orbax's own INFO logging off for the duration (its warnings and errors stay)."""
  logger, dropper = std_logging.getLogger("absl"), _DropOrbaxInfo()
  logger.addFilter(dropper)
  try:
    yield
  finally:
    logger.removeFilter(dropper)


def _pack_empty(arrays: Any) -> tuple[Any, dict[str, list]]:
  """`arrays` with every array of size 0 replaced by one zero (Orbax cannot save them), and
  {tree path: [shape, dtype]} of those."""
  empty = {}

  def pack(path, a):
    a = np.asarray(a)
    if a.size:
      return a
    empty[jax.tree_util.keystr(path)] = [list(a.shape), a.dtype.str]
    return np.zeros((1,), a.dtype)
  return jax.tree_util.tree_map_with_path(pack, arrays), empty


def _unpack_empty(arrays: Any, empty: dict[str, list]) -> Any:
  """Undoes `_pack_empty` on restored arrays."""
  return jax.tree_util.tree_map_with_path(
      lambda path, a: (np.zeros(empty[k][0], np.dtype(empty[k][1]))
                       if (k := jax.tree_util.keystr(path)) in empty else a), arrays)
