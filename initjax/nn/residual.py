"""A residual MLP of pre-activation blocks.

    h_0     = Omega_in x + beta_in                      (D_h units; no activation)
    h_{k+1} = h_k + alpha_k (Omega_k a[h_k] + beta_k)   k = 0..K-1   (K blocks)
    f_out   = Omega_out a[h_K] + beta_out

Parameters (a pytree; weights in the book's (out, in) layout, drawn with the Flax kernel shape
(in, out) so that fans come out right, as `initjax.networks`):

    omega_in (D_h, D_in), beta_in (D_h,), omega (K, D_h, D_h), beta (K, D_h) (stacked, run with
    `lax.scan`), omega_out (D_out, D_h), beta_out (D_out,), and alpha (K,) for SkipInit.

The branch scale alpha (`BRANCH_SCALES`): "one" (alpha = 1, the plain ResNet), "invsqrt"
(alpha = 1/sqrt(K), which keeps the growth bounded), or "skipinit" (De & Smith 2020: a learnable
alpha_k per block, initialized at 0, so the network is the identity map at initialization).

The mean-field variance recursion of this network, `predict_resmlp`, is in
`initjax.theory.residual`.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from initjax.nn import activations
from initjax.nn.networks import _resolve, _weight, _zeros

BRANCH_SCALES = ("one", "invsqrt", "skipinit")
Params = dict[str, jax.Array]


def branch_scale(name: str, depth: int) -> float:
  """alpha at initialization: 1, 1/sqrt(depth), or 0 (SkipInit)."""
  if name not in BRANCH_SCALES:
    raise ValueError(f"Unknown branch scale {name!r}; valid choices: {', '.join(BRANCH_SCALES)}")
  return {"one": 1.0, "invsqrt": 1.0 / math.sqrt(depth), "skipinit": 0.0}[name]


def init_resmlp(key: jax.Array, *, input_dim: int, width: int, depth: int, output_dim: int = 1,
                weight_init: str | Callable = "he_normal", bias_init: str | Callable | None = None,
                scale: str = "one", dtype: Any = jnp.float32) -> Params:
  """A residual MLP with `depth` = K blocks of `width` = D_h units (see the module docstring)."""
  for name, value in (("input_dim", input_dim), ("width", width), ("depth", depth),
                      ("output_dim", output_dim)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
  branch_scale(scale, depth)
  w_init, b_init = _resolve(weight_init, None), _resolve(bias_init, _zeros)
  k_in, k_w, k_out, k_bin, k_b, k_bout = jax.random.split(key, 6)
  params = {
      "omega_in": _weight(w_init, k_in, input_dim, width, dtype),
      "beta_in": b_init(k_bin, (width,), dtype),
      "omega": jax.vmap(lambda k: _weight(w_init, k, width, width, dtype))(
          jax.random.split(k_w, depth)),
      "beta": jax.vmap(lambda k: b_init(k, (width,), dtype))(jax.random.split(k_b, depth)),
      "omega_out": _weight(w_init, k_out, width, output_dim, dtype),
      "beta_out": b_init(k_bout, (output_dim,), dtype),
  }
  if scale == "skipinit":
    params["alpha"] = jnp.zeros((depth,), dtype)
  return params


def trace_resmlp(params: Params, x_NxD: jax.Array, activation: str = "relu", scale: str = "one",
                 offsets: dict[str, jax.Array] | None = None) -> dict[str, jax.Array]:
  """Runs the network; returns {"h": h_0..h_K stacked (K+1, N, D_h), "f_out": (N, D_out)}.

  `offsets` {"h": (K+1, N, D_h), "f_out": (N, D_out)} are added to every h_k and to f_out where
  they are computed (zero in use): their gradients are exactly dl/dh_k and dl/df_out.
  """
  a = activations.get(activation).fn
  depth, width = params["omega"].shape[0], params["omega"].shape[1]
  if offsets is None:
    offsets = {"h": jnp.zeros((depth + 1, x_NxD.shape[0], width), x_NxD.dtype),
               "f_out": jnp.zeros((x_NxD.shape[0], params["omega_out"].shape[0]), x_NxD.dtype)}
  h0 = x_NxD @ params["omega_in"].T + params["beta_in"] + offsets["h"][0]
  alphas = (params["alpha"] if "alpha" in params
            else jnp.full((depth,), branch_scale(scale, depth), h0.dtype))

  def block(h, xs):
    omega, beta, alpha, dh = xs
    h_next = h + alpha * (a(h) @ omega.T + beta) + dh
    return h_next, h_next

  h_K, h_rest = jax.lax.scan(block, h0, (params["omega"], params["beta"], alphas,
                                         offsets["h"][1:]))
  f_out = a(h_K) @ params["omega_out"].T + params["beta_out"] + offsets["f_out"]
  return {"h": jnp.concatenate([h0[None], h_rest]), "f_out": f_out}


def apply_resmlp(params: Params, x_NxD: jax.Array, activation: str = "relu",
                 scale: str = "one") -> jax.Array:
  """The network output f_out (N, D_out)."""
  return trace_resmlp(params, x_NxD, activation, scale)["f_out"]


def resmlp_layer_statistics(params: Params, x_NxD: jax.Array, y: jax.Array, loss_fn,
                            activation: str = "relu", scale: str = "one"
                            ) -> dict[str, jax.Array]:
  """Var[h_k] and Var[dl/dh_k] (k = 0..K), each pooled over units and examples, and the loss,
  with exact gradients (zero offsets, `jax.grad`)."""
  depth, width = params["omega"].shape[0], params["omega"].shape[1]
  offsets = {"h": jnp.zeros((depth + 1, x_NxD.shape[0], width), x_NxD.dtype),
             "f_out": jnp.zeros((x_NxD.shape[0], params["omega_out"].shape[0]), x_NxD.dtype)}

  def loss_of(o):
    trace = trace_resmlp(params, x_NxD, activation, scale, o)
    return loss_fn(trace["f_out"], y), trace["h"]

  (loss, h), g = jax.value_and_grad(loss_of, has_aux=True)(offsets)
  return {"var_h": jnp.var(h, axis=(1, 2)), "var_dl_dh": jnp.var(g["h"], axis=(1, 2)),
          "loss": loss}
