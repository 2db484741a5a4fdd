"""Peak resident memory of a 10,000-seed propagation run (in a child process of its own, so that
nothing else the benchmark did counts): its VmHWM, and its ru_maxrss for reference."""
from __future__ import annotations

import resource
import time

import numpy as np


def _vm_hwm_gb() -> float:
  """Peak resident memory of this process image: VmHWM (falls back to ru_maxrss)."""
  try:
    with open("/proc/self/status", encoding="ascii") as fh:
      for line in fh:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 2**20
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run(cfg: dict, log=None) -> dict:
  del log
  import jax  # pylint: disable=import-outside-toplevel

  from initjax.measurement import propagation  # pylint: disable=import-outside-toplevel
  m, p = cfg["memory"], cfg["propagation"]
  spec = propagation.NetworkSpec(input_dim=p["input_dim"], width=p["width"], depth=p["depth"],
                                 batch_size=m["batch_size"])
  hwm_before = _vm_hwm_gb()
  start = time.perf_counter()
  out = propagation.measure(jax.random.key(0), spec, weight_init="he_normal",
                            num_seeds=m["num_seeds"])
  elapsed = time.perf_counter() - start
  finite = bool(all(np.isfinite(v).all() for v in out.values()))
  return {"num_seeds": m["num_seeds"], "batch_size": m["batch_size"], "depth": p["depth"],
          "width": p["width"], "seed_chunk": propagation.default_seed_chunk(spec),
          "devices": jax.local_device_count(),
          "peak_rss_gb": _vm_hwm_gb(), "peak_rss_gb_after_imports": hwm_before,
          "ru_maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
          "ru_maxrss_note": ("Linux keeps the parent's resident size at fork in the child's "
                             "ru_maxrss; peak_rss_gb is the child's own high-water mark "
                             "(VmHWM of /proc/self/status, reset by exec)"),
          "wall_s_including_compile": elapsed, "all_finite": finite}
