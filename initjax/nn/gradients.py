"""Exact per-layer gradients of the book's least-squares loss.

`layer_gradients` gets them from `jax.grad`; `backprop_reference` is the book's hand-written
backward pass (the backprop summary, slides eq. 7.13 / book eq. 7.25), kept as a readable
reference that the tests hold `jax.grad` against:

    dl/dbeta_k   = dl/df_k
    dl/dOmega_k  = dl/df_k h_k^T
    dl/df_{k-1}  = a'[f_{k-1}] * (Omega_k^T dl/df_k)          (ReLU: a' = I[f_{k-1} > 0])
    dl/dOmega_0  = dl/df_0 x^T

For a batch the loss is summed over examples, so dl/dOmega_k sums dl/df_k,i h_k,i^T over i.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from initjax.nn.activations import get_activation, get_activation_derivative
from initjax.nn.networks import Params, least_squares_loss, trace_mlp


def layer_gradients(params: Params, x_NxD: jax.Array, y_NxO: jax.Array,
                    activation: str = "relu") -> dict:
  """dl/df_k, dl/dh_k and dl/dOmega_k, dl/dbeta_k from one `jax.grad`.

  The derivatives with respect to the activations come from zero offsets added to every f_k and
  h_k in `trace_mlp`: the gradient at offset zero is exactly dl/df_k (dl/dh_k).

  Returns:
    {"loss": scalar, "dl_df": (K, N, D_h) for f_0..f_{K-1}, "dl_df_out": (N, D_out) for f_K,
     "dl_dh": (K, N, D_h) for h_1..h_K, "dl_dparams": a pytree like `params`
     (dl/dOmega_k, dl/dbeta_k)}.
  """
  depth = params["omega_hidden"].shape[0] + 1
  n, width = x_NxD.shape[0], params["omega_0"].shape[0]
  zeros = jnp.zeros((depth, n, width), x_NxD.dtype)
  offsets = {"f": zeros, "h": zeros,
             "f_out": jnp.zeros((n, params["omega_out"].shape[0]), x_NxD.dtype)}

  def loss_fn(p, o):
    return least_squares_loss(trace_mlp(p, x_NxD, activation, o)["f_out"], y_NxO)

  loss, (g_params, g_off) = jax.value_and_grad(loss_fn, argnums=(0, 1))(params, offsets)
  return {"loss": loss, "dl_df": g_off["f"], "dl_df_out": g_off["f_out"],
          "dl_dh": g_off["h"], "dl_dparams": g_params}


def backprop_reference(params: Params, x_NxD: jax.Array, y_NxO: jax.Array,
                       activation: str = "relu") -> dict:
  """The book's backward pass written out layer by layer (a Python loop; for reference only).

  Same return structure as `layer_gradients`.
  """
  a = get_activation(activation)
  a_prime = get_activation_derivative(activation)
  omegas = [params["omega_0"]] + list(params["omega_hidden"]) + [params["omega_out"]]
  betas = [params["beta_0"]] + list(params["beta_hidden"]) + [params["beta_out"]]
  depth = len(omegas) - 1  # K

  # Forward pass, storing f_k and h_k (h[0] is the input x, so h[k] is the book's h_k).
  h = [x_NxD]
  f = []
  for k in range(depth + 1):
    f.append(h[k] @ omegas[k].T + betas[k])
    if k < depth:
      h.append(a(f[k]))
  loss = least_squares_loss(f[depth], y_NxO)

  # Backward pass.
  dl_df = [None] * (depth + 1)
  dl_dh = [None] * (depth + 1)
  dl_domega = [None] * (depth + 1)
  dl_df[depth] = 2.0 * (f[depth] - y_NxO)
  for k in range(depth, 0, -1):
    dl_domega[k] = dl_df[k].T @ h[k]               # sum_i dl/df_k,i h_k,i^T
    dl_dh[k] = dl_df[k] @ omegas[k]                 # Omega_k^T dl/df_k, per example (rows)
    dl_df[k - 1] = a_prime(f[k - 1]) * dl_dh[k]
  dl_domega[0] = dl_df[0].T @ x_NxD
  dl_dbeta = [g.sum(axis=0) for g in dl_df]
  return {
      "loss": loss,
      "dl_df": jnp.stack(dl_df[:depth]),
      "dl_df_out": dl_df[depth],
      "dl_dh": jnp.stack(dl_dh[1:]),
      "dl_dparams": {
          "omega_0": dl_domega[0], "beta_0": dl_dbeta[0],
          "omega_hidden": (jnp.stack(dl_domega[1:depth]) if depth > 1
                           else jnp.zeros_like(params["omega_hidden"])),
          "beta_hidden": (jnp.stack(dl_dbeta[1:depth]) if depth > 1
                          else jnp.zeros_like(params["beta_hidden"])),
          "omega_out": dl_domega[depth], "beta_out": dl_dbeta[depth],
      },
  }
