#!/usr/bin/env python
"""Benchmarks of initjax against plain loops over seeds, with the machine's matmul ceiling.

    python scripts/benchmark.py            # full run (about 15 min on 2 CPU cores)
    python scripts/benchmark.py --quick    # under 5 min on 2 cores
    python scripts/benchmark.py --tiny     # seconds: tiny sizes, for tests (figures meaningless)
    python scripts/benchmark.py --output=path/to/benchmark.json

Prints a table and writes JSON (default ./benchmark.json): the machine, the versions, every
figure (median, min and all repeats of every timing) and a top-level `ratios` object.

Sections:
1. Propagation, the weight-initialization figure's workload: 50 hidden layers of 100 ReLU units,
   100-dimensional inputs, He weights, forward pass plus activation gradients dl/df_k and
   dl/dh_k and the per-layer statistics, at 100 and 1000 inputs per network. Contenders:
   (a) `initjax.propagation.measure` (everything included: keys, weights, inputs, statistics,
       results back on the host);
   (b) a NumPy loop over seeds in the style of the book's notebook (np.random.normal weights,
       forward storing every layer, backward, np.var per layer), float64 and float32, and the same
       loop with NumPy's faster Generator (default_rng) for reference;
   (c) a jax.jit-compiled function called once per seed in a Python loop: init_mlp, trace_mlp and
       jax.grad with respect to zero offsets for dl/df_k and dl/dh_k (as
       initjax.gradients.layer_gradients and initjax.training.layer_statistics do), jnp.var per
       layer; and, for reference, initjax's own per-network program (network_statistics) called
       the same way, which separates the algorithm from the batching over seeds;
   (d) a PyTorch loop over seeds with autograd (when torch is installed);
   (e) the dense float32 matmul ceiling: a jitted 2048 x 2048 product.
2. Training: S networks (depth 30, width 100, minibatch 100, MNIST-1D-shaped random data, SGD with
   momentum) trained for T steps by `initjax.training.train_networks` (vmapped) against the same
   networks trained one after another by `initjax.training.train_network_jit`, and by
   `batch_training.run_networks` with one worker thread per core (as the sweep runs). Runs in
   a subprocess.
3. Compile time of the propagation and training programs at depth 10, 50 and 200 (caches
   cleared before every compilation; never included in a throughput).
4. Peak resident memory of a 10,000-seed propagation run, in a subprocess (its VmHWM, and its
   ru_maxrss, which on Linux also holds the parent's size at fork).

Every comparison runs in one process: the contenders are called once to warm up (compilation
excluded), then round-robin for several repeats; the median is reported, and ratios are ratios of
medians. FLOP convention (stated in the JSON too): per network, forward 2*N*D_in*D_out per layer
(all K+1 layers) plus the backward activation-gradient products dl/dh_k = dl/df_k Omega_k,
2*N*D_in*D_out per layer for k = 1..K (dl/dx is not computed); elementwise work, random numbers
and reductions are not counted. Training: 3x the forward products per network-step (forward,
activation gradients, weight gradients).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

# Sizes of the three modes. Propagation seeds are per repeat; "loop" seeds are for the per-seed
# baselines (NumPy, jit loop, PyTorch), which are slower.
MODES: dict[str, dict[str, Any]] = {
    "full": dict(
        depth=50, width=100, input_dim=100, batch_sizes=(100, 1000),
        seeds={100: 256, 1000: 32}, loop_seeds={100: 16, 1000: 4}, repeats=7,
        matmul_n=2048, matmul_repeats=15,
        train=dict(depth=30, width=100, batch=100, networks=8, steps=200, repeats=3,
                   n_train=4000, n_test=1000, input_dim=40, classes=10),
        compile_depths=(10, 50, 200), compile_batch=100, compile_repeats=3,
        memory=dict(num_seeds=10000, batch_size=100)),
    "quick": dict(
        depth=50, width=100, input_dim=100, batch_sizes=(100, 1000),
        seeds={100: 64, 1000: 8}, loop_seeds={100: 6, 1000: 2}, repeats=5,
        matmul_n=2048, matmul_repeats=10,
        train=dict(depth=30, width=100, batch=100, networks=8, steps=40, repeats=3,
                   n_train=4000, n_test=1000, input_dim=40, classes=10),
        compile_depths=(10, 50, 200), compile_batch=100, compile_repeats=1,
        memory=dict(num_seeds=10000, batch_size=100)),
    "tiny": dict(
        depth=4, width=16, input_dim=16, batch_sizes=(8, 16),
        seeds={8: 8, 16: 8}, loop_seeds={8: 2, 16: 2}, repeats=2,
        matmul_n=128, matmul_repeats=3,
        train=dict(depth=3, width=16, batch=8, networks=2, steps=4, repeats=1,
                   n_train=64, n_test=32, input_dim=8, classes=3),
        compile_depths=(2, 8), compile_batch=8, compile_repeats=1,
        memory=dict(num_seeds=10000, batch_size=8)),
}

FLOP_CONVENTION = (
    "propagation: per network, forward 2*N*D_in*D_out for each of the K+1 layers plus the "
    "backward activation-gradient products dl/dh_k = dl/df_k Omega_k, 2*N*D_in*D_out for "
    "k = 1..K (dl/dx not computed); random numbers, elementwise work and reductions not counted. "
    "training: 3 * 2*B*sum(D_in*D_out) per network-step (forward, activation gradients, weight "
    "gradients). matmul: 2*n^3.")


# ------------------------------------------------------------------------------------------------
# Timing.

def interleaved(contenders: dict[str, Callable[[], Any]], repeats: int,
                exclude: Callable[[dict], set] | None = None) -> dict[str, dict]:
  """Warm-up call of each (its time reported as first_call_s), then `repeats` round-robin calls.

  `exclude(warmups)` may name contenders to leave out of the repeats after the warm-up (a
  configuration so slow on this machine that repeating it would only burn the time budget).
  Returns {name: {"first_call_s", "median_s", "min_s", "all_s", "cpu_over_wall"}}; the last is
  the process CPU time over the wall time of the repeats (2.0 = both of 2 cores busy).
  """
  out = {}
  for name, fn in contenders.items():
    start = time.perf_counter()
    fn()
    out[name] = {"first_call_s": time.perf_counter() - start, "all_s": [], "cpu_s": []}
  dropped = exclude(out) if exclude else set()
  for _ in range(repeats):
    for name, fn in contenders.items():
      if name in dropped:
        continue
      cpu0, start = _cpu_time(), time.perf_counter()
      fn()
      out[name]["all_s"].append(time.perf_counter() - start)
      out[name]["cpu_s"].append(_cpu_time() - cpu0)
  for name, r in out.items():
    if name in dropped:
      r["excluded_after_warmup"] = True
      r["all_s"] = [r["first_call_s"]]
    r["median_s"] = float(np.median(r["all_s"]))
    r["min_s"] = float(np.min(r["all_s"]))
    if r["cpu_s"]:
      r["cpu_over_wall"] = float(np.sum(r["cpu_s"]) / np.sum(r["all_s"]))
    del r["cpu_s"]
  return out


def _cpu_time() -> float:
  ru = resource.getrusage(resource.RUSAGE_SELF)
  return ru.ru_utime + ru.ru_stime


class library_threads:  # pylint: disable=invalid-name
  """Sets NumPy's OpenBLAS and PyTorch intra-op thread counts inside the block (best effort)."""

  def __init__(self, n: int):
    self.n = n
    self.saved = None

  @staticmethod
  def _openblas():
    import ctypes  # pylint: disable=import-outside-toplevel
    import glob  # pylint: disable=import-outside-toplevel
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

  def __enter__(self):
    blas = self._openblas()
    torch = sys.modules.get("torch")
    self.saved = (blas and blas[0](), torch and torch.get_num_threads())
    if blas:
      blas[1](self.n)
    if torch:
      torch.set_num_threads(self.n)
    return self

  def __exit__(self, *exc):
    blas = self._openblas()
    torch = sys.modules.get("torch")
    if blas and self.saved[0]:
      blas[1](self.saved[0])
    if torch and self.saved[1]:
      torch.set_num_threads(self.saved[1])


def with_threads(n: int, fn: Callable[[], Any]) -> Callable[[], Any]:
  def run():
    with library_threads(n):
      return fn()
  return run


def _rate(timing: dict, items: int, flops_per_item: float | None = None) -> dict:
  r = dict(timing)
  r["items_per_call"] = items
  r["items_per_s"] = items / timing["median_s"]
  r["ms_per_item"] = 1e3 * timing["median_s"] / items
  if flops_per_item is not None:
    r["gflops"] = flops_per_item * items / timing["median_s"] / 1e9
  return r


# ------------------------------------------------------------------------------------------------
# Machine and versions.

def machine_info() -> dict:
  info = {"platform": platform.platform(), "python": sys.version.split()[0],
          "processor": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count()}
  try:
    info["cpus_usable"] = len(os.sched_getaffinity(0))
  except AttributeError:
    pass
  try:
    with open("/proc/cpuinfo") as fh:
      for line in fh:
        if line.startswith("model name"):
          info["cpu_model"] = line.split(":", 1)[1].strip()
          break
    with open("/proc/meminfo") as fh:
      info["memory_gb"] = round(int(fh.readline().split()[1]) / 2**20, 1)
  except OSError:
    pass
  try:
    info["load_average_at_start"] = os.getloadavg()
  except OSError:
    pass
  return info


def versions() -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jaxlib  # pylint: disable=import-outside-toplevel
  out = {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "numpy": np.__version__,
         "jax_backend": jax.default_backend(), "jax_devices": [str(d) for d in jax.devices()],
         "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
  try:
    import optax  # pylint: disable=import-outside-toplevel
    out["optax"] = optax.__version__
  except ImportError:
    pass
  try:
    import torch  # pylint: disable=import-outside-toplevel
    out["torch"] = torch.__version__
  except ImportError:
    out["torch"] = None
  try:
    out["initjax_commit"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
        timeout=10).stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    out["initjax_commit"] = None
  return out


# ------------------------------------------------------------------------------------------------
# Propagation contenders.

def propagation_flops(n: int, d_in: int, width: int, depth: int, d_out: int = 1) -> float:
  dims = [(d_in, width)] + [(width, width)] * (depth - 1) + [(width, d_out)]
  forward = sum(2.0 * n * a * b for a, b in dims)
  backward = sum(2.0 * n * a * b for a, b in dims[1:])
  return forward + backward


def _np_var(v):
  return float(np.var(v))


def numpy_network(rng_normal: Callable, n: int, d_in: int, width: int, depth: int,
                  dtype) -> dict:
  """One network in the style of the book's notebook: columns are examples, f_k = Omega_k h_k
  (zero biases), h_{k+1} = ReLU(f_k); least squares with y = 0; per-layer variances."""
  dims = [(width, d_in)] + [(width, width)] * (depth - 1) + [(1, width)]
  omegas = [(rng_normal(size=(o, i)) * math.sqrt(2.0 / i)).astype(dtype, copy=False)
            for o, i in dims]
  x = rng_normal(size=(d_in, n)).astype(dtype, copy=False)
  hs, fs = [x], []
  for k in range(depth + 1):
    fs.append(omegas[k] @ hs[k])
    if k < depth:
      hs.append(np.maximum(fs[k], 0))
  dl_df = [None] * (depth + 1)
  dl_dh = [None] * (depth + 1)
  dl_df[depth] = 2 * fs[depth]
  for k in range(depth, 0, -1):
    dl_dh[k] = omegas[k].T @ dl_df[k]
    dl_df[k - 1] = (fs[k - 1] > 0) * dl_dh[k]
  return {
      "var_f": [_np_var(f) for f in fs],
      "var_h": [_np_var(h) for h in hs[1:]],
      "var_dl_dh": [_np_var(g) for g in dl_dh[1:]],
      "var_dl_df": [_np_var(g) for g in dl_df],
      "var_dl_domega": [float(np.mean(np.mean(g * g, axis=0) * np.mean(h * h, axis=0)))
                        for g, h in zip(dl_df, hs)],
  }


def jax_grad_program(depth: int, width: int, d_in: int, n: int):
  """One seed as a user would write it with jax.grad: init_mlp, trace_mlp with zero offsets,
  jax.grad for dl/df_k and dl/dh_k, jnp.var per layer."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from initjax import networks  # pylint: disable=import-outside-toplevel

  @jax.jit
  def one(key):
    k_p, k_x = jax.random.split(key)
    params = networks.init_mlp(k_p, input_dim=d_in, width=width, depth=depth,
                               weight_init="he_normal")
    x = jax.random.normal(k_x, (n, d_in))
    zeros = jnp.zeros((depth, n, width))
    offsets = {"f": zeros, "h": zeros, "f_out": jnp.zeros((n, 1))}

    def loss(o):
      tr = networks.trace_mlp(params, x, "relu", o)
      return jnp.sum(tr["f_out"] ** 2), tr

    g, tr = jax.grad(loss, has_aux=True)(offsets)
    dfs = jnp.concatenate([g["f"], jnp.pad(g["f_out"], ((0, 0), (0, width - 1)))[None]])
    hs = jnp.concatenate([jnp.pad(x, ((0, 0), (0, max(0, width - d_in))))[None, :, :width],
                          tr["h"]])
    return {"var_f": jnp.concatenate([jnp.var(tr["f"], axis=(1, 2)), jnp.var(tr["f_out"])[None]]),
            "var_h": jnp.var(tr["h"], axis=(1, 2)),
            "var_dl_dh": jnp.var(g["h"], axis=(1, 2)),
            "var_dl_df": jnp.concatenate([jnp.var(g["f"], axis=(1, 2)),
                                          jnp.var(g["f_out"])[None]]),
            "var_dl_domega": jnp.mean(jnp.sum(dfs**2, -1) * jnp.sum(hs**2, -1), axis=1)}
  return one


def torch_loop(num_seeds: int, n: int, d_in: int, width: int, depth: int):
  import torch  # pylint: disable=import-outside-toplevel
  out = []
  for seed in range(num_seeds):
    gen = torch.Generator().manual_seed(seed)
    dims = [(width, d_in)] + [(width, width)] * (depth - 1) + [(1, width)]
    omegas = [torch.randn(o, i, generator=gen) * math.sqrt(2.0 / i) for o, i in dims]
    x = torch.randn(n, d_in, generator=gen)
    f = x @ omegas[0].T
    f.requires_grad_(True)
    fs, hs = [f], []
    for k in range(1, depth + 1):
      h = torch.relu(fs[-1])
      h.retain_grad()
      hs.append(h)
      f = h @ omegas[k].T
      f.retain_grad()
      fs.append(f)
    (fs[-1] ** 2).sum().backward()
    with torch.no_grad():
      out.append({"var_f": [float(v.var(unbiased=False)) for v in fs],
                  "var_h": [float(v.var(unbiased=False)) for v in hs],
                  "var_dl_dh": [float(v.grad.var(unbiased=False)) for v in hs],
                  "var_dl_df": [float(v.grad.var(unbiased=False)) for v in fs]})
  return out


def bench_propagation(cfg: dict, log) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from initjax import propagation  # pylint: disable=import-outside-toplevel
  from initjax.initializers import get_initializer  # pylint: disable=import-outside-toplevel

  depth, width, d_in = cfg["depth"], cfg["width"], cfg["input_dim"]
  try:
    import torch  # pylint: disable=import-outside-toplevel,unused-import
    have_torch = True
  except ImportError:
    have_torch = False
  results = {}
  for n in cfg["batch_sizes"]:
    spec = propagation.NetworkSpec(input_dim=d_in, width=width, depth=depth, batch_size=n)
    seeds, loop_seeds = cfg["seeds"][n], cfg["loop_seeds"][n]
    flops = propagation_flops(n, d_in, width, depth)
    key = jax.random.key(0)
    he = get_initializer("he_normal")
    jit_grad = jax_grad_program(depth, width, d_in, n)
    net_stats = jax.jit(lambda k: propagation.network_statistics(
        *propagation.network_for_seed(k, spec, he, 1.0, jnp.float32), "relu", log_space=True))
    loop_keys = jax.random.split(jax.random.key(1), loop_seeds)

    def jit_loop(fn):
      def run():
        return [jax.device_get(fn(loop_keys[s])) for s in range(loop_seeds)]
      return run

    def numpy_loop(dtype, modern):
      def run():
        out = []
        for s in range(loop_seeds):
          if modern:
            normal = np.random.default_rng(s).normal
          else:
            np.random.seed(s)
            normal = np.random.normal
          out.append(numpy_network(normal, n, d_in, width, depth, dtype))
        return out
      return run

    cores = _usable_cores()
    contenders = {
        "initjax.measure": (lambda: propagation.measure(key, spec, weight_init="he_normal",
                                                        num_seeds=seeds), seeds),
        "numpy loop float64 (notebook, 1 thread)": (
            with_threads(1, numpy_loop(np.float64, False)), loop_seeds),
        "numpy loop float32 (notebook, 1 thread)": (
            with_threads(1, numpy_loop(np.float32, False)), loop_seeds),
        f"numpy loop float32 (notebook, {cores} threads)": (
            with_threads(cores, numpy_loop(np.float32, False)), loop_seeds),
        "numpy loop float32 (default_rng, 1 thread)": (
            with_threads(1, numpy_loop(np.float32, True)), loop_seeds),
        "jax.jit per seed (jax.grad)": (jit_loop(jit_grad), loop_seeds),
        "jax.jit per seed (network_statistics)": (jit_loop(net_stats), loop_seeds),
    }
    if have_torch:
      for threads in sorted({1, cores}):
        contenders[f"torch loop (autograd, {threads} thread{'s' * (threads > 1)})"] = (
            with_threads(threads, lambda: torch_loop(loop_seeds, n, d_in, width, depth)),
            loop_seeds)
    log(f"propagation N={n}: {', '.join(contenders)}")

    def too_slow(warmups):
      # A multi-threaded baseline whose warm-up took over 3x its 1-thread twin's (thread
      # oversubscription on a shared machine) is not repeated: its warm-up time stands.
      out = set()
      for name, r in warmups.items():
        twin = name.rsplit(", ", 1)[0] + ", 1 thread)"
        if name.endswith("threads)") and twin in warmups:
          if r["first_call_s"] > 3 * warmups[twin]["first_call_s"]:
            out.add(name)
      return out

    timings = interleaved({k: v[0] for k, v in contenders.items()}, cfg["repeats"], too_slow)
    results[str(n)] = {name: _rate(timings[name], contenders[name][1], flops)
                       for name in contenders}
    results[str(n)]["_flops_per_network"] = flops
    results[str(n)]["_seed_chunk"] = propagation.default_seed_chunk(spec)
    if not have_torch:
      results[str(n)]["_torch"] = "skipped: torch is not installed"
  return results


def _usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def bench_matmul(cfg: dict) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  m = cfg["matmul_n"]
  a = jax.random.normal(jax.random.key(0), (m, m), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (m, m), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  t = interleaved({"matmul": lambda: jax.block_until_ready(f(a, b))}, cfg["matmul_repeats"])
  r = _rate(t["matmul"], 1, 2.0 * m**3)
  r["n"] = m
  return r


# ------------------------------------------------------------------------------------------------
# Training (runs in a child process: the device count is fixed when JAX starts).

def training_child(cfg: dict) -> dict:
  from initjax import batch_training, models, parallel, training  # pylint: disable=import-outside-toplevel
  n_devices = len(parallel.workers())
  model = models.mlp("relu")
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  t = cfg["train"]
  rng = np.random.default_rng(0)
  data = {"x_train": jnp.asarray(rng.standard_normal((t["n_train"], t["input_dim"])), jnp.float32),
          "y_train": jnp.asarray(rng.integers(0, t["classes"], t["n_train"]), jnp.int32),
          "x_test": jnp.asarray(rng.standard_normal((t["n_test"], t["input_dim"])), jnp.float32),
          "y_test": jnp.asarray(rng.integers(0, t["classes"], t["n_test"]), jnp.int32)}
  s_nets, steps = t["networks"], t["steps"]
  spec = training.TrainSpec(steps=steps, batch_size=t["batch"], eval_every=steps,
                            stats_every=steps, stats_batch_size=min(256, t["n_train"]))
  params = training.init_networks(jax.random.split(jax.random.key(0), s_nets), "he_normal",
                                  input_dim=t["input_dim"], width=t["width"],
                                  depth=t["depth"], output_dim=t["classes"])
  keys = jax.random.split(jax.random.key(1), s_nets)
  lrs = jnp.full((s_nets,), 0.01, jnp.float32)
  dev0 = jax.local_devices()[0]
  data0 = jax.device_put(data, dev0)
  params0, keys0, lrs0 = jax.device_put((params, keys, lrs), dev0)

  def vmapped():
    return jax.block_until_ready(training.train_networks(model, params0, keys0, lrs0, data0, spec))

  def sequential():
    return [jax.block_until_ready(training.train_network_jit(
        model, jax.tree.map(lambda a, i=i: a[i], params0), keys0[i], lrs0[i], data0, spec))
            for i in range(s_nets)]

  def all_cores():
    return batch_training.run_networks(model, params, keys, lrs, data, spec)

  contenders = {"train_networks (vmapped, 1 device)": vmapped,
                "train_network_jit one after another": sequential}
  if n_devices > 1:
    contenders[f"run_networks ({n_devices} workers, one per core)"] = all_cores
  timings = interleaved(contenders, t["repeats"])
  dims = ([(t["input_dim"], t["width"])] + [(t["width"], t["width"])] * (t["depth"] - 1)
          + [(t["width"], t["classes"])])
  flops = 3 * sum(2.0 * t["batch"] * a * b for a, b in dims)
  out = {name: _rate(timings[name], s_nets * (steps + 1), flops) for name in contenders}
  for r in out.values():
    r["network_steps_per_s"] = r.pop("items_per_s")
  out["_devices"] = n_devices
  out["_config"] = dict(t, optimizer=spec.optimizer, learning_rate=0.01)
  return out


# ------------------------------------------------------------------------------------------------
# Compile time.

def bench_compile(cfg: dict, log) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from initjax import models, propagation, training  # pylint: disable=import-outside-toplevel
  from initjax.initializers import get_initializer  # pylint: disable=import-outside-toplevel
  t = cfg["train"]
  out = {"propagation": {}, "training": {}}
  for depth in cfg["compile_depths"]:
    spec = propagation.NetworkSpec(input_dim=cfg["input_dim"], width=cfg["width"], depth=depth,
                                   batch_size=cfg["compile_batch"])
    he = get_initializer("he_normal")
    one_seed = jax.jit(lambda k, spec=spec: propagation.network_statistics(
        *propagation.network_for_seed(k, spec, he, 1.0, jnp.float32), "relu", log_space=True))
    times = []
    for _ in range(cfg["compile_repeats"]):
      jax.clear_caches()
      start = time.perf_counter()
      one_seed.lower(jax.random.key(0)).compile()
      times.append(time.perf_counter() - start)
    out["propagation"][str(depth)] = {"median_s": float(np.median(times)), "all_s": times}
    tspec = training.TrainSpec(steps=10, batch_size=t["batch"], eval_every=10, stats_every=10,
                               stats_batch_size=min(256, t["n_train"]))
    params = jax.eval_shape(lambda k: training.init_networks(
        jax.random.split(k, 2), "he_normal", input_dim=t["input_dim"], width=t["width"],
        depth=depth, output_dim=t["classes"]), jax.random.key(0))
    data = {"x_train": jax.ShapeDtypeStruct((t["n_train"], t["input_dim"]), jnp.float32),
            "y_train": jax.ShapeDtypeStruct((t["n_train"],), jnp.int32),
            "x_test": jax.ShapeDtypeStruct((t["n_test"], t["input_dim"]), jnp.float32),
            "y_test": jax.ShapeDtypeStruct((t["n_test"],), jnp.int32)}
    times = []
    for _ in range(cfg["compile_repeats"]):
      jax.clear_caches()
      start = time.perf_counter()
      training.train_networks.lower(models.mlp("relu"), params,
                                    jax.random.split(jax.random.key(0), 2),
                                    jnp.ones((2,)), data, tspec).compile()
      times.append(time.perf_counter() - start)
    out["training"][str(depth)] = {"median_s": float(np.median(times)), "all_s": times}
    log(f"compile depth {depth}: propagation {out['propagation'][str(depth)]['median_s']:.2f} s,"
        f" training {out['training'][str(depth)]['median_s']:.2f} s")
  return out


# ------------------------------------------------------------------------------------------------
# Memory (child process).

def memory_child(cfg: dict) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  from initjax import propagation  # pylint: disable=import-outside-toplevel
  m = cfg["memory"]
  spec = propagation.NetworkSpec(input_dim=cfg["input_dim"], width=cfg["width"],
                                 depth=cfg["depth"], batch_size=m["batch_size"])
  hwm_before = _vm_hwm_gb()
  start = time.perf_counter()
  out = propagation.measure(jax.random.key(0), spec, weight_init="he_normal",
                            num_seeds=m["num_seeds"])
  elapsed = time.perf_counter() - start
  finite = bool(all(np.isfinite(v).all() for v in out.values()))
  return {"num_seeds": m["num_seeds"], "batch_size": m["batch_size"], "depth": cfg["depth"],
          "width": cfg["width"], "seed_chunk": propagation.default_seed_chunk(spec),
          "devices": jax.local_device_count(),
          "peak_rss_gb": _vm_hwm_gb(), "peak_rss_gb_after_imports": hwm_before,
          "ru_maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
          "ru_maxrss_note": ("Linux keeps the parent's resident size at fork in the child's "
                             "ru_maxrss; peak_rss_gb is the child's own high-water mark "
                             "(VmHWM of /proc/self/status, reset by exec)"),
          "wall_s_including_compile": elapsed, "all_finite": finite}


def _vm_hwm_gb() -> float:
  """Peak resident memory of this process image: VmHWM (falls back to ru_maxrss)."""
  try:
    with open("/proc/self/status") as fh:
      for line in fh:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 2**20
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_child(kind: str, mode: str, timeout: float) -> dict:
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--_child={kind}",
                         f"--_mode={mode}"], capture_output=True, text=True, timeout=timeout,
                        cwd=REPO)
  if proc.returncode != 0:
    return {"error": f"child {kind} failed (exit {proc.returncode}): {proc.stderr[-2000:]}"}
  return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# Report.

def _ratio(a, b):
  return None if a is None or b is None or not b else float(a / b)


def compute_ratios(res: dict, cfg: dict) -> dict:
  prop = res.get("propagation", {})
  n_small, n_large = (str(n) for n in cfg["batch_sizes"])
  small, large = prop.get(n_small, {}), prop.get(n_large, {})

  def rate(d, name):
    return d.get(name, {}).get("items_per_s")

  ours_small, ours_large = rate(small, "initjax.measure"), rate(large, "initjax.measure")

  def best(d, prefix):
    rates = [v["items_per_s"] for k, v in d.items()
             if k.startswith(prefix) and not k.startswith("_")]
    return max(rates) if rates else None

  numpy_best = best(small, "numpy loop float64 (notebook") or None
  numpy_best = max(filter(None, [numpy_best, best(small, "numpy loop float32 (notebook")]),
                   default=None)
  numpy_best_large = max(filter(None, [best(large, "numpy loop float64 (notebook"),
                                       best(large, "numpy loop float32 (notebook")]),
                         default=None)
  # The ceiling is measured before and after the propagation runs (the machine may be shared):
  # the higher of the two, so that the fraction is not flattered by a slow ceiling measurement.
  mm = res.get("matmul", {})
  peak = max((v for v in (mm.get("gflops"), mm.get("gflops_after_propagation")) if v),
             default=None)
  train = res.get("training", {})
  seq = train.get("train_network_jit one after another", {}).get("network_steps_per_s")
  vm = train.get("train_networks (vmapped, 1 device)", {}).get("network_steps_per_s")
  cores = next((v.get("network_steps_per_s") for k, v in train.items()
                if k.startswith("run_networks")), None)
  comp = res.get("compile", {})
  d_lo, d_hi = (str(d) for d in (cfg["compile_depths"][0], cfg["compile_depths"][-1]))

  def comp_ratio(section):
    c = comp.get(section, {})
    return _ratio(c.get(d_hi, {}).get("median_s"), c.get(d_lo, {}).get("median_s"))

  return {
      "propagation_vs_numpy_loop": _ratio(ours_small, numpy_best),
      "propagation_vs_numpy_loop_default_rng": _ratio(
          ours_small, best(small, "numpy loop float32 (default_rng")),
      "propagation_vs_jit_loop": _ratio(ours_small, rate(small, "jax.jit per seed (jax.grad)")),
      "propagation_vs_jit_loop_network_statistics": _ratio(
          ours_small, rate(small, "jax.jit per seed (network_statistics)")),
      "propagation_vs_torch_loop": _ratio(ours_small, best(small, "torch loop")),
      "propagation_large_vs_numpy_loop": _ratio(ours_large, numpy_best_large),
      "propagation_large_vs_jit_loop": _ratio(ours_large,
                                              rate(large, "jax.jit per seed (jax.grad)")),
      "propagation_fraction_of_matmul_peak": _ratio(
          large.get("initjax.measure", {}).get("gflops"), peak),
      "training_vs_sequential": _ratio(vm, seq),
      "training_all_cores_vs_sequential": _ratio(cores, seq),
      "compile_time_200_over_10_layers": comp_ratio("propagation"),
      "compile_time_200_over_10_layers_training": comp_ratio("training"),
      "peak_rss_gb_10000_seeds": res.get("memory", {}).get("peak_rss_gb"),
  }


TARGETS = {
    "propagation_vs_numpy_loop": (">=", 4.0),
    "propagation_vs_jit_loop": (">=", 2.0),
    "propagation_fraction_of_matmul_peak": (">=", 0.5),
    "training_vs_sequential": (">=", 3.0),
    "compile_time_200_over_10_layers": ("<=", 1.5),
    "compile_time_200_over_10_layers_training": ("<=", 1.5),
    "peak_rss_gb_10000_seeds": ("<", 4.0),
}


def print_table(res: dict, cfg: dict) -> None:
  print()
  print(f"initjax benchmark ({res['mode']}): {res['machine'].get('cpu_model', '?')}, "
        f"{res['machine'].get('cpus_usable', res['machine'].get('cpu_count'))} cores, "
        f"jax {res['versions']['jax']}, load average at start "
        f"{res['machine'].get('load_average_at_start')}")
  mm = res.get("matmul", {})
  if mm:
    print(f"dense float32 matmul {mm['n']}^2 (jit): {mm['gflops']:.1f} GFLOP/s (ceiling)")
  for n, rows in res.get("propagation", {}).items():
    print(f"\nPropagation, {cfg['depth']} x {cfg['width']} ReLU, N={n} inputs/network "
          f"({rows['_flops_per_network'] / 1e9:.3f} GFLOP/network)")
    print(f"  {'contender':44s} {'ms/net':>9s} {'nets/s':>8s} {'GFLOP/s':>7s} {'initjax x':>9s}"
          f" {'cpu/wall':>8s} {'1st call':>8s}")
    ours = rows["initjax.measure"]["items_per_s"]
    for name, r in rows.items():
      if name.startswith("_"):
        continue
      note = " (warm-up only: >3x its 1-thread twin)" if r.get("excluded_after_warmup") else ""
      print(f"  {name:44s} {r['ms_per_item']:9.2f} {r['items_per_s']:8.1f} {r['gflops']:7.1f} "
            f"{ours / r['items_per_s']:9.2f} {r.get('cpu_over_wall', float('nan')):8.2f} "
            f"{r['first_call_s']:7.2f}s{note}")
    if "_torch" in rows:
      print(f"  torch: {rows['_torch']}")
  tr = res.get("training", {})
  if tr and "error" not in tr:
    c = tr["_config"]
    print(f"\nTraining, depth {c['depth']} width {c['width']} minibatch {c['batch']}, "
          f"{c['networks']} networks x {c['steps']} steps ({tr['_devices']} XLA devices)")
    seq = tr["train_network_jit one after another"]["network_steps_per_s"]
    for name, r in tr.items():
      if not name.startswith("_"):
        print(f"  {name:42s} {r['network_steps_per_s']:9.1f} net-steps/s {r['gflops']:7.1f} "
              f"GFLOP/s  x{r['network_steps_per_s'] / seq:5.2f} vs sequential")
  elif tr:
    print(f"\nTraining: {tr['error'][:300]}")
  comp = res.get("compile", {})
  if comp:
    print("\nCompile time (s) by depth:   " + "  ".join(f"{d:>6s}" for d in comp["propagation"]))
    for section in ("propagation", "training"):
      print(f"  {section:26s} " + "  ".join(f"{v['median_s']:6.2f}"
                                             for v in comp[section].values()))
  mem = res.get("memory", {})
  if mem and "error" not in mem:
    print(f"\nMemory: {mem['num_seeds']} seeds (N={mem['batch_size']}, chunk {mem['seed_chunk']},"
          f" {mem['devices']} devices): peak RSS {mem['peak_rss_gb']:.2f} GB "
          f"({mem['peak_rss_gb_after_imports']:.2f} GB after imports), "
          f"{mem['wall_s_including_compile']:.1f} s including compile")
  elif mem:
    print(f"\nMemory: {mem['error'][:300]}")
  print("\nRatios (target):")
  for k, v in res["ratios"].items():
    target = TARGETS.get(k)
    tgt = f"{target[0]} {target[1]}" if target else ""
    met = ""
    if target and v is not None:
      ok = {">=": v >= target[1], "<=": v <= target[1], "<": v < target[1]}[target[0]]
      met = "met" if ok else "MISSED"
    print(f"  {k:48s} {('%.3f' % v) if v is not None else 'n/a':>8s}  {tgt:8s} {met}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="smaller run, under 5 min")
  parser.add_argument("--tiny", action="store_true", help="tiny sizes (for tests)")
  parser.add_argument("--output", default="benchmark.json", help="JSON output path")
  parser.add_argument("--skip", default="", help="comma-separated sections to skip: "
                      "propagation,matmul,training,compile,memory")
  parser.add_argument("--_child", default="", help=argparse.SUPPRESS)
  parser.add_argument("--_mode", default="full", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  mode = "tiny" if args.tiny else "quick" if args.quick else "full"
  if args._child:
    cfg = MODES[args._mode]
    _setup_jax()
    result = {"training": training_child, "memory": memory_child}[args._child](cfg)
    print(json.dumps(result))
    return 0
  cfg = MODES[mode]
  skip = {s for s in args.skip.split(",") if s}
  start = time.perf_counter()

  def log(msg):
    print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

  _setup_jax()
  res: dict[str, Any] = {"mode": mode, "machine": machine_info(), "versions": versions(),
                         "config": {k: (v if not isinstance(v, dict) else
                                        {str(a): b for a, b in v.items()})
                                    for k, v in cfg.items()},
                         "flop_convention": FLOP_CONVENTION,
                         "method": ("same process per comparison; one warm-up call excluded "
                                    "(first_call_s, includes compilation); round-robin repeats; "
                                    "medians; ratios of medians")}
  if "matmul" not in skip:
    log("matmul ceiling")
    res["matmul"] = bench_matmul(cfg)
  if "propagation" not in skip:
    res["propagation"] = bench_propagation(cfg, log)
    if "matmul" not in skip:  # the ceiling again, after: the machine is shared
      res["matmul_after"] = bench_matmul(cfg)
      res["matmul"]["gflops_after_propagation"] = res["matmul_after"]["gflops"]
  if "training" not in skip:
    log("training (child process)")
    res["training"] = run_child("training", mode, timeout=3600)
  if "compile" not in skip:
    log("compile times")
    res["compile"] = bench_compile(cfg, log)
  if "memory" not in skip:
    log("memory (child process)")
    res["memory"] = run_child("memory", mode, timeout=3600)
  res["ratios"] = compute_ratios(res, cfg)
  res["targets"] = {k: f"{op} {v}" for k, (op, v) in TARGETS.items()}
  res["total_wall_s"] = time.perf_counter() - start
  print_table(res, cfg)
  with open(args.output, "w") as fh:
    json.dump(res, fh, indent=1, default=float)
  print(f"\nwrote {args.output} ({res['total_wall_s']:.0f} s)")
  return 0


def _setup_jax() -> None:
  """No persistent compilation cache (compile times must be real compilations)."""
  import jax  # pylint: disable=import-outside-toplevel
  try:
    jax.config.update("jax_enable_compilation_cache", False)
  except (AttributeError, KeyError):
    pass


if __name__ == "__main__":
  sys.exit(main())
