"""Timing: one warm-up call per contender (compilation excluded), round-robin repeats, medians.

Contenders of one comparison run in one process, one after another in every round (so a change
of load on a shared machine hits every contender alike), and a ratio is a ratio of medians.
"""
from __future__ import annotations

import re
import resource
import signal
import threading
import time
from typing import Any, Callable

import numpy as np


def cpu_time() -> float:
  """CPU seconds (user + system) used by this process so far, every thread included."""
  ru = resource.getrusage(resource.RUSAGE_SELF)
  return ru.ru_utime + ru.ru_stime


class _OverBudget(Exception):
  pass


def _timed_call(fn: Callable[[], Any], budget_s: float | None) -> tuple[float, float, bool]:
  """(wall s, CPU s, finished) of one call; a call with a budget is stopped once it has run
  that long (SIGALRM, checked between Python bytecodes, so the library call in progress ends
  first; the main thread only, elsewhere the budget is ignored)."""
  use_alarm = budget_s is not None and threading.current_thread() is threading.main_thread()
  if use_alarm:
    def stop(signum, frame):
      del signum, frame
      raise _OverBudget()
    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, budget_s)
  cpu0, start = cpu_time(), time.perf_counter()
  try:
    fn()
    finished = True
  except _OverBudget:
    finished = False
  finally:
    if use_alarm:
      signal.setitimer(signal.ITIMER_REAL, 0)
      signal.signal(signal.SIGALRM, previous)
  return time.perf_counter() - start, cpu_time() - cpu0, finished


def interleaved(contenders: dict[str, Callable[[], Any]], repeats: int,
                budget: Callable[[str, dict], float | None] | None = None) -> dict[str, dict]:
  """A warm-up call of each contender (its time reported as first_call_s), then `repeats`
  rounds in which every contender is called once, in order.

  `budget(name, warmups)` may give a contender a time limit per call, from the warm-ups so far
  (a configuration so slow on this machine that running it to the end would only burn the time
  budget, such as a multi-threaded baseline on a loaded machine). A call stopped at its limit
  ends that contender's calls: its limit stands as a lower bound of its time, and the row is
  marked `stopped_at_budget_s` (with `excluded_after_warmup` if the warm-up itself was stopped).

  Returns {name: {"first_call_s", "median_s", "min_s", "all_s", "cpu_over_wall"}}; the last is
  this process's CPU time over the wall time of the repeats (2.0: two cores busy; work done in
  other processes is not counted).
  """
  out: dict[str, dict] = {}
  limits: dict[str, float | None] = {}
  for name, fn in contenders.items():
    limits[name] = budget(name, out) if budget else None
    wall, _, finished = _timed_call(fn, limits[name])
    out[name] = {"first_call_s": wall, "all_s": [], "cpu_s": []}
    if not finished:
      out[name].update(stopped_at_budget_s=limits[name], excluded_after_warmup=True)
  for _ in range(repeats):
    for name, fn in contenders.items():
      if "stopped_at_budget_s" in out[name]:
        continue
      wall, cpu, finished = _timed_call(fn, limits[name])
      out[name]["all_s"].append(wall)
      out[name]["cpu_s"].append(cpu)
      if not finished:
        out[name]["stopped_at_budget_s"] = limits[name]
  for r in out.values():
    if not r["all_s"]:
      r["all_s"] = [r["first_call_s"]]
    r["median_s"] = float(np.median(r["all_s"]))
    r["min_s"] = float(np.min(r["all_s"]))
    if r["cpu_s"]:
      r["cpu_over_wall"] = float(np.sum(r["cpu_s"]) / np.sum(r["all_s"]))
    del r["cpu_s"]
  return out


def thread_twin_budget(factor: float = 3.0,
                       floor_s: float = 1.0) -> Callable[[str, dict], float | None]:
  """A `budget` for `interleaved`: a multi-threaded contender "... (k threads)" may take
  `factor` times the warm-up of its "... (1 thread)" twin (at least `floor_s`) per call; on a
  shared machine, k spinning threads on cores that others use can run 20-30x slower."""
  def budget(name: str, warmups: dict) -> float | None:
    twin = re.sub(r"\d+ threads\)$", "1 thread)", name)
    if twin == name or twin not in warmups:
      return None
    return max(floor_s, factor * warmups[twin]["first_call_s"])
  return budget


def rate(timing: dict, items: int, flops_per_item: float | None = None,
         unit: str = "items") -> dict:
  """A timing with its throughput: `{unit}_per_s`, ms per item, GFLOP/s (median time)."""
  r = dict(timing)
  r[f"{unit}_per_call"] = items
  r[f"{unit}_per_s"] = items / timing["median_s"]
  r[f"ms_per_{unit.rstrip('s')}"] = 1e3 * timing["median_s"] / items
  if flops_per_item is not None:
    r["gflops"] = flops_per_item * items / timing["median_s"] / 1e9
  return r
