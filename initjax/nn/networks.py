"""Fully connected networks as pure functions over plain pytrees, in the book's notation.

    f_0 = beta_0 + Omega_0 x
    h_k = a[f_{k-1}]                    k = 1..K      (K hidden layers)
    f_k = beta_k + Omega_k h_k          k = 1..K      (f_K is the network output)

Parameters are a dict of arrays (a pytree):

    omega_0       (D_h, D_in)      beta_0       (D_h,)
    omega_hidden  (K-1, D_h, D_h)  beta_hidden  (K-1, D_h)    Omega_1..Omega_{K-1}, stacked
    omega_out     (D_out, D_h)     beta_out     (D_out,)       Omega_K, beta_K

Weights follow the book's (out, in) layout, f = Omega h. Hidden layers of one width are stacked
and run with `lax.scan`, so the compiled program does not grow with depth. Inputs are batches of
rows: x has shape (N, D_in) and every f_k, h_k has shape (N, D).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from initjax.nn.activations import check_activation, get_activation

Params = dict[str, jax.Array]
Initializer = Callable[..., jax.Array]


def _zeros(key, shape, dtype=jnp.float32):
  del key
  return jnp.zeros(shape, dtype)


def _resolve(init: str | Initializer | None, default: Initializer) -> Initializer:
  if init is None:
    return default
  if isinstance(init, str):
    from initjax.nn.initializers import get_initializer  # pylint: disable=import-outside-toplevel
    return get_initializer(init)
  if not callable(init):
    raise ValueError(f"An initializer must be a registered name or init(key, shape, dtype); got {init!r}")
  return init


def _check_dims(input_dim: int, width: int, depth: int, output_dim: int) -> None:
  for name, value in (("input_dim", input_dim), ("width", width), ("depth", depth),
                      ("output_dim", output_dim)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"{name} must be an integer >= 1; got {value!r}")


def _weight(init: Initializer, key, d_in: int, d_out: int, dtype) -> jax.Array:
  """Draws Omega (d_out, d_in) with `init` called on the Flax kernel shape (d_in, d_out).

  Calling the initializer with the (in, out) kernel layout of jax.nn.initializers and Flax
  makes fan_in and fan_out come out right for every initializer, then we transpose to the
  book's Omega (out, in).
  """
  return init(key, (d_in, d_out), dtype).T


def init_mlp(key: jax.Array, *, input_dim: int, width: int, depth: int, output_dim: int = 1,
             weight_init: str | Initializer = "he_normal",
             bias_init: str | Initializer | None = None,
             dtype: Any = jnp.float32) -> Params:
  """Initializes an MLP with `depth` = K hidden layers of `width` = D_h units.

  Args:
    key: PRNG key; the only source of randomness.
    input_dim, width, depth, output_dim: D_in, D_h, K, D_out.
    weight_init: a registered initializer name or any `init(key, shape, dtype)` (jax.nn.initializers
      protocol); it is called with the kernel shape (fan_in, fan_out) of every layer.
    bias_init: same, for the biases beta_k (shape (D,)); default zeros, as in the book.
    dtype: parameter dtype.

  Returns:
    The parameter dict described in the module docstring.
  """
  _check_dims(input_dim, width, depth, output_dim)
  w_init = _resolve(weight_init, None)
  b_init = _resolve(bias_init, _zeros)
  k_w0, k_wh, k_wo, k_b0, k_bh, k_bo = jax.random.split(key, 6)
  n_stacked = depth - 1
  keys_wh = jax.random.split(k_wh, n_stacked)
  keys_bh = jax.random.split(k_bh, n_stacked)
  if n_stacked > 0:
    omega_hidden = jax.vmap(lambda k: _weight(w_init, k, width, width, dtype))(keys_wh)
    beta_hidden = jax.vmap(lambda k: b_init(k, (width,), dtype))(keys_bh)
  else:
    omega_hidden = jnp.zeros((0, width, width), dtype)
    beta_hidden = jnp.zeros((0, width), dtype)
  return {
      "omega_0": _weight(w_init, k_w0, input_dim, width, dtype),
      "beta_0": b_init(k_b0, (width,), dtype),
      "omega_hidden": omega_hidden,
      "beta_hidden": beta_hidden,
      "omega_out": _weight(w_init, k_wo, width, output_dim, dtype),
      "beta_out": b_init(k_bo, (output_dim,), dtype),
  }


def mlp_shape(params: Params) -> dict[str, int]:
  """input_dim, width, depth (K) and output_dim of a parameter dict."""
  width, input_dim = params["omega_0"].shape
  return {"input_dim": int(input_dim), "width": int(width),
          "depth": int(params["omega_hidden"].shape[0]) + 1,
          "output_dim": int(params["omega_out"].shape[0])}


def trace_mlp(params: Params, x_NxD: jax.Array, activation: str = "relu",
              offsets: dict[str, jax.Array] | None = None) -> dict[str, jax.Array]:
  """Runs the network and returns every pre-activation and activation.

  Args:
    params: from `init_mlp`.
    x_NxD: a batch of N inputs.
    activation: a name from `initjax.activations`.
    offsets: optional additive perturbations {"f": (K, N, D_h), "h": (K, N, D_h),
      "f_out": (N, D_out)} added to f_0..f_{K-1}, h_1..h_K and f_K. They are zero in use; their
      gradients are exactly dl/df_k and dl/dh_k (see `initjax.gradients`).

  Returns:
    {"f": f_0..f_{K-1} stacked (K, N, D_h), "h": h_1..h_K stacked (K, N, D_h),
     "f_out": f_K (N, D_out)}.
  """
  a = get_activation(check_activation(activation))
  depth = params["omega_hidden"].shape[0] + 1
  if offsets is None:
    n, width = x_NxD.shape[0], params["omega_0"].shape[0]
    zeros_KxNxD = jnp.zeros((depth, n, width), x_NxD.dtype)
    offsets = {"f": zeros_KxNxD, "h": zeros_KxNxD,
               "f_out": jnp.zeros((n, params["omega_out"].shape[0]), x_NxD.dtype)}
  f0_NxD = x_NxD @ params["omega_0"].T + params["beta_0"] + offsets["f"][0]
  h1_NxD = a(f0_NxD) + offsets["h"][0]

  def layer(h_NxD, xs):
    omega_DxD, beta_D, df_NxD, dh_NxD = xs
    f_NxD = h_NxD @ omega_DxD.T + beta_D + df_NxD
    h_next_NxD = a(f_NxD) + dh_NxD
    return h_next_NxD, (f_NxD, h_next_NxD)

  hK_NxD, (f_rest, h_rest) = jax.lax.scan(
      layer, h1_NxD,
      (params["omega_hidden"], params["beta_hidden"], offsets["f"][1:], offsets["h"][1:]))
  f_out = hK_NxD @ params["omega_out"].T + params["beta_out"] + offsets["f_out"]
  return {"f": jnp.concatenate([f0_NxD[None], f_rest], axis=0),
          "h": jnp.concatenate([h1_NxD[None], h_rest], axis=0),
          "f_out": f_out}


def apply_mlp(params: Params, x_NxD: jax.Array, activation: str = "relu") -> jax.Array:
  """The network output f_K (N, D_out); stores no intermediate layers."""
  a = get_activation(check_activation(activation))
  h_NxD = a(x_NxD @ params["omega_0"].T + params["beta_0"])

  def layer(h_NxD, xs):
    omega_DxD, beta_D = xs
    return a(h_NxD @ omega_DxD.T + beta_D), None

  h_NxD, _ = jax.lax.scan(layer, h_NxD, (params["omega_hidden"], params["beta_hidden"]))
  return h_NxD @ params["omega_out"].T + params["beta_out"]


def least_squares_loss(f_out: jax.Array, y: jax.Array) -> jax.Array:
  """The book's least-squares loss, summed over examples and outputs: sum_i (f_K,i - y_i)^2."""
  return jnp.sum((f_out - y) ** 2)
