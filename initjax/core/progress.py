"""Long work says so: a progress line with an ETA in the log, at most once a minute.

`Progress(what, total)` is told how much is done (`update(done)`); it logs
"<what>: <done> of <total> (<percent>); <elapsed> elapsed, about <eta> left" when at least
`every_seconds` have passed since the start or since its last line, so work that ends within
that time logs nothing. The ETA assumes the rest goes at the average speed so far (work done
before this process started, `start`, does not count towards the speed).
"""
from __future__ import annotations

import math
import time

from absl import logging


def duration(seconds: float) -> str:
  """Seconds as a short human duration: '45 s', '3 min 20 s', '2 h 05 min', '3.2 days'."""
  if not math.isfinite(seconds):
    return "an unknown time"
  seconds = max(0.0, seconds)
  if seconds < 60:
    return f"{seconds:.0f} s"
  if seconds < 3600:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
  if seconds < 48 * 3600:
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
  return f"{seconds / 86400:.1f} days"


class Progress:
  """Logs the progress of one piece of work (see the module docstring).

  Args:
    what: a few words naming the work ("group 1 of 3: training").
    total: how much there is to do, in any unit.
    unit: the unit's name for the line ("networks"), or "".
    every_seconds: the least time between two lines.
    start: how much was done before this process started (a resumed run).
  """

  def __init__(self, what: str, total: float, unit: str = "", every_seconds: float = 60.0,
               start: float = 0.0):
    self.what, self.total, self.unit = what, float(total), unit
    self.every_seconds, self.start = every_seconds, float(start)
    self._t0 = self._last = time.monotonic()
    self.lines = 0

  def update(self, done: float) -> None:
    """Records that `done` (of `total`) is done; logs a line when one is due."""
    now = time.monotonic()
    if now - self._last < self.every_seconds or self.total <= 0:
      return
    self._last = now
    elapsed = now - self._t0
    rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
    left = (self.total - done) / rate if rate > 0 else math.inf
    unit = f" {self.unit}" if self.unit else ""
    logging.info("%s: %s of %s%s (%.1f%%); %s elapsed, about %s left", self.what,
                 _number(done), _number(self.total), unit, 100.0 * done / self.total,
                 duration(elapsed), duration(left))
    self.lines += 1


def _number(x: float) -> str:
  return f"{int(x):,}" if float(x).is_integer() else f"{x:,.1f}"
