"""Per-layer forward and backward statistics of many random networks, exact at any depth.

For each random initialization (a seed) we draw the weights, a batch of N standard-normal inputs,
run the network with target y = 0 and least-squares loss (the book's weight-initialization
experiment), and reduce, inside the compiled program, every layer to one number per quantity:

    var_f          Var[f_k]        k = 0..K     (f_K is the output)
    var_h          Var[h_k]        k = 1..K
    var_dl_df      Var[dl/df_k]    k = 0..K
    var_dl_dh      Var[dl/dh_k]    k = 1..K
    var_dl_domega  mean square of the per-example weight gradient dl/dOmega_k = dl/df_k h_k^T
                   (h_0 = x), k = 0..K: E_i[mean_j (dl/df_k,ij)^2 mean_m h_k,im^2]

Variances are pooled over units and examples of one network (as the book's notebook does), and
returned as log10 values, so nothing overflows or underflows in float32:

* Backward, always: dl/df_{k-1} = a'[f_{k-1}] * (Omega_k^T dl/df_k) is linear in dl/df_k, so
  we rescale the gradient to unit RMS after every layer and carry the scale in log10.
* Forward, when the activation is positively homogeneous (ReLU, leaky ReLU, identity) and the
  biases are zero: a[c f] = c a[f] for c > 0, so f_k is rescaled to unit RMS after every layer and
  its scale carried in log10; a'[f] (a sign) does not change. This is exact, not an approximation.
* Otherwise the forward pass runs directly in the working dtype; a variance that overflows,
  underflows to zero or is NaN is flagged (never returned as a measurement). Bounded activations
  (tanh, sigmoid, softsign) cannot overflow forward.

Seeds run through `lax.map` in chunks of vmapped networks, so memory is bounded for any number
of seeds, and configurations that differ only in a weight-variance multiplier (the five sigma2
of the figure) share one compiled program.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initjax import theory
from initjax.activations import (POSITIVELY_HOMOGENEOUS, check_activation, get_activation,
                                 get_activation_derivative)
from initjax.networks import init_mlp

QUANTITIES = ("var_f", "var_h", "var_dl_dh", "var_dl_df", "var_dl_domega")
FORWARD = ("var_f", "var_h")
_LOG10_E = math.log10(math.e)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# One network.

def _pooled_log10_var(v, log10_scale):
  """log10 of the variance over all entries of v * 10**log10_scale (v is rescaled)."""
  mean = jnp.mean(v)
  var = jnp.maximum(jnp.mean(jnp.square(v)) - jnp.square(mean), 0.0)
  return jnp.log10(var) + 2.0 * log10_scale


def _rms_rescale(v):
  """(v / rms(v), log10 rms(v)); an all-zero v is left as is (its variance is then 0: flagged)."""
  ms = jnp.mean(jnp.square(v))
  ok = ms > 0
  rms = jnp.sqrt(jnp.where(ok, ms, 1.0))
  return v / rms, jnp.where(ok, jnp.log10(rms), 0.0)


def network_statistics(params: dict, x_NxD: jax.Array, activation: str = "relu", *,
                       log_space: bool) -> dict[str, jax.Array]:
  """log10 per-layer statistics of one network for the least-squares loss with y = 0.

  Args:
    params: from `initjax.networks.init_mlp`.
    x_NxD: the batch of inputs.
    activation: activation name.
    log_space: rescale the forward pass and carry its scale in log10. Exact only for positively
      homogeneous activations with zero biases; the caller decides (`uses_log_space`).

  Returns:
    {quantity: log10 values per layer} with the layer ranges of the module docstring. Non-finite
    entries (-inf for a variance that is exactly zero or underflowed, +inf/NaN for overflow) mark
    values that could not be measured.
  """
  a = get_activation(activation)
  da = get_activation_derivative(activation)
  dtype = x_NxD.dtype

  def forward(f_prev, log_scale_prev, omega, beta):
    h = a(f_prev)                     # true h = 10**log_scale_prev * h when log_space
    f = h @ omega.T + beta
    if log_space:
      f, step = _rms_rescale(f)
      log_scale = log_scale_prev + step
    else:
      log_scale = log_scale_prev
    return h, f, log_scale

  zero = jnp.zeros((), dtype)
  f0 = x_NxD @ params["omega_0"].T + params["beta_0"]
  if log_space:
    f0, s0 = _rms_rescale(f0)
  else:
    s0 = zero

  def fwd_layer(carry, layer):
    f_prev, s_prev = carry
    h, f, s = forward(f_prev, s_prev, *layer)
    return (f, s), (f_prev, s_prev, h)

  (f_last_hidden, s_last_hidden), (f_stack, s_stack, h_stack) = jax.lax.scan(
      fwd_layer, (f0, s0), (params["omega_hidden"], params["beta_hidden"]))
  # f_stack/s_stack: f_0..f_{K-2}; h_stack: h_1..h_{K-1}. Append the last hidden layer and output.
  h_K, f_out, s_out = forward(f_last_hidden, s_last_hidden, params["omega_out"],
                              params["beta_out"])
  f_hidden = jnp.concatenate([f_stack, f_last_hidden[None]], axis=0)       # f_0..f_{K-1}
  s_hidden = jnp.concatenate([s_stack, s_last_hidden[None]], axis=0)
  h_all = jnp.concatenate([h_stack, h_K[None]], axis=0)                    # h_1..h_K
  log_var_f = jnp.concatenate([
      jax.vmap(_pooled_log10_var)(f_hidden, s_hidden),
      _pooled_log10_var(f_out, s_out)[None]])
  log_var_h = jax.vmap(_pooled_log10_var)(h_all, s_hidden)
  log10_m2_h = jnp.log10(jnp.mean(jnp.square(h_all), axis=2)) + 2.0 * s_hidden[:, None]  # (K, N)
  log10_m2_x = jnp.log10(jnp.mean(jnp.square(x_NxD), axis=1))                           # (N,)

  # Backward. dl/df_K = 2 f_K (y = 0); rescaled, with its scale in log10.
  g, gs = _rms_rescale(2.0 * f_out)
  gs = gs + s_out

  def per_example_weight_grad(g_NxD, g_scale, log10_m2_in_N):
    # log10 E_i[mean_j g_ij^2 * mean_m h_im^2], with both factors' scales in log10.
    log_terms = jnp.log10(jnp.mean(jnp.square(g_NxD), axis=1)) + log10_m2_in_N
    peak = jnp.max(log_terms)
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    return peak + jnp.log10(jnp.mean(10.0 ** (log_terms - peak))) + 2.0 * g_scale

  def bwd_layer(carry, layer):
    g_k, gs_k = carry                             # dl/df_k (rescaled), k = K..1
    omega, f_prev, log10_m2_h_k = layer
    dl_dh = g_k @ omega                           # Omega_k^T dl/df_k, per example
    log_dh = _pooled_log10_var(dl_dh, gs_k)
    log_domega = per_example_weight_grad(g_k, gs_k, log10_m2_h_k)
    log_df_k = _pooled_log10_var(g_k, gs_k)
    g_prev = da(f_prev) * dl_dh                   # a'[f] is scale-free for homogeneous a
    g_prev, step = _rms_rescale(g_prev)
    return (g_prev, gs_k + step), (log_df_k, log_dh, log_domega)

  # The output layer has its own shape (D_out, D_h): run it first, then scan the stacked ones.
  carry, (ldf_K, ldh_K, ldo_K) = bwd_layer((g, gs), (params["omega_out"], f_hidden[-1],
                                                     log10_m2_h[-1]))
  carry, (ldf, ldh, ldo) = jax.lax.scan(
      bwd_layer, carry,
      (params["omega_hidden"], f_hidden[:-1], log10_m2_h[:-1]), reverse=True)
  g_0, gs_0 = carry
  log_df_0 = _pooled_log10_var(g_0, gs_0)
  log_do_0 = per_example_weight_grad(g_0, gs_0, log10_m2_x)
  return {
      "var_f": log_var_f,
      "var_h": log_var_h,
      "var_dl_dh": jnp.concatenate([ldh, ldh_K[None]]),                    # h_1..h_K
      "var_dl_df": jnp.concatenate([log_df_0[None], ldf, ldf_K[None]]),    # f_0..f_K
      "var_dl_domega": jnp.concatenate([log_do_0[None], ldo, ldo_K[None]]),  # Omega_0..Omega_K
  }


def uses_log_space(activation: str, bias_variance: float) -> bool:
  """Whether the forward rescaling is exact: positively homogeneous activation, zero biases."""
  return activation in POSITIVELY_HOMOGENEOUS and bias_variance == 0.0


# ------------------------------------------------------------------------------------------------
# Many networks.

@dataclasses.dataclass(frozen=True)
class NetworkSpec:
  """The shape of the experiment: an MLP, its inputs and how it is initialized."""
  input_dim: int = 100
  width: int = 100
  depth: int = 50
  output_dim: int = 1
  activation: str = "relu"
  bias_variance: float = 0.0
  batch_size: int = 1000       # inputs per network

  def validate(self) -> "NetworkSpec":
    for name in ("input_dim", "width", "depth", "output_dim", "batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
    check_activation(self.activation)
    if self.bias_variance < 0:
      raise ValueError(f"bias_variance must be >= 0; got {self.bias_variance}")
    return self


def layer_counts(depth: int) -> dict[str, int]:
  """Number of layers per quantity (f and weights: K+1; h and dl/dh: K)."""
  return {"var_f": depth + 1, "var_h": depth, "var_dl_dh": depth, "var_dl_df": depth + 1,
          "var_dl_domega": depth + 1}


def layer_indices(quantity: str, depth: int) -> np.ndarray:
  """The book's layer index k of each value: 0..K, or 1..K for h_k and dl/dh_k."""
  return np.arange(1, depth + 1) if quantity in ("var_h", "var_dl_dh") else np.arange(depth + 1)


def _resolve_init(weight_init) -> Callable:
  if isinstance(weight_init, str):
    from initjax.initializers import get_initializer  # pylint: disable=import-outside-toplevel
    return get_initializer(weight_init)
  return weight_init


@functools.lru_cache(maxsize=64)
def _compiled(spec: NetworkSpec, weight_init: Any, dtype_name: str, seed_chunk: int,
              log_space: bool):
  init_fn = _resolve_init(weight_init)
  dtype = jnp.dtype(dtype_name)
  bias_init = None
  if spec.bias_variance > 0:
    from initjax.initializers import normal  # pylint: disable=import-outside-toplevel
    bias_init = normal(spec.bias_variance)

  def one(key_and_scale):
    key, scale = key_and_scale
    k_params, k_x = jax.random.split(key)
    params = init_mlp(k_params, input_dim=spec.input_dim, width=spec.width, depth=spec.depth,
                      output_dim=spec.output_dim, weight_init=init_fn, bias_init=bias_init,
                      dtype=dtype)
    root = jnp.sqrt(scale).astype(dtype)
    params = {name: (p * root if name.startswith("omega") else p) for name, p in params.items()}
    x_NxD = jax.random.normal(k_x, (spec.batch_size, spec.input_dim), dtype)
    return network_statistics(params, x_NxD, spec.activation, log_space=log_space)

  @jax.jit
  def run(keys, scales):
    return jax.lax.map(one, (keys, scales), batch_size=seed_chunk)

  return run


def default_seed_chunk(spec: NetworkSpec, memory_bytes: float = 1.0e9, itemsize: int = 4) -> int:
  """Seeds per vmapped chunk so that the stored activations stay within `memory_bytes`.

  A network keeps about 4 arrays of (K, N, D_h) alive (f, h and their gradients).
  """
  per_seed = 4.0 * spec.depth * spec.batch_size * max(spec.width, spec.input_dim) * itemsize
  return int(max(1, min(256, memory_bytes // per_seed)))


def measure(key: jax.Array, spec: NetworkSpec, *, weight_init: str | Callable = "normal",
            scales: Sequence[float] = (1.0,), num_seeds: int = 100, dtype: Any = jnp.float32,
            seed_chunk: int | None = None, log_space: bool | None = None
            ) -> dict[str, np.ndarray]:
  """Per-seed, per-layer log10 statistics for every weight-variance multiplier in `scales`.

  Every weight matrix drawn by `weight_init` is multiplied by sqrt(scale): with the registered
  `normal` initializer (unit variance) `scales` are the book's sigma2_Omega values; with
  `he_normal` a scale of 1 is He. Seed s uses the same key for every scale (paired draws), and
  all scales and seeds run in one compiled call, in chunks of `seed_chunk` vmapped networks.

  Returns:
    {quantity: float64 array (len(scales), num_seeds, layers)} of log10 values; non-finite
    entries could not be measured (see `flag_invalid`).
  """
  spec.validate()
  if num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1; got {num_seeds}")
  scales = [float(s) for s in scales]
  if not scales or any(not s > 0 for s in scales):
    raise ValueError(f"scales (weight variances) must be > 0; got {scales}")
  dtype = jnp.dtype(dtype)
  if dtype == jnp.float64 and not jax.config.jax_enable_x64:
    raise ValueError("dtype float64 needs jax.config.update('jax_enable_x64', True) first")
  if log_space is None:
    log_space = uses_log_space(spec.activation, spec.bias_variance)
  if seed_chunk is None:
    seed_chunk = default_seed_chunk(spec, itemsize=dtype.itemsize)
  n_items = len(scales) * num_seeds
  seed_chunk = int(max(1, min(seed_chunk, n_items)))
  keys = jax.random.split(key, num_seeds)
  keys_all = jnp.concatenate([keys] * len(scales), axis=0)
  scales_all = jnp.repeat(jnp.asarray(scales, dtype), num_seeds)
  # Pad to a whole number of chunks: lax.map would compile its remainder separately.
  pad = -n_items % seed_chunk
  if pad:
    keys_all = jnp.concatenate([keys_all, keys_all[:pad]], axis=0)
    scales_all = jnp.concatenate([scales_all, scales_all[:pad]], axis=0)
  run = _compiled(spec, weight_init, dtype.name, seed_chunk, bool(log_space))
  out = run(keys_all, scales_all)
  return {q: np.asarray(v[:n_items], dtype=np.float64).reshape(len(scales), num_seeds, -1)
          for q, v in out.items()}


def flag_invalid(values: np.ndarray) -> np.ndarray:
  """True where a log10 value is not a measurement (overflow, underflow to zero, NaN)."""
  return ~np.isfinite(values)


# ------------------------------------------------------------------------------------------------
# Summaries across seeds and comparison with theory.

def _log10_mean(log_values: np.ndarray) -> float:
  peak = np.max(log_values)
  return float(peak + np.log10(np.mean(10.0 ** (log_values - peak))))


def summarize_seeds(log_values_SxL: np.ndarray) -> dict[str, np.ndarray]:
  """Across-seed summaries per layer, from log10 values; flagged seeds are left out.

  Returns log10 of the mean, and the median, 5% and 95% quantiles (quantiles commute with log),
  the number of flagged seeds, per layer; NaN where every seed is flagged.
  """
  num_layers = log_values_SxL.shape[1]
  out = {k: np.full(num_layers, np.nan) for k in ("log10_mean", "log10_median", "log10_q05",
                                                   "log10_q95")}
  out["num_flagged"] = np.zeros(num_layers, dtype=int)
  for layer in range(num_layers):
    v = log_values_SxL[:, layer]
    good = v[np.isfinite(v)]
    out["num_flagged"][layer] = v.size - good.size
    if good.size:
      out["log10_mean"][layer] = _log10_mean(good)
      out["log10_median"][layer], out["log10_q05"][layer], out["log10_q95"][layer] = (
          np.quantile(good, [0.5, 0.05, 0.95]))
  return out


def slope_per_layer(layers: np.ndarray, log_values: np.ndarray) -> float:
  """Least-squares slope of log10 values against layer index (decades per layer)."""
  ok = np.isfinite(log_values)
  if ok.sum() < 2:
    return float("nan")
  return float(np.polyfit(layers[ok], log_values[ok], 1)[0])


def theory_for(spec: NetworkSpec, weight_init: str | Callable, scale: float,
               init_kwargs: dict | None = None) -> theory.MLPPrediction | None:
  """Theory for a registered initializer (per-layer variance from its fans) times `scale`."""
  if not isinstance(weight_init, str):
    return None
  from initjax.initializers import expected_variance  # pylint: disable=import-outside-toplevel
  kw = dict(init_kwargs or {})
  fans = [(spec.input_dim, spec.width)] + [(spec.width, spec.width)] * (spec.depth - 1) + [
      (spec.width, spec.output_dim)]
  sigma2 = [scale * expected_variance(weight_init, shape, **kw) for shape in fans]
  return theory.predict_mlp(input_dim=spec.input_dim, width=spec.width, depth=spec.depth,
                            output_dim=spec.output_dim, sigma2_omega=sigma2,
                            sigma2_beta=spec.bias_variance, activation=spec.activation,
                            input_second_moment=1.0)
