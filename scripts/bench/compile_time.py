"""Compile time of the propagation and training programs by depth (public API: `jax.jit`'s
`.lower(...).compile()` of `propagation.network_statistics` and `training.train_networks`).

JAX's in-memory caches are cleared before every compilation and the persistent compilation
cache is off in this process, so every figure is a real compilation. Depth is a `lax.scan`, so
a 200-layer program should compile about as fast as a 10-layer one.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


def _timed_compiles(lowered: Callable[[], object], repeats: int) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  times = []
  for _ in range(repeats):
    jax.clear_caches()
    start = time.perf_counter()
    lowered().compile()
    times.append(time.perf_counter() - start)
  return {"median_s": float(np.median(times)), "all_s": times}


def _propagation_program(p: dict, depth: int, batch: int) -> Callable[[], object]:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from initjax.measurement import propagation  # pylint: disable=import-outside-toplevel
  from initjax.nn.initializers import get_initializer  # pylint: disable=import-outside-toplevel
  spec = propagation.NetworkSpec(input_dim=p["input_dim"], width=p["width"], depth=depth,
                                 batch_size=batch)
  he = get_initializer("he_normal")
  one_seed = jax.jit(lambda k: propagation.network_statistics(
      *propagation.network_for_seed(k, spec, he, 1.0, jnp.float32), "relu", log_space=True))
  return lambda: one_seed.lower(jax.random.key(0))


def _training_program(t: dict, d: dict, depth: int) -> Callable[[], object]:
  """`train_networks` for 2 networks of the training section's first width, 10 steps."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from initjax import training
  from initjax.nn import models  # pylint: disable=import-outside-toplevel
  width = next(iter(t["widths"].values()))
  spec = training.TrainSpec(steps=10, batch_size=t["batch"], eval_every=10, stats_every=10,
                            stats_batch_size=min(256, d["n_train"]))
  params = jax.eval_shape(lambda k: training.init_networks(
      jax.random.split(k, 2), "he_normal", input_dim=d["input_dim"], width=width, depth=depth,
      output_dim=d["classes"]), jax.random.key(0))
  f32, i32 = jnp.float32, jnp.int32
  data = {"x_train": jax.ShapeDtypeStruct((d["n_train"], d["input_dim"]), f32),
          "y_train": jax.ShapeDtypeStruct((d["n_train"],), i32),
          "x_test": jax.ShapeDtypeStruct((d["n_test"], d["input_dim"]), f32),
          "y_test": jax.ShapeDtypeStruct((d["n_test"],), i32)}
  keys = jax.random.split(jax.random.key(0), 2)
  return lambda: training.train_networks.lower(models.mlp("relu"), params, keys, jnp.ones((2,)),
                                               data, spec)


def run(cfg: dict, log: Callable[[str], None]) -> dict:
  c = cfg["compile"]
  out: dict = {"propagation": {}, "training": {}}
  for depth in c["depths"]:
    out["propagation"][str(depth)] = _timed_compiles(
        _propagation_program(cfg["propagation"], depth, c["batch"]), c["repeats"])
    out["training"][str(depth)] = _timed_compiles(
        _training_program(cfg["training"], cfg["data"], depth), c["repeats"])
    log(f"compile depth {depth}: propagation {out['propagation'][str(depth)]['median_s']:.2f} s,"
        f" training {out['training'][str(depth)]['median_s']:.2f} s")
  return out
