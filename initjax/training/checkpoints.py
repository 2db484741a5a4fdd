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
"""
from __future__ import annotations

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

_SEGMENT = re.compile(r"^segment_(\d+)$")


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
    """The newest complete save with this fingerprint, as `run_networks`' payload, or None."""
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    for _, path in self._saves():
      try:
        restored = ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(path)
        meta, arrays = restored["meta"], restored["arrays"]
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("checkpoint %s cannot be read (%s); not using it", path,
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
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
            "chunk": payload["chunk"], "steps": steps, "empty": empty}
    ocp.Checkpointer(ocp.CompositeCheckpointHandler()).save(
        path, args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                      meta=ocp.args.JsonSave(meta)))
    for _, older in self._saves():
      if os.path.abspath(older) != path:
        shutil.rmtree(older, ignore_errors=True)
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
