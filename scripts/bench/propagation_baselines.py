"""The loops people write instead of `initjax.propagation.measure`, one network at a time.

  * `numpy_network`: the book's notebook style (columns are examples, f_k = Omega_k h_k, zero
    biases, ReLU, least squares against y = 0, np.var per layer);
  * `jax_grad_program`: one seed as a JAX user would write it: init_mlp, trace_mlp with zero
    offsets, jax.grad for dl/df_k and dl/dh_k, jnp.var per layer, jitted and called per seed;
  * `torch_loop`: the same with PyTorch autograd (retain_grad on every layer).

FLOP convention (`propagation_flops`): per network, forward 2 N D_in D_out for each of the K+1
layers plus the backward activation-gradient products dl/dh_k = dl/df_k Omega_k for k = 1..K
(dl/dx is not computed); random numbers, elementwise work and reductions are not counted.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np


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

  from initjax.nn import networks  # pylint: disable=import-outside-toplevel

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

