"""Recurrent networks as pure functions: a vanilla RNN (Elman), an LSTM and a GRU.

A sequence x_1..x_T of D values per step (an input of shape (N, T, D), or (N, T D) read as T
steps of D values) runs through one recurrent layer of H units, h_0 = 0 (and c_0 = 0), and a
dense readout of the last hidden state, f_out = Omega_out h_T + beta_out:

    rnn:   f_t = W_x x_t + W_h h_{t-1} + beta,              h_t = a[f_t]
    lstm:  i, f, o = sigmoid(W_x^{i,f,o} x_t + W_h^{i,f,o} h_{t-1} + beta^{i,f,o}),
           g = a(W_x^g x_t + W_h^g h_{t-1} + beta^g),
           c_t = f c_{t-1} + i g,                            h_t = o a(c_t)
    gru:   r, z = sigmoid(W_x^{r,z} x_t + W_h^{r,z} h_{t-1} + beta^{r,z}),
           n = a(W_x^n x_t + beta^n + r (W_h^n h_{t-1} + beta_hn)),
           h_t = (1 - z) n + z h_{t-1}

(the gate order and equations of Flax's `SimpleCell`, `LSTMCell` and `GRUCell`; `a` is the
activation, tanh in Flax's cells). Every gate has its own input kernel W_x^g (D, H) and recurrent
kernel W_h^g (H, H), drawn separately: fans D -> H and H -> H as in Flax, where the gates are
separate Dense layers. They are stored stacked over gates, `kernel_x` (G, D, H) and `kernel_h`
(G, H, H) (G = 1, 4, 3), the input kernels drawn by `weight_init` and the recurrent ones by
`recurrent_init` (orthogonal, as Flax's default; `identity` for Le et al.'s IRNN). The time loop
is one `lax.scan`, so the compiled program does not grow with T; the input projections of all
steps are one matrix product before it.

The LSTM's time loop has its own backward pass (`lstm_scan`, a `jax.custom_vjp`): one reverse
scan that carries dL/dh_t and dL/dc_t and keeps the gates' derivatives, after which the
recurrent kernel's gradient is one matrix product over all steps, sum_t h_{t-1}^T dL/dz_t,
instead of one small product per step. Its gradients equal autodiff's (tests, float64), and it
trains faster on a CPU (`scripts/benchmark.py`, its recurrent section). It is
reverse mode only: for `jax.jvp` / `jax.jacfwd` pass `custom_backward=False` (autodiff of the
same scan).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from initjax.nn import activations
from initjax.nn.networks import _resolve, _zeros

CELLS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
Params = dict[str, jax.Array]


def sequence_shape(input_shape: tuple[int, ...], steps: int) -> tuple[int, int]:
  """(T, D): an input of shape (T, D), or of any shape whose values are read as `steps` steps
  of equal length (MNIST-1D's (40,) as 40 steps of one value). ValueError if `steps` does not
  divide the number of values."""
  size = 1
  for d in input_shape:
    size *= int(d)
  if not isinstance(steps, int) or steps < 1 or size % steps:
    raise ValueError(f"time steps (depth) must be an integer >= 1 dividing the input's {size} "
                     f"values; got {steps!r}")
  return steps, size // steps


def init_recurrent(key: jax.Array, *, cell: str, input_dim: int, width: int, output_dim: int,
                   weight_init: str | Callable = "lecun_normal",
                   recurrent_init: str | Callable = "orthogonal",
                   bias_init: str | Callable | None = None, dtype: Any = jnp.float32) -> Params:
  """One network: {"kernel_x" (G, D, H), "kernel_h" (G, H, H), "beta" (G H,), "omega_out"
  (D_out, H), "beta_out" (D_out,)}, and for the GRU "beta_hn" (H,). Each gate's kernels are
  drawn with their own (D, H) and (H, H) shapes (so their fans); the readout by `weight_init`."""
  if cell not in CELLS:
    raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {cell!r}")
  for name, value in (("input_dim", input_dim), ("width", width), ("output_dim", output_dim)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
  w_init, b_init = _resolve(weight_init, None), _resolve(bias_init, _zeros)
  r_init = _resolve(recurrent_init, None)
  gates = GATES[cell]
  kx, kh, ko, kb, kbo, kbn = jax.random.split(key, 6)
  params = {
      "kernel_x": jnp.stack([w_init(k, (input_dim, width), dtype)
                             for k in jax.random.split(kx, gates)]),
      "kernel_h": jnp.stack([r_init(k, (width, width), dtype)
                             for k in jax.random.split(kh, gates)]),
      "beta": b_init(kb, (gates * width,), dtype),
      "omega_out": w_init(ko, (width, output_dim), dtype).T,
      "beta_out": b_init(kbo, (output_dim,), dtype),
  }
  if cell == "gru":
    params["beta_hn"] = b_init(kbn, (width,), dtype)
  return params


def cell_of(params: Params) -> str:
  """The cell type of a network's parameters (from its number of gates)."""
  gates = params["kernel_x"].shape[-3]
  return {1: "rnn", 4: "lstm", 3: "gru"}[gates]


def _steps_first(params: Params, x: jax.Array) -> jax.Array:
  """(T, N, D) from (N, T, D) or (N, T D)."""
  d = params["kernel_x"].shape[-2]
  x_NxTxD = x.reshape(x.shape[0], -1, d)
  return jnp.swapaxes(x_NxTxD, 0, 1)


# The LSTM's gates in the time loop: the three sigmoid gates side by side, then the candidate
# (i, f, o, g), so that one sigmoid reads one contiguous block (Flax's order is i, f, g, o).
_LSTM_ORDER = (0, 1, 3, 2)


def _lstm_forward(act, drive_TxNx4H, kernel_h_Hx4H, offsets_h_TxNxH):
  """The LSTM's time loop, gates in `_LSTM_ORDER`: h_t (T, N, H), the candidate's argument
  z^g_t (T, N, H), and what the backward pass reads (sigmoid gates, a(z^g), c_t, a(c_t))."""
  a, width = act.fn, kernel_h_Hx4H.shape[0]

  def step(carry, xs):
    c, h = carry
    u, dh = xs
    z = u + h @ kernel_h_Hx4H
    s = jax.nn.sigmoid(z[:, :3 * width])
    z_g = z[:, 3 * width:]
    g = a(z_g)
    c = s[:, width:2 * width] * c + s[:, :width] * g
    a_c = a(c)
    h = s[:, 2 * width:] * a_c + dh
    return (c, h), (h, z_g, s, g, c, a_c)

  h0 = jnp.zeros(offsets_h_TxNxH.shape[1:], offsets_h_TxNxH.dtype)
  return jax.lax.scan(step, (h0, h0), (drive_TxNx4H, offsets_h_TxNxH))[1]


def _derivative(act, x, y):
  """a'(x) elementwise, given y = a(x)."""
  if act.name == "tanh":
    return 1.0 - y * y
  return jax.jvp(act.fn, (x,), (jnp.ones_like(x),))[1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def lstm_scan(act, drive_TxNx4H, kernel_h_Hx4H, offsets_h_TxNxH):
  """(h_1..h_T, z^g_1..z^g_T) of the LSTM's time loop from h_0 = c_0 = 0, with its own backward
  pass (module docstring). `act`: an `activations.Activation`; the input drive u_t = W_x x_t +
  beta (T, N, 4H) and the recurrent kernel (H, 4H) with gates in `_LSTM_ORDER`; `offsets_h`
  (T, N, H) is added to h_t (its gradient is dL/dh_t)."""
  return _lstm_forward(act, drive_TxNx4H, kernel_h_Hx4H, offsets_h_TxNxH)[:2]


def _lstm_scan_fwd(act, drive_TxNx4H, kernel_h_Hx4H, offsets_h_TxNxH):
  out = _lstm_forward(act, drive_TxNx4H, kernel_h_Hx4H, offsets_h_TxNxH)
  return out[:2], (kernel_h_Hx4H, out)


def _lstm_scan_bwd(act, residuals, cotangents):
  kernel_h_Hx4H, (h_TxNxH, z_g, s, g, c, a_c) = residuals
  ct_h, ct_z_g = cotangents
  width = kernel_h_Hx4H.shape[0]
  zero = jnp.zeros_like(h_TxNxH[:1])
  c_prev = jnp.concatenate([zero, c[:-1]])
  d_g = _derivative(act, z_g, g)
  d_c = _derivative(act, c, a_c)

  def step(carry, xs):
    dh_later, dc_later = carry
    ct_h_t, ct_zg_t, s_t, g_t, c_prev_t, a_c_t, d_g_t, d_c_t = xs
    i, f, o = s_t[:, :width], s_t[:, width:2 * width], s_t[:, 2 * width:]
    dh = ct_h_t + dh_later                         # dL/dh_t through every later step
    dc = dc_later + dh * o * d_c_t
    ds = jnp.concatenate([dc * g_t, dc * c_prev_t, dh * a_c_t], -1) * s_t * (1.0 - s_t)
    dz = jnp.concatenate([ds, dc * i * d_g_t + ct_zg_t], -1)
    return (dz @ kernel_h_Hx4H.T, dc * f), (dz, dh)

  _, (dz_TxNx4H, dh_TxNxH) = jax.lax.scan(
      step, (zero[0], zero[0]), (ct_h, ct_z_g, s, g, c_prev, a_c, d_g, d_c), reverse=True)
  steps, n = h_TxNxH.shape[:2]
  h_prev = jnp.concatenate([zero, h_TxNxH[:-1]]).reshape(steps * n, width)
  d_kernel = h_prev.T @ dz_TxNx4H.reshape(steps * n, 4 * width)
  return dz_TxNx4H, d_kernel, dh_TxNxH


lstm_scan.defvjp(_lstm_scan_fwd, _lstm_scan_bwd)


def _lstm_trace(params: Params, x_TxNxD: jax.Array, act, offsets_h, custom_backward: bool):
  """(h (T, N, H), z^g (T, N, H)) of the LSTM, gates reordered to `_LSTM_ORDER`."""
  steps, n, d = x_TxNxD.shape
  width = params["kernel_h"].shape[-1]
  order = np.asarray(_LSTM_ORDER)
  kernel_x_Dx4H = jnp.moveaxis(params["kernel_x"][order], 0, 1).reshape(d, 4 * width)
  kernel_h_Hx4H = jnp.moveaxis(params["kernel_h"][order], 0, 1).reshape(width, 4 * width)
  beta_4H = params["beta"].reshape(4, width)[order].reshape(4 * width)
  drive = (x_TxNxD.reshape(steps * n, d) @ kernel_x_Dx4H + beta_4H).reshape(steps, n, -1)
  if custom_backward:
    return lstm_scan(act, drive, kernel_h_Hx4H, offsets_h)
  return _lstm_forward(act, drive, kernel_h_Hx4H, offsets_h)[:2]


def _rnn_gru_trace(params: Params, x_TxNxD: jax.Array, a, offsets_h) -> tuple:
  """(h (T, N, H), f (T, N, H)) of the vanilla RNN or the GRU: autodiff of one scan."""
  cell = cell_of(params)
  steps, n, d = x_TxNxD.shape
  gates, width = params["kernel_h"].shape[0], params["kernel_h"].shape[-1]
  # Every gate in one matrix product, (H, G H); the input projections of every step and gate at
  # once: (T, N, G, H).
  kernel_x_Dx_GH = jnp.moveaxis(params["kernel_x"], 0, 1).reshape(d, gates * width)
  kernel_h_Hx_GH = jnp.moveaxis(params["kernel_h"], 0, 1).reshape(width, gates * width)
  drive = ((x_TxNxD.reshape(steps * n, d) @ kernel_x_Dx_GH + params["beta"])
           .reshape(steps, n, gates, width))

  def recurrent(h_NxH):
    return (h_NxH @ kernel_h_Hx_GH).reshape(h_NxH.shape[0], gates, width)

  def rnn_step(carry, xs):
    h, = carry
    u, dh = xs
    f = u[:, 0] + recurrent(h)[:, 0]
    h = a(f) + dh
    return (h,), (h, f)

  def gru_step(carry, xs):
    h, = carry
    u, dh = xs
    w = recurrent(h)
    r, z = jax.nn.sigmoid(u[:, 0] + w[:, 0]), jax.nn.sigmoid(u[:, 1] + w[:, 1])
    f = u[:, 2] + r * (w[:, 2] + params["beta_hn"])
    h = (1.0 - z) * a(f) + z * h + dh
    return (h,), (h, f)

  step = {"rnn": rnn_step, "gru": gru_step}[cell]
  h0 = jnp.zeros((n, width), x_TxNxD.dtype)
  _, (h_TxNxH, f_TxNxH) = jax.lax.scan(step, (h0,), (drive, offsets_h))
  return h_TxNxH, f_TxNxH


def trace_recurrent(params: Params, x: jax.Array, activation: str = "tanh",
                    offsets: dict[str, jax.Array] | None = None, *,
                    custom_backward: bool = True) -> dict[str, jax.Array]:
  """Runs the network; returns {"h": h_1..h_T (T, N, H), "f": the vanilla RNN's pre-activations
  f_1..f_T (T, N, H; for the LSTM and GRU the candidate's, a's argument), "f_out": (N, D_out)}.
  `offsets` {"h": (T, N, H), "f_out": (N, D_out)}, zero in use, are added where each value is
  computed: their gradients are exactly dL/dh_t (through every later step) and dL/df_out.
  `custom_backward`: the LSTM's own backward pass (`lstm_scan`; reverse mode only); False:
  autodiff of the same loop, which forward mode (`jax.jvp`, `jax.jacfwd`) needs."""
  act = activations.get(activation)
  cell = cell_of(params)
  x_TxNxD = _steps_first(params, x)
  steps, n = x_TxNxD.shape[:2]
  width = params["kernel_h"].shape[-1]
  if offsets is None:
    offsets = {"h": jnp.zeros((steps, n, width), x.dtype),
               "f_out": jnp.zeros((n, params["omega_out"].shape[0]), x.dtype)}
  if cell == "lstm":
    h_TxNxH, f_TxNxH = _lstm_trace(params, x_TxNxD, act, offsets["h"], custom_backward)
  else:
    h_TxNxH, f_TxNxH = _rnn_gru_trace(params, x_TxNxD, act.fn, offsets["h"])
  f_out = h_TxNxH[-1] @ params["omega_out"].T + params["beta_out"] + offsets["f_out"]
  return {"h": h_TxNxH, "f": f_TxNxH, "f_out": f_out}


def apply_recurrent(params: Params, x: jax.Array, activation: str = "tanh") -> jax.Array:
  """The network output f_out (N, D_out), read out from the last hidden state."""
  return trace_recurrent(params, x, activation)["f_out"]


def recurrent_layer_statistics(params: Params, x: jax.Array, y: jax.Array, loss_fn,
                               activation: str = "tanh") -> dict[str, jax.Array]:
  """Per time step t = 1..T, pooled over examples and units: Var[f_t], Var[h_t] and
  Var[dL/dh_t] (exact: the gradient of the loss with respect to a zero offset added to h_t,
  so through every later step), and the loss."""
  x_TxNxD = _steps_first(params, x)
  steps, n = x_TxNxD.shape[:2]
  width = params["kernel_h"].shape[-1]
  offsets = {"h": jnp.zeros((steps, n, width), x.dtype),
             "f_out": jnp.zeros((n, params["omega_out"].shape[0]), x.dtype)}

  def loss_of(o):
    trace = trace_recurrent(params, x, activation, o)
    return loss_fn(trace["f_out"], y), (trace["f"], trace["h"])

  (loss, (f, h)), g = jax.value_and_grad(loss_of, has_aux=True)(offsets)
  return {"var_f": jnp.var(f, axis=(1, 2)), "var_h": jnp.var(h, axis=(1, 2)),
          "var_dl_dh": jnp.var(g["h"], axis=(1, 2)), "loss": loss}


def unit_step_inputs(key: jax.Array, shape: tuple[int, ...], steps: int,
                     dtype: Any = jnp.float32) -> jax.Array:
  """Standard-normal sequences of `shape` (N, ...) with every step x_t rescaled to mean square
  1 over its D values (one value per step: a random sign), the constant input drive
  E[x_t^2] = 1 that the mean field of `initjax.theory.recurrent` assumes."""
  t, d = sequence_shape(shape[1:], steps)
  x = jax.random.normal(key, (shape[0], t, d), dtype)
  x = x / jnp.sqrt(jnp.mean(x ** 2, axis=-1, keepdims=True))
  return x.reshape(shape)
