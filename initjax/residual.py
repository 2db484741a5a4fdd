"""A residual MLP of pre-activation blocks, and its mean-field variance recursion.

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

Theory (mean field, per-fan-in sigma2 = fan_in Var[W], zero-mean weights independent of h):
Var[h_{k+1}] = Var[h_k] + alpha^2 (sigma2_w E[a[h_k]^2] + sigma2_b): a He-initialized ReLU
branch (sigma2_w = 2, E[a^2] = q/2) multiplies the variance by (1 + alpha^2) per block, i.e.
log10(2) = 0.30 decades per block at alpha = 1, and (1 + 1/K)^K ~ e over K blocks at
alpha = 1/sqrt(K). Backward, dl/dh_k = dl/dh_{k+1} + alpha a'[h_k] (Omega_k^T dl/dh_{k+1}) grows
by (1 + alpha^2 sigma2_w E[a'^2]) per block towards the input.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initjax import activations, theory
from initjax.networks import _resolve, _weight, _zeros

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


def predict_resmlp(*, input_dim: int, width: int, depth: int, output_dim: int = 1,
                   sigma2_w: float | Sequence[float], sigma2_b: float = 0.0,
                   activation: str = "relu", scale: str = "one",
                   input_second_moment: float = 1.0) -> dict[str, np.ndarray]:
  """Mean-field log10 variances: {"var_h": h_0..h_K, "var_dl_dh": dl/dh_0..dl/dh_K, "var_out"}
  for the least-squares loss against y = 0 (dl/df_out = 2 f_out).

  `sigma2_w` is per fan-in (fan_in Var[W]; He: 2 for ReLU), one value or K + 2 values (Omega_in,
  Omega_0..Omega_{K-1}, Omega_out)."""
  s2 = np.broadcast_to(np.asarray(sigma2_w, np.float64), (depth + 2,))
  alpha2 = branch_scale(scale, depth) ** 2
  q = [s2[0] * input_second_moment + sigma2_b]
  da2 = []
  for k in range(depth + 1):
    m = theory.activation_moments(activation, q[-1])
    da2.append(m["second_moment_da"])
    if k < depth:
      q.append(q[-1] + alpha2 * (s2[k + 1] * m["second_moment_h"] + sigma2_b))
  m_K = theory.activation_moments(activation, q[depth])
  var_out = s2[-1] * m_K["second_moment_h"] + sigma2_b
  g = [4.0 * var_out * output_dim * (s2[-1] / width) * da2[depth]]  # dl/dh_K
  for k in range(depth - 1, -1, -1):
    g.append(g[-1] * (1.0 + alpha2 * s2[k + 1] * da2[k]))
  return {"var_h": np.log10(q), "var_dl_dh": np.log10(g[::-1]), "var_out": math.log10(var_out)}
