"""A 1-D convolutional network for sequences such as MNIST-1D.

    f_0 = conv(x; Omega_0) + beta_0,  h_k = a[f_{k-1}],  f_k = conv(h_k; Omega_k) + beta_k
    (k = 1..K-1, K convolutional layers of C channels, kernel size s, stride 1, length L kept),
    f_out = Omega_out flatten(h_K) + beta_out

Inputs are (N, L) or channel-last (N, L, C_in). Kernels have Flax's conv layout (s, C_in, C_out),
so fan_in = s C_in for every initializer; the hidden ones are stacked (K-1, s, C, C) and run with
`lax.scan`, on channels-first activations (C, N, L) inside. A convolution is computed as one
matrix product over its patches (im2col): a batch of networks (vmap) then multiplies batched
matrices, which XLA runs fast, instead of the grouped convolution that a vmapped `lax.conv`
becomes (slow on CPUs; unbatched too: a 6-layer CNN's gradient took 128 ms with `lax.conv`, 11
ms with im2col, on 2 cores).

Padding (`PADDINGS`): "circular" (every output position sums exactly s C_in inputs) or
"zero" ('SAME': the r = (s - 1) / 2 positions at each edge see fewer inputs). The mean-field
variance recursion of both, `predict_cnn`, is in `initjax.theory.convolutional`.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from initjax.nn import activations
from initjax.nn.networks import _resolve, _zeros

PADDINGS = ("circular", "zero")
Params = dict[str, jax.Array]


def _channel_last(x: jax.Array) -> jax.Array:
  return x[..., None] if x.ndim == 2 else x


def conv1d_channels_first(h_CxNxL: jax.Array, kernel_SxCxO: jax.Array,
                          padding: str) -> jax.Array:
  """The stride-1 'same-length' 1-D convolution on channels-first activations (C, N, L), the
  layout the networks run in, as one matrix product over the patches (im2col): (O, N, L),

  out[o, n, i] = sum_{d, c} kernel[d, c, o] h[c, n, i + d - r], r = (s - 1) // 2, with h wrapped
  around ("circular") or zero ("zero") outside 0..L-1.

  With the N L positions as the long minor axis of the patches (s C, N L), the kernel's gradient
  is a plain (s C, N L) x (N L, O) product; from channel-last patches (N L, s C) it is a product
  with a transposed operand, which XLA's CPU kernels ran at half the speed (one core, jaxlib
  0.10.2: 0.42 vs 0.81 ms at N L = 4000, s C = 160, O = 32), and a CNN's gradient ran 1.27x faster.
  """
  s = kernel_SxCxO.shape[0]
  r = (s - 1) // 2
  c, n, length = h_CxNxL.shape
  padded = jnp.pad(h_CxNxL, ((0, 0), (0, 0), (r, s - 1 - r)),
                   mode="wrap" if padding == "circular" else "constant")
  patches = jnp.concatenate([padded[:, :, d:d + length] for d in range(s)], axis=0)
  out = kernel_SxCxO.reshape(s * c, -1).T @ patches.reshape(s * c, n * length)
  return out.reshape(-1, n, length)


def conv1d(h_NxLxC: jax.Array, kernel_SxCxO: jax.Array, padding: str) -> jax.Array:
  """`conv1d_channels_first` on channel-last activations (N, L, C) -> (N, L, O)."""
  return jnp.moveaxis(conv1d_channels_first(jnp.moveaxis(h_NxLxC, -1, 0), kernel_SxCxO,
                                            padding), 0, -1)


def init_cnn(key: jax.Array, *, input_shape: tuple[int, ...], channels: int, depth: int,
             output_dim: int, kernel_size: int = 5, weight_init: str | Callable = "he_normal",
             bias_init: str | Callable | None = None, dtype: Any = jnp.float32) -> Params:
  """K = `depth` convolutional layers of `channels` channels on inputs of shape (L,) or (L, C_in),
  and a dense output layer on the flattened last layer."""
  length, c_in = (input_shape[0], 1) if len(input_shape) == 1 else input_shape
  for name, value in (("channels", channels), ("depth", depth), ("output_dim", output_dim),
                      ("kernel_size", kernel_size), ("length", length)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
  w_init, b_init = _resolve(weight_init, None), _resolve(bias_init, _zeros)
  k0, kh, ko, kb0, kbh, kbo = jax.random.split(key, 6)
  n_hidden = depth - 1
  return {
      "kernel_0": w_init(k0, (kernel_size, c_in, channels), dtype),
      "beta_0": b_init(kb0, (channels,), dtype),
      "kernel_hidden": (jax.vmap(lambda k: w_init(k, (kernel_size, channels, channels), dtype))(
          jax.random.split(kh, n_hidden)) if n_hidden else
                        jnp.zeros((0, kernel_size, channels, channels), dtype)),
      "beta_hidden": (jax.vmap(lambda k: b_init(k, (channels,), dtype))(
          jax.random.split(kbh, n_hidden)) if n_hidden else jnp.zeros((0, channels), dtype)),
      "omega_out": w_init(ko, (length * channels, output_dim), dtype).T,
      "beta_out": b_init(kbo, (output_dim,), dtype),
  }


def trace_conv_stack(params: Params, x: jax.Array, activation: str = "relu",
                     padding: str = "circular", offsets: dict[str, jax.Array] | None = None,
                     normalize: Callable | None = None, normalize_xs: Any = None
                     ) -> dict[str, jax.Array]:
  """Runs the network (channels first inside; inputs and results channel last), with
  `normalize(f_CxNxL, xs_k) -> (g_CxNxL, aux_k)` applied to every f_k before the activation
  (`normalize_xs`: a pytree of per-layer inputs with a leading axis K). Returns {"f": f_0..f_{K-1}
  (K, N, L, C), "h": h_1..h_K (K, N, L, C), "f_out": (N, D_out), "aux": the aux_k stacked}.
  `offsets` (same shapes as "f", "h", "f_out"; zero in use) are added where each value is
  computed: their gradients are exactly dl/df_k, dl/dh_k, dl/df_out."""
  a = activations.get(activation).fn
  x = _channel_last(x)
  depth = params["kernel_hidden"].shape[0] + 1
  n, length, channels = x.shape[0], x.shape[1], params["kernel_0"].shape[-1]
  if normalize is None:
    normalize, normalize_xs = (lambda f, xs: (f, ())), jnp.zeros((depth, 0), x.dtype)
  column = lambda v: v[:, None, None]   # noqa: E731  (a per-channel vector against (C, N, L))
  if offsets is None:
    off_f = off_h = jnp.zeros((depth, channels, n, length), x.dtype)
    off_out = jnp.zeros((n, params["omega_out"].shape[0]), x.dtype)
  else:
    off_f, off_h = (jnp.moveaxis(offsets[k], -1, 1) for k in ("f", "h"))
    off_out = offsets["f_out"]
  first = jax.tree.map(lambda v: v[0], normalize_xs)
  rest = jax.tree.map(lambda v: v[1:], normalize_xs)
  f0 = (conv1d_channels_first(jnp.moveaxis(x, -1, 0), params["kernel_0"], padding)
        + column(params["beta_0"]) + off_f[0])
  g0, aux0 = normalize(f0, first)
  h1 = a(g0) + off_h[0]

  def layer(h, xs):
    kernel, beta, norm_xs, df, dh = xs
    f = conv1d_channels_first(h, kernel, padding) + column(beta) + df
    g, aux = normalize(f, norm_xs)
    h_next = a(g) + dh
    return h_next, (f, h_next, aux)

  h_K, (f_rest, h_rest, aux_rest) = jax.lax.scan(
      layer, h1, (params["kernel_hidden"], params["beta_hidden"], rest, off_f[1:], off_h[1:]))
  f_out = (jnp.transpose(h_K, (1, 2, 0)).reshape(n, -1) @ params["omega_out"].T
           + params["beta_out"] + off_out)
  stack = lambda v0, vs: jnp.concatenate([v0[None], vs])   # noqa: E731
  channel_last = lambda v0, vs: jnp.moveaxis(stack(v0, vs), 1, -1)   # noqa: E731
  return {"f": channel_last(f0, f_rest), "h": channel_last(h1, h_rest), "f_out": f_out,
          "aux": jax.tree.map(stack, aux0, aux_rest)}


def trace_cnn(params: Params, x: jax.Array, activation: str = "relu", padding: str = "circular",
              offsets: dict[str, jax.Array] | None = None) -> dict[str, jax.Array]:
  """Runs the network; returns {"f": f_0..f_{K-1} (K, N, L, C), "h": h_1..h_K (K, N, L, C),
  "f_out": (N, D_out)}. `offsets` (same shapes, zero in use) are added where each value is
  computed: their gradients are exactly dl/df_k, dl/dh_k, dl/df_out."""
  trace = trace_conv_stack(params, x, activation, padding, offsets)
  return {k: trace[k] for k in ("f", "h", "f_out")}


def apply_cnn(params: Params, x: jax.Array, activation: str = "relu",
              padding: str = "circular") -> jax.Array:
  """The network output f_out (N, D_out)."""
  return trace_cnn(params, x, activation, padding)["f_out"]


def cnn_layer_statistics(params: Params, x: jax.Array, y: jax.Array, loss_fn,
                         activation: str = "relu", padding: str = "circular"
                         ) -> dict[str, jax.Array]:
  """Per layer, pooled over examples, positions and channels: Var[f_k] (k = 0..K-1), Var[h_k],
  Var[dl/dh_k] (k = 1..K), Var[dl/df_k] (k = 0..K-1); Brock et al.'s average channel squared
  mean and average channel variance of h_k; and the loss. Gradients are exact (zero offsets)."""
  depth = params["kernel_hidden"].shape[0] + 1
  x = _channel_last(x)
  shape = (depth, x.shape[0], x.shape[1], params["kernel_0"].shape[-1])
  offsets = {"f": jnp.zeros(shape, x.dtype), "h": jnp.zeros(shape, x.dtype),
             "f_out": jnp.zeros((x.shape[0], params["omega_out"].shape[0]), x.dtype)}

  def loss_of(o):
    trace = trace_cnn(params, x, activation, padding, o)
    return loss_fn(trace["f_out"], y), (trace["f"], trace["h"])

  (loss, (f, h)), g = jax.value_and_grad(loss_of, has_aux=True)(offsets)
  channel_mean = jnp.mean(h, axis=(1, 2))                       # (K, C)
  return {"var_f": jnp.var(f, axis=(1, 2, 3)),
          "var_h": jnp.var(h, axis=(1, 2, 3)), "var_dl_dh": jnp.var(g["h"], axis=(1, 2, 3)),
          "var_dl_df": jnp.var(g["f"], axis=(1, 2, 3)),
          "channel_sq_mean": jnp.mean(channel_mean ** 2, axis=-1),
          "channel_var": jnp.mean(jnp.var(h, axis=(1, 2)), axis=-1), "loss": loss}
