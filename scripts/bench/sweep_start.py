"""Cold vs warm start of `python -m experiments.sweep` with JAX's persistent compilation cache.

The sweep runs twice, in subprocesses, both with --compilation_cache_dir naming the same fresh,
empty directory: the first run (cold) compiles every program and fills the cache, the second
(warm) loads them from it (the sweep caches every program, however quick to compile). Each run
writes into its own fresh output directory (a rerun into the same one would skip the finished
grid points). The MNIST-1D cache is filled before either run, so both read the data from disk.
Times are wall-clock times of the whole command, Python start-up and imports included: what a
user waits for.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from typing import Callable

from bench.paths import REPO


def _cache_size(path: str) -> tuple[int, int]:
  entries, size = 0, 0
  for root, _, files in os.walk(path):
    for name in files:
      entries += 1
      size += os.path.getsize(os.path.join(root, name))
  return entries, size


def _run_sweep(flags: list[str], timeout: float) -> tuple[float, str | None]:
  cmd = [sys.executable, "-m", "experiments.sweep", *flags]
  start = time.perf_counter()
  try:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          check=False)
  except subprocess.TimeoutExpired:
    return time.perf_counter() - start, f"timed out after {timeout:.0f} s: {' '.join(cmd)}"
  elapsed = time.perf_counter() - start
  if proc.returncode != 0:
    return elapsed, f"exit {proc.returncode}: {' '.join(cmd)}\n{proc.stderr[-3000:]}"
  return elapsed, None


def run(cfg: dict, log: Callable[[str], None]) -> dict:
  from initjax.training import data  # pylint: disable=import-outside-toplevel
  s = cfg["sweep"]
  data.load_mnist1d()                        # the data cache, filled before either run
  out: dict = {"flags": list(s["flags"]) or "(none: the default sweep)"}
  with tempfile.TemporaryDirectory(prefix="initjax-bench-sweep-") as tmp:
    cache = os.path.join(tmp, "jax_cache")
    for label in ("cold", "warm"):
      flags = [f"--output_dir={os.path.join(tmp, label)}", f"--compilation_cache_dir={cache}",
               *s["flags"]]
      log(f"sweep start, {label}: python -m experiments.sweep {' '.join(flags[2:])}")
      elapsed, error = _run_sweep(flags, s["timeout_s"])
      if error:
        out["error"] = f"{label} run: {error}"
        return out
      out[f"{label}_s"] = elapsed
      out[f"cache_entries_after_{label}"], out[f"cache_bytes_after_{label}"] = _cache_size(cache)
  out["warm_over_cold"] = out["warm_s"] / out["cold_s"]
  return out
