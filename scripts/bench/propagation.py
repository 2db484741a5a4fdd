"""Propagation: the weight-initialization figure's workload, initjax against per-seed loops.

50 hidden layers of 100 ReLU units, 100-dimensional inputs, He weights, forward pass plus the
activation gradients dl/df_k, dl/dh_k and the per-layer statistics, at 100 and 1000 inputs per
network. Contenders (`bench.propagation_baselines` holds the loops):
  (a) `initjax.propagation.measure`, everything included: keys, weights, inputs, statistics,
      results back on the host;
  (b) a NumPy loop over seeds in the book's notebook style, float64 and float32 (1 thread and
      one per core), and with NumPy's Generator (default_rng) for reference;
  (c) a jax.jit-compiled function called once per seed (jax.grad); and, for reference,
      initjax's own per-network program (`network_statistics`) called the same way, which
      separates the algorithm from the batching over seeds;
  (d) a PyTorch loop over seeds with autograd, 1 thread and one per core (when installed).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from bench import propagation_baselines as baselines
from bench import threads, timing, torch_peers


def _numpy_loop(seeds: int, n: int, p: dict, dtype, modern: bool) -> Callable[[], list]:
  def run():
    out = []
    for s in range(seeds):
      if modern:
        normal = np.random.default_rng(s).normal
      else:
        np.random.seed(s)
        normal = np.random.normal
      out.append(baselines.numpy_network(normal, n, p["input_dim"], p["width"], p["depth"],
                                         dtype))
    return out
  return run


def contenders(p: dict, n: int, max_threads: int | None = None
               ) -> dict[str, tuple[Callable[[], Any], int]]:
  """name -> (callable, networks per call) at N = n inputs per network."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from initjax.measurement import propagation  # pylint: disable=import-outside-toplevel
  from initjax.nn.initializers import get_initializer  # pylint: disable=import-outside-toplevel
  depth, width, d_in = p["depth"], p["width"], p["input_dim"]
  spec = propagation.NetworkSpec(input_dim=d_in, width=width, depth=depth, batch_size=n)
  seeds, loop_seeds = p["seeds"][str(n)], p["loop_seeds"][str(n)]
  key, he = jax.random.key(0), get_initializer("he_normal")
  jit_grad = baselines.jax_grad_program(depth, width, d_in, n)
  net_stats = jax.jit(lambda k: propagation.network_statistics(
      *propagation.network_for_seed(k, spec, he, 1.0, jnp.float32), "relu", log_space=True))
  loop_keys = jax.random.split(jax.random.key(1), loop_seeds)

  def jit_loop(fn):
    return lambda: [jax.device_get(fn(loop_keys[s])) for s in range(loop_seeds)]

  counts = threads.thread_counts(max_threads)
  out = {
      "initjax.measure": (lambda: propagation.measure(key, spec, weight_init="he_normal",
                                                      num_seeds=seeds), seeds),
      "numpy loop float64 (notebook, 1 thread)": (
          threads.with_threads(1, _numpy_loop(loop_seeds, n, p, np.float64, False)), loop_seeds),
      "numpy loop float32 (notebook, 1 thread)": (
          threads.with_threads(1, _numpy_loop(loop_seeds, n, p, np.float32, False)), loop_seeds),
      "numpy loop float32 (default_rng, 1 thread)": (
          threads.with_threads(1, _numpy_loop(loop_seeds, n, p, np.float32, True)), loop_seeds),
      "jax.jit per seed (jax.grad)": (jit_loop(jit_grad), loop_seeds),
      "jax.jit per seed (network_statistics)": (jit_loop(net_stats), loop_seeds),
  }
  if counts[-1] > 1:
    out[f"numpy loop float32 (notebook, {threads.thread_label(counts[-1])})"] = (
        threads.with_threads(counts[-1], _numpy_loop(loop_seeds, n, p, np.float32, False)),
        loop_seeds)
  if torch_peers.missing() is None:
    for k in counts:
      out[f"torch loop (autograd, {threads.thread_label(k)})"] = (
          threads.with_threads(k, lambda: baselines.torch_loop(loop_seeds, n, d_in, width,
                                                               depth)), loop_seeds)
  return out


def run(cfg: dict, log: Callable[[str], None]) -> dict:
  from initjax.measurement import propagation  # pylint: disable=import-outside-toplevel
  p = cfg["propagation"]
  results = {}
  for n in p["batch_sizes"]:
    spec = propagation.NetworkSpec(input_dim=p["input_dim"], width=p["width"], depth=p["depth"],
                                   batch_size=n)
    flops = baselines.propagation_flops(n, p["input_dim"], p["width"], p["depth"])
    fns = contenders(p, n, cfg["max_threads"])
    log(f"propagation N={n}: {', '.join(fns)}")
    timings = timing.interleaved({k: v[0] for k, v in fns.items()}, p["repeats"],
                                 timing.thread_twin_budget())
    rows: dict[str, Any] = {name: timing.rate(timings[name], fns[name][1], flops)
                            for name in fns}
    rows["_flops_per_network"] = flops
    rows["_seed_chunk"] = propagation.default_seed_chunk(spec)
    rows["_torch"] = torch_peers.missing() or "measured"
    results[str(n)] = rows
  return results
