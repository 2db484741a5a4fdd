"""Batch and layer normalization of the book's MLP's pre-activations, as pure functions.

The normalized MLP normalizes every hidden pre-activation f_k before the activation:

    f_0 = beta_0 + Omega_0 x,        f_k = beta_k + Omega_k h_k            (as `initjax.networks`)
    g_k = gamma_k * (f_k - mu_k) / sqrt(s2_k + eps) + delta_k,    h_{k+1} = a[g_k]

with a learnable scale gamma_k (ones at initialization) and shift delta_k (zeros), per unit:

  * batchnorm (Ioffe & Szegedy 2015): mu_k, s2_k are the mean and (biased) variance of each unit
    over the batch, in training and wherever the network is run "as at initialization"
    (`trace_normalized_mlp` without a state, the propagation figure); evaluation uses running
    averages updated in every training step, r <- MOMENTUM r + (1 - MOMENTUM) batch value
    (Flax's convention; the running variance starts at 1, the mean at 0).
  * layernorm (Ba, Kiros & Hinton 2016): mu_k, s2_k are each example's mean and variance over
    the units; no state, the same in training and evaluation.

The output layer f_K = beta_K + Omega_K h_K is not normalized. Parameters: those of
`initjax.networks.init_mlp` plus

    norm_scale_0, norm_shift_0              (D_h,)       gamma_0, delta_0
    norm_scale_hidden, norm_shift_hidden    (K-1, D_h)   gamma_1..gamma_{K-1}, stacked

and the batchnorm state {"mean_0", "var_0": (D_h,), "mean_hidden", "var_hidden": (K-1, D_h)}.
A batch of one example has no batch variance (every g_k would be delta_k): `check_batch` refuses.

The 1-D CNN of `initjax.nn.convolutional` is normalized the same way (`trace_normalized_cnn`):
per channel, batchnorm over the batch and the positions, layernorm over the channels at each
position (Flax's `nn.BatchNorm` and `nn.LayerNorm` on (N, L, C)), the same parameter and state
names with C for D_h.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from initjax.nn.activations import check_activation, get_activation
from initjax.nn import convolutional
from initjax.nn.convolutional import _channel_last

NORMS = ("none", "batchnorm", "layernorm")
EPS = 1e-5          # added to the variance, as Flax's and PyTorch's default
MOMENTUM = 0.9      # of the running averages (Flax's default is 0.99; 0.9 settles in ~20 steps)
NORM_PARAMS = ("norm_scale_0", "norm_shift_0", "norm_scale_hidden", "norm_shift_hidden")

Params = dict[str, jax.Array]


def check_norm(norm: str) -> str:
  if norm not in NORMS:
    raise ValueError(f"unknown norm {norm!r}; allowed: {', '.join(NORMS)}")
  return norm


def check_batch(norm: str, batch_size: int) -> None:
  """ValueError for batch normalization of a batch of fewer than two examples."""
  if check_norm(norm) == "batchnorm" and batch_size < 2:
    raise ValueError(f"batchnorm needs at least 2 examples per batch (the batch variance of one "
                     f"example is 0); got {batch_size}")


def batch_moments(f_NxD: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Each unit's (channel's) mean and biased variance over the batch (and, for a sequence
  (N, L, C), its positions): (D,), (D,)."""
  axes = tuple(range(f_NxD.ndim - 1))
  mean_D = jnp.mean(f_NxD, axis=axes)
  return mean_D, jnp.mean((f_NxD - mean_D) ** 2, axis=axes)


def standardize(f_NxD, mean, var, scale_D, shift_D, eps: float = EPS) -> jax.Array:
  """scale * (f - mean) / sqrt(var + eps) + shift (mean, var broadcast against f)."""
  return scale_D * (f_NxD - mean) * jax.lax.rsqrt(var + eps) + shift_D


def batch_norm(f_NxD, scale_D, shift_D, eps: float = EPS) -> jax.Array:
  """Batch normalization with the batch's own statistics (training mode)."""
  mean_D, var_D = batch_moments(f_NxD)
  return standardize(f_NxD, mean_D, var_D, scale_D, shift_D, eps)


def layer_norm(f_NxD, scale_D, shift_D, eps: float = EPS) -> jax.Array:
  """Layer normalization: each example standardized over its units (a sequence's: at each
  position, over its channels, as Flax's `nn.LayerNorm`)."""
  mean_Nx1 = jnp.mean(f_NxD, axis=-1, keepdims=True)
  var_Nx1 = jnp.mean((f_NxD - mean_Nx1) ** 2, axis=-1, keepdims=True)
  return standardize(f_NxD, mean_Nx1, var_Nx1, scale_D, shift_D, eps)


def init_norm_params(params: Params, norm: str) -> Params:
  """`params` (from `init_mlp` or `initjax.nn.convolutional.init_cnn`: biases beta_0,
  beta_hidden) with the scales (ones) and shifts (zeros) of `norm` added; unchanged for "none".
  Works on one network or a batch of them (leading axis)."""
  if check_norm(norm) == "none":
    return params
  b0, bh = params["beta_0"], params["beta_hidden"]
  return {**params, "norm_scale_0": jnp.ones_like(b0), "norm_shift_0": jnp.zeros_like(b0),
          "norm_scale_hidden": jnp.ones_like(bh), "norm_shift_hidden": jnp.zeros_like(bh)}


def init_norm_state(params: Params, norm: str) -> Any:
  """The running statistics of batchnorm (mean 0, variance 1), shaped as the biases of
  `params` (one network or a batch); () for the stateless norms."""
  if check_norm(norm) != "batchnorm":
    return ()
  b0, bh = params["beta_0"], params["beta_hidden"]
  return {"mean_0": jnp.zeros_like(b0), "var_0": jnp.ones_like(b0),
          "mean_hidden": jnp.zeros_like(bh), "var_hidden": jnp.ones_like(bh)}


def _normalize(f, scale_D, shift_D, norm: str, running: tuple | None, channel_axis: int = -1):
  """(g, batch mean, batch var) of one layer whose units (channels) lie on `channel_axis` (the
  MLP's (N, D): -1; the CNN runs channels first, (C, N, L): 0): batchnorm per unit over the
  other axes, layernorm over the units; the batch moments are zeros unless batchnorm."""
  axis = channel_axis % f.ndim
  others = tuple(i for i in range(f.ndim) if i != axis)
  per_unit = lambda v: jnp.expand_dims(v, others)   # noqa: E731  (D,) against f
  zeros_D = jnp.zeros(f.shape[axis], f.dtype)
  if norm == "none":
    return f, zeros_D, zeros_D
  scale, shift = per_unit(scale_D), per_unit(shift_D)
  if norm == "layernorm":
    mean = jnp.mean(f, axis=axis, keepdims=True)
    return (standardize(f, mean, jnp.mean((f - mean) ** 2, axis=axis, keepdims=True), scale,
                        shift), zeros_D, zeros_D)
  mean_D = jnp.mean(f, axis=others)
  var_D = jnp.mean((f - per_unit(mean_D)) ** 2, axis=others)
  mean, var = running if running is not None else (mean_D, var_D)   # evaluation: the running
  return standardize(f, per_unit(mean), per_unit(var), scale, shift), mean_D, var_D   # averages


def trace_normalized_mlp(params: Params, x_NxD: jax.Array, activation: str = "relu",
                         norm: str = "batchnorm", offsets: dict | None = None,
                         state: Any = None) -> dict[str, jax.Array]:
  """Runs the normalized MLP and returns every layer (as `initjax.networks.trace_mlp`).

  Args:
    params: `init_norm_params(init_mlp(...), norm)`.
    x_NxD: a batch of N inputs.
    activation, norm: names.
    offsets: optional zero perturbations {"f": (K, N, D_h), "h": (K, N, D_h), "f_out": (N,
      D_out)} added to f_0..f_{K-1} (before normalization), h_1..h_K and f_K: their gradients are
      dl/df_k, dl/dh_k, through the batch statistics.
    state: batchnorm's running statistics (evaluation mode); None: the batch's statistics.

  Returns:
    {"f": f_0..f_{K-1} (K, N, D_h), "g": the normalized g_0..g_{K-1}, "h": h_1..h_K,
     "f_out": f_K (N, D_out), "mean": (K, D_h), "var": (K, D_h)} (the batch moments of f_k,
    zeros unless batchnorm).
  """
  a = get_activation(check_activation(activation))
  check_norm(norm)
  depth = params["omega_hidden"].shape[0] + 1
  n, width = x_NxD.shape[0], params["omega_0"].shape[0]
  if offsets is None:
    zeros_KxNxD = jnp.zeros((depth, n, width), x_NxD.dtype)
    offsets = {"f": zeros_KxNxD, "h": zeros_KxNxD,
               "f_out": jnp.zeros((n, params["omega_out"].shape[0]), x_NxD.dtype)}
  if state is None or norm != "batchnorm":
    run0 = None
    run_h = (jnp.zeros((depth - 1, width), x_NxD.dtype),) * 2
  else:
    run0 = (state["mean_0"], state["var_0"])
    run_h = (state["mean_hidden"], state["var_hidden"])
  eval_mode = run0 is not None
  f0_NxD = x_NxD @ params["omega_0"].T + params["beta_0"] + offsets["f"][0]
  g0_NxD, m0, v0 = _normalize(f0_NxD, params["norm_scale_0"], params["norm_shift_0"], norm, run0)
  h1_NxD = a(g0_NxD) + offsets["h"][0]

  def layer(h_NxD, xs):
    omega_DxD, beta_D, scale_D, shift_D, mean_D, var_D, df_NxD, dh_NxD = xs
    f_NxD = h_NxD @ omega_DxD.T + beta_D + df_NxD
    g_NxD, m, v = _normalize(f_NxD, scale_D, shift_D, norm, (mean_D, var_D) if eval_mode else None)
    h_next_NxD = a(g_NxD) + dh_NxD
    return h_next_NxD, (f_NxD, g_NxD, h_next_NxD, m, v)

  hK_NxD, (f_rest, g_rest, h_rest, m_rest, v_rest) = jax.lax.scan(
      layer, h1_NxD,
      (params["omega_hidden"], params["beta_hidden"], params["norm_scale_hidden"],
       params["norm_shift_hidden"], run_h[0], run_h[1], offsets["f"][1:], offsets["h"][1:]))
  f_out = hK_NxD @ params["omega_out"].T + params["beta_out"] + offsets["f_out"]
  cat = lambda first, rest: jnp.concatenate([first[None], rest], axis=0)  # noqa: E731
  return {"f": cat(f0_NxD, f_rest), "g": cat(g0_NxD, g_rest), "h": cat(h1_NxD, h_rest),
          "f_out": f_out, "mean": cat(m0, m_rest), "var": cat(v0, v_rest)}


def apply_normalized_mlp(params: Params, x_NxD: jax.Array, activation: str = "relu",
                         norm: str = "batchnorm") -> jax.Array:
  """The output f_K with the batch's statistics (as at initialization; training mode)."""
  return trace_normalized_mlp(params, x_NxD, activation, norm)["f_out"]


def apply_train(params: Params, state: Any, x_NxD: jax.Array, rng: Any = None, *,
                activation: str = "relu", norm: str = "batchnorm") -> tuple[jax.Array, Any]:
  """Training mode: (f_K with batch statistics, the running averages updated by this batch)."""
  del rng
  trace = trace_normalized_mlp(params, x_NxD, activation, norm)
  if norm != "batchnorm":
    return trace["f_out"], state
  return trace["f_out"], _running(state, trace["mean"], trace["var"])


def apply_eval(params: Params, state: Any, x_NxD: jax.Array, *, activation: str = "relu",
               norm: str = "batchnorm") -> jax.Array:
  """Evaluation mode: f_K with batchnorm's running averages (layernorm: as in training)."""
  return trace_normalized_mlp(params, x_NxD, activation, norm,
                              state=state if norm == "batchnorm" else None)["f_out"]


def layer_statistics(params: Params, x_NxD: jax.Array, y: jax.Array, loss_fn, *,
                     activation: str = "relu", norm: str = "batchnorm") -> dict[str, jax.Array]:
  """Var[h_k], Var[dl/dh_k] (k = 1..K), Var[f_k], Var[dl/df_k] (k = 0..K-1, f_k before the
  normalization) and the loss, with the batch's statistics (as at initialization), each pooled
  over units and examples; the gradients flow through the batch statistics."""
  depth = params["omega_hidden"].shape[0] + 1
  n, width = x_NxD.shape[0], params["omega_0"].shape[0]
  zeros_KxNxD = jnp.zeros((depth, n, width), x_NxD.dtype)
  offsets = {"f": zeros_KxNxD, "h": zeros_KxNxD,
             "f_out": jnp.zeros((n, params["omega_out"].shape[0]), x_NxD.dtype)}

  def loss_of(o):
    trace = trace_normalized_mlp(params, x_NxD, activation, norm, o)
    return loss_fn(trace["f_out"], y), (trace["h"], trace["f"])

  (loss, (h_KxNxD, f_KxNxD)), g = jax.value_and_grad(loss_of, has_aux=True)(offsets)
  return {"var_h": jnp.var(h_KxNxD, axis=(1, 2)), "var_dl_dh": jnp.var(g["h"], axis=(1, 2)),
          "var_f": jnp.var(f_KxNxD, axis=(1, 2)), "var_dl_df": jnp.var(g["f"], axis=(1, 2)),
          "loss": loss}


# ------------------------------------------------------------------------------------------------
# The 1-D CNN of `initjax.nn.convolutional`, normalized the same way (per channel: batchnorm over
# the batch and the positions, layernorm over the channels at each position).

def trace_normalized_cnn(params: Params, x: jax.Array, activation: str = "relu",
                         padding: str = "circular", norm: str = "batchnorm",
                         offsets: dict | None = None, state: Any = None) -> dict[str, jax.Array]:
  """As `initjax.nn.convolutional.trace_cnn`, with f_k normalized before the activation;
  returns also "mean", "var" (K, C): the batch moments of f_k (zeros unless batchnorm)."""
  check_activation(activation)
  check_norm(norm)
  depth, channels = params["kernel_hidden"].shape[0] + 1, params["kernel_0"].shape[-1]
  cat = lambda first, rest: jnp.concatenate([first[None], rest], axis=0)  # noqa: E731
  placeholder = jnp.zeros((depth, channels), params["kernel_0"].dtype)
  if norm == "none":
    scale = shift = placeholder
  else:
    scale = cat(params["norm_scale_0"], params["norm_scale_hidden"])
    shift = cat(params["norm_shift_0"], params["norm_shift_hidden"])
  eval_mode = state is not None and norm == "batchnorm"
  if eval_mode:
    running = (cat(state["mean_0"], state["mean_hidden"]), cat(state["var_0"], state["var_hidden"]))
  else:
    running = (placeholder, placeholder)

  def normalize(f_CxNxL, xs):
    scale_C, shift_C, mean_C, var_C = xs
    g, m, v = _normalize(f_CxNxL, scale_C, shift_C, norm,
                         (mean_C, var_C) if eval_mode else None, channel_axis=0)
    return g, (m, v)

  trace = convolutional.trace_conv_stack(params, x, activation, padding, offsets, normalize,
                                         (scale, shift) + running)
  return {"f": trace["f"], "h": trace["h"], "f_out": trace["f_out"], "mean": trace["aux"][0],
          "var": trace["aux"][1]}


def _running(state, mean_KxC, var_KxC):
  mean_KxC, var_KxC = jax.lax.stop_gradient(mean_KxC), jax.lax.stop_gradient(var_KxC)
  new = lambda old, batch: MOMENTUM * old + (1.0 - MOMENTUM) * batch  # noqa: E731
  return {"mean_0": new(state["mean_0"], mean_KxC[0]), "var_0": new(state["var_0"], var_KxC[0]),
          "mean_hidden": new(state["mean_hidden"], mean_KxC[1:]),
          "var_hidden": new(state["var_hidden"], var_KxC[1:])}


def apply_normalized_cnn(params: Params, x: jax.Array, activation: str = "relu",
                         padding: str = "circular", norm: str = "batchnorm") -> jax.Array:
  """The CNN's output with the batch's statistics (as at initialization; training mode)."""
  return trace_normalized_cnn(params, x, activation, padding, norm)["f_out"]


def apply_cnn_train(params: Params, state: Any, x: jax.Array, rng: Any = None, *,
                    activation: str = "relu", padding: str = "circular",
                    norm: str = "batchnorm") -> tuple[jax.Array, Any]:
  """Training mode: (output with batch statistics, running averages updated)."""
  del rng
  trace = trace_normalized_cnn(params, x, activation, padding, norm)
  if norm != "batchnorm":
    return trace["f_out"], state
  return trace["f_out"], _running(state, trace["mean"], trace["var"])


def apply_cnn_eval(params: Params, state: Any, x: jax.Array, *, activation: str = "relu",
                   padding: str = "circular", norm: str = "batchnorm") -> jax.Array:
  """Evaluation mode: the output with batchnorm's running averages."""
  return trace_normalized_cnn(params, x, activation, padding, norm,
                              state=state if norm == "batchnorm" else None)["f_out"]


def cnn_layer_statistics(params: Params, x: jax.Array, y: jax.Array, loss_fn, *,
                         activation: str = "relu", padding: str = "circular",
                         norm: str = "batchnorm") -> dict[str, jax.Array]:
  """As `initjax.nn.convolutional.cnn_layer_statistics` (f_k before the normalization), with
  the batch's statistics; gradients through them."""
  depth = params["kernel_hidden"].shape[0] + 1
  x = _channel_last(x)
  shape = (depth, x.shape[0], x.shape[1], params["kernel_0"].shape[-1])
  offsets = {"f": jnp.zeros(shape, x.dtype), "h": jnp.zeros(shape, x.dtype),
             "f_out": jnp.zeros((x.shape[0], params["omega_out"].shape[0]), x.dtype)}

  def loss_of(o):
    trace = trace_normalized_cnn(params, x, activation, padding, norm, o)
    return loss_fn(trace["f_out"], y), (trace["f"], trace["h"])

  (loss, (f, h)), g = jax.value_and_grad(loss_of, has_aux=True)(offsets)
  channel_mean = jnp.mean(h, axis=(1, 2))
  return {"var_f": jnp.var(f, axis=(1, 2, 3)),
          "var_h": jnp.var(h, axis=(1, 2, 3)), "var_dl_dh": jnp.var(g["h"], axis=(1, 2, 3)),
          "var_dl_df": jnp.var(g["f"], axis=(1, 2, 3)),
          "channel_sq_mean": jnp.mean(channel_mean ** 2, axis=-1),
          "channel_var": jnp.mean(jnp.var(h, axis=(1, 2)), axis=-1), "loss": loss}
