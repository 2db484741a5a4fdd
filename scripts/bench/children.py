"""Sections that run in a child process of their own: `scripts/benchmark.py --_child=NAME`.

A child starts a fresh JAX (and PyTorch), so a section's memory, threads, compiled programs and
crashes stay its own; it writes its result as JSON to a file the parent names, and its log goes
to the shared stderr. A failure is returned as {"error": ...}, never raised, so that one broken
section does not lose the others.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

from bench.paths import REPO, SCRIPT

# section -> (module, function, whether it needs JAX set up first)
SECTIONS: dict[str, tuple[str, str, bool]] = {
    "training": ("bench.training", "run_mlp", True),
    "cnn": ("bench.training", "run_cnn", True),
    "cnn_batchnorm": ("bench.training", "run_cnn_batchnorm", True),
    "recurrent": ("bench.training", "run_recurrent", True),
    "models": ("bench.models", "run", True),
    "memory": ("bench.memory", "run", True),
    "isometry": ("bench.isometry", "run", True),
    "sweep_start": ("bench.sweep_start", "run", False),
}


def setup_jax() -> None:
  """No persistent compilation cache in the benchmark's own processes (compile times must be
  real compilations, and every warm-up compiles as a first run would)."""
  import jax  # pylint: disable=import-outside-toplevel
  try:
    jax.config.update("jax_enable_compilation_cache", False)
  except (AttributeError, KeyError):
    pass


def section_function(name: str) -> Callable[[dict, Callable[[str], None]], Any]:
  module, function, _ = SECTIONS[name]
  return getattr(importlib.import_module(module), function)


def child_main(name: str, cfg: dict, result_path: str) -> int:
  """The child's side: run section `name`, write its result (or its error) to `result_path`."""
  start = time.perf_counter()

  def log(msg: str) -> None:
    print(f"[{name} {time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

  try:
    if SECTIONS[name][2]:
      setup_jax()
    result = section_function(name)(cfg, log)
  except Exception:  # pylint: disable=broad-except
    result = {"error": traceback.format_exc()[-4000:]}
  with open(result_path, "w", encoding="utf-8") as fh:
    json.dump(result, fh, default=float)
  return 0


class Child:
  """A section started in a child process now; `result()` waits for it."""

  def __init__(self, name: str, mode: str, timeout_s: float):
    self.name, self.timeout_s = name, timeout_s
    fd, self.path = tempfile.mkstemp(prefix=f"initjax-bench-{name}-", suffix=".json")
    os.close(fd)
    self.start = time.perf_counter()
    self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, SCRIPT, f"--_child={name}", f"--_mode={mode}",
         f"--_result={self.path}"], cwd=REPO, stdout=subprocess.DEVNULL)

  def result(self) -> dict:
    remaining = self.timeout_s - (time.perf_counter() - self.start)
    try:
      code = self.proc.wait(timeout=max(1.0, remaining))
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()
      return {"error": f"child {self.name} ran past {self.timeout_s:.0f} s and was stopped"}
    try:
      with open(self.path, encoding="utf-8") as fh:
        text = fh.read()
      return json.loads(text) if text else {
          "error": f"child {self.name} exited {code} without a result (see the log above)"}
    except (OSError, json.JSONDecodeError) as e:
      return {"error": f"child {self.name} exited {code}; its result is unreadable: {e}"}
    finally:
      os.unlink(self.path)
