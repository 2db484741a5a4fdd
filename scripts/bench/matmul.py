"""The dense float32 matmul ceiling of the default JAX device: one jitted n x n product.

The fractions of peak in the ratios divide by this measured rate (the higher of the
measurements taken in a run, so that a slow ceiling on a shared machine flatters nothing). On an
accelerator n is larger (a 2048^2 product does not fill a GPU), and JAX's default float32
matmul precision applies, as it does to the training and propagation programs.
"""
from __future__ import annotations

from bench import timing


def run(cfg: dict) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  m = cfg["matmul"]
  n = m["n"] if jax.default_backend() == "cpu" else m["n_accelerator"]
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  product = jax.jit(lambda a, b: a @ b)
  t = timing.interleaved({"matmul": lambda: jax.block_until_ready(product(a, b))}, m["repeats"])
  r = timing.rate(t["matmul"], 1, 2.0 * n**3)
  r["n"] = n
  r["device"] = str(jax.devices()[0])
  return r
