"""Jacobian spectra: `initjax.measurement.isometry.measure` against per-network loops.

The workload of issue 21: tanh MLPs at the critical point (sigma2_w = 1.189, sigma2_b = 1e-3,
Gaussian weights), depth K, width D = D_in, one input point at the fixed point per network; the
Jacobian J_K = dh_K/dx and its singular values. Contenders:
  (a) `isometry.measure`, everything included (keys, weights, the forward pass, the products,
      log10 m_1 at every layer, the SVD of J_K, results on the host);
  (b) a NumPy loop over networks: draw the weights, J = D_k W_k J by products of layer matrices,
      then `numpy.linalg.svd` (float32; 1 thread and one per core);
  (c) one network's jitted program (`isometry.jacobian_spectra`) called once per network.
LAPACK inside XLA runs on scipy's OpenBLAS, kept at one thread here (its own threads slowed an
SVD 90x on a loaded machine); the section runs in a child process of its own.
"""
from __future__ import annotations

import ctypes
import glob
import math
import os
from typing import Any, Callable

import numpy as np

from bench import threads, timing

SIGMA2_W, SIGMA2_B = 1.1891895852012853, 1e-3     # tanh's critical point at sigma2_b = 1e-3


def _scipy_openblas_one_thread() -> bool:
  """Sets the OpenBLAS that jaxlib's LAPACK kernels use (scipy's) to one thread."""
  import scipy  # pylint: disable=import-outside-toplevel
  for lib in glob.glob(os.path.join(os.path.dirname(scipy.__file__), "..", "scipy.libs",
                                    "*openblas*")):
    try:
      handle = ctypes.CDLL(lib)
    except OSError:
      continue
    for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                 "openblas_set_num_threads"):
      fn = getattr(handle, name, None)
      if fn is not None:
        fn(1)
        return True
  return False


def numpy_network(rng, depth: int, width: int, input_std: float) -> np.ndarray:
  """One network, as a NumPy user writes it: J = D_k W_k ... D_1 W_1, then its singular values."""
  x = (rng.standard_normal(width) * input_std).astype(np.float32)
  h, j = x, np.eye(width, dtype=np.float32)
  std = math.sqrt(SIGMA2_W / width)
  for _ in range(depth):
    w = (rng.standard_normal((width, width)) * std).astype(np.float32)
    b = (rng.standard_normal(width) * math.sqrt(SIGMA2_B)).astype(np.float32)
    f = w @ h + b
    h = np.tanh(f)
    j = (1.0 - h * h)[:, None] * (w @ j)
  return np.linalg.svd(j, compute_uv=False)


def contenders(c: dict, max_threads: int | None) -> dict[str, tuple[Callable[[], Any], int]]:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from initjax.measurement import isometry  # pylint: disable=import-outside-toplevel
  from initjax.theory import spectra  # pylint: disable=import-outside-toplevel
  depth, width = c["depth"], c["width"]
  v = spectra.fixed_point_input_variance("tanh", SIGMA2_W, SIGMA2_B)
  spec = isometry.NetworkSpec(input_dim=width, width=width, depth=depth, activation="tanh",
                              bias_variance=SIGMA2_B, batch_size=1)
  key = jax.random.key(0)
  measure = lambda: isometry.measure(key, spec, weight_init="lecun_normal", scales=[SIGMA2_W],
                                     input_variances=[v], svd_layers=[depth],
                                     num_seeds=c["networks"])
  one = isometry._seed_program(spec, "normal", "float32", False)  # pylint: disable=protected-access
  scale = jnp.full(depth + 1, SIGMA2_W / width, jnp.float32)
  mask = jnp.zeros(depth, bool).at[-1].set(True)
  jitted = jax.jit(lambda k: one((k, scale, jnp.float32(math.sqrt(v))), mask))
  loop_keys = jax.random.split(jax.random.key(1), c["loop_networks"])

  def numpy_loop():
    rng = np.random.default_rng(0)
    return [numpy_network(rng, depth, width, math.sqrt(v)) for _ in range(c["loop_networks"])]

  out = {
      "initjax isometry.measure": (measure, c["networks"]),
      "jax.jit per network (jacobian_spectra)": (
          lambda: [jax.device_get(jitted(k)) for k in loop_keys], c["loop_networks"]),
  }
  for k in threads.thread_counts(max_threads):
    out[f"numpy loop float32 ({threads.thread_label(k)})"] = (
        threads.with_threads(k, numpy_loop), c["loop_networks"])
  return out


def run(cfg: dict, log: Callable[[str], None]) -> dict:
  from initjax.measurement import isometry  # pylint: disable=import-outside-toplevel
  c = cfg["isometry"]
  lapack_one_thread = _scipy_openblas_one_thread()
  fns = contenders(c, cfg["max_threads"])
  log(f"isometry depth {c['depth']} width {c['width']}: {', '.join(fns)}")
  timings = timing.interleaved({k: v[0] for k, v in fns.items()}, c["repeats"],
                               timing.thread_twin_budget())
  spec = isometry.NetworkSpec(input_dim=c["width"], width=c["width"], depth=c["depth"])
  flops = isometry.jacobian_flops(spec)
  rows: dict[str, Any] = {name: timing.rate(timings[name], fns[name][1], flops, "networks")
                          for name in fns}
  rows["_workload"] = {**c, "sigma2_w": SIGMA2_W, "sigma2_b": SIGMA2_B,
                       "flops_per_network": flops, "lapack_one_thread": lapack_one_thread}
  return rows
