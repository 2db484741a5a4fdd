"""Thread counts of the baselines' libraries: NumPy's OpenBLAS and PyTorch's intra-op pool.

JAX's own threads are not set here: initjax spreads independent networks over one worker thread
per core (`initjax.parallel.workers`), which is what is measured.
"""
from __future__ import annotations

import ctypes
import functools
import glob
import os
import sys
from typing import Any, Callable

import numpy as np


def usable_cores() -> int:
  """The CPU cores this process may run on (taskset, cgroups, Slurm)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def thread_counts(max_threads: int | None = None) -> list[int]:
  """The thread counts a baseline is tried with: 1 and the number of usable cores (at most
  `max_threads`)."""
  return sorted({1, min(usable_cores(), max_threads or usable_cores())})


def thread_label(n: int) -> str:
  return f"{n} thread{'s' * (n > 1)}"


@functools.lru_cache(maxsize=1)
def _openblas() -> tuple[Callable, Callable] | None:
  """(get, set) of the OpenBLAS bundled with NumPy, or None."""
  libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
  for lib in libs:
    try:
      handle = ctypes.CDLL(lib)
    except OSError:
      continue
    for suffix in ("64_", ""):
      get = getattr(handle, f"scipy_openblas_get_num_threads{suffix}", None)
      put = getattr(handle, f"scipy_openblas_set_num_threads{suffix}", None)
      if get is not None and put is not None:
        return get, put
  return None


class library_threads:  # pylint: disable=invalid-name
  """Sets NumPy's OpenBLAS and PyTorch's intra-op thread counts inside the block (best effort;
  PyTorch only if it is already imported)."""

  def __init__(self, n: int):
    self.n = n
    self.saved: tuple[Any, Any] = (None, None)

  def __enter__(self):
    blas = _openblas()
    torch = sys.modules.get("torch")
    self.saved = (blas and blas[0](), torch and torch.get_num_threads())
    if blas:
      blas[1](self.n)
    if torch:
      torch.set_num_threads(self.n)
    return self

  def __exit__(self, *exc):
    blas = _openblas()
    torch = sys.modules.get("torch")
    if blas and self.saved[0]:
      blas[1](self.saved[0])
    if torch and self.saved[1]:
      torch.set_num_threads(self.saved[1])


def with_threads(n: int, fn: Callable[[], Any]) -> Callable[[], Any]:
  """`fn` run with `library_threads(n)`."""
  def run():
    with library_threads(n):
      return fn()
  return run
