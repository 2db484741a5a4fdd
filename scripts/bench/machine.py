"""What the numbers were measured on: the machine, its load, the library versions."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys

import numpy as np

from bench import torch_peers
from bench.threads import usable_cores


def load_average() -> list[float] | None:
  """The 1, 5 and 15 minute load averages (a shared machine makes every timing noisier)."""
  try:
    return [round(v, 2) for v in os.getloadavg()]
  except OSError:
    return None


def machine_info() -> dict:
  info = {"platform": platform.platform(), "python": sys.version.split()[0],
          "processor": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "cpus_usable": usable_cores()}
  try:
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
      for line in fh:
        if line.startswith("model name"):
          info["cpu_model"] = line.split(":", 1)[1].strip()
          break
    with open("/proc/meminfo", encoding="ascii") as fh:
      info["memory_gb"] = round(int(fh.readline().split()[1]) / 2**20, 1)
  except OSError:
    pass
  info["load_average_at_start"] = load_average()
  return info


def accelerator() -> dict:
  """The default JAX device: platform, kind, count."""
  import jax  # pylint: disable=import-outside-toplevel
  devices = jax.devices()
  return {"platform": devices[0].platform, "device_kind": devices[0].device_kind,
          "count": len(devices)}


def versions(repo: str) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jaxlib  # pylint: disable=import-outside-toplevel
  out = {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "numpy": np.__version__,
         "jax_backend": jax.default_backend(), "jax_devices": [str(d) for d in jax.devices()],
         "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
         "jax_disable_most_optimizations": jax.config.values.get(
             "jax_disable_most_optimizations"),
         "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
  for name in ("optax", "torch"):
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  if torch_peers.hidden():
    out["torch"] = None
  out["initjax_commit"] = _git(repo, "rev-parse", "--short", "HEAD") or None
  status = _git(repo, "status", "--porcelain", "--untracked-files=no")
  out["initjax_uncommitted_changes"] = None if status is None else bool(status)
  return out


def _git(repo: str, *args: str) -> str | None:
  try:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.SubprocessError):
    return None
  return proc.stdout.strip() if proc.returncode == 0 else None
