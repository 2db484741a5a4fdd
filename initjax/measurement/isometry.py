"""Jacobian spectra of many random MLPs at once: how far from an isometry a deep network starts.

For the book's MLP (`initjax.nn.networks`: h_0 = x, f_{k-1} = Omega_{k-1} h_{k-1} + beta_{k-1},
h_k = a[f_{k-1}]) the Jacobian of layer k's activations with respect to the input, at a point x,

    J_k = dh_k / dx = D_k Omega_{k-1} D_{k-1} Omega_{k-2} ... D_1 Omega_0,   D_k = diag(a'[f_{k-1}])

is Pennington, Schoenholz & Ganguli's (2017) J = prod_{l=1}^{L} D^l W^l with L = k weight
matrices. Its spectrum is that of J_k J_k^T: D_h eigenvalues lambda_i = s_i^2 (the singular
values of J_k, padded with zeros when D_in < D_h). Dynamical isometry means every s_i close to 1.

`jacobian_spectra` builds J_1, ..., J_K in the `lax.scan` over the hidden layers,
J_k = D_k Omega_{k-1} J_{k-1} (one (D_h x D_h) @ (D_h x D_in) product per layer, cheaper than
`jax.jacfwd`, which pushes the same D_in tangents through the same products plus the rest of the
network), and takes the SVD only at the layers asked for (`svd_layers`: a mask, so any choice
shares one program). Exact at any depth: J_k is rescaled after every layer so that
(1/D_h) ||J_k||_F^2 = 1 and the log10 of the factor is carried (J_k is linear in J_{k-1}); the
forward pass is rescaled too where that is exact (positively homogeneous activation, zero
biases: a'[c f] = a'[f]). So mean(s^2) at every layer is exact and free:
log10 m_1(k) = log10 (1/D_h) tr J_k J_k^T.

`measure` does that for many seeds (and settings that differ only in values: weight-variance
multipliers and the input variance share one compiled program), spread over the devices or CPU
cores by `initjax.core.parallel`. `summarize` reduces the spectra to moments, the largest singular
value and the condition number across networks; `histogram` to densities. Any other model:
`initjax.probe.jacobian_spectra`.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from initjax.core import _jax_internals, parallel
from initjax.measurement import propagation
from initjax.measurement.layer_statistics import log10_inv_rms, uses_log_space
from initjax.nn import activations
from initjax.nn.initializers import draws_plain_normal, expected_variance, get_initializer

NetworkSpec = propagation.NetworkSpec   # batch_size = input points per network


# ------------------------------------------------------------------------------------------------
# One network.

def _normalized(j_DxI: jax.Array, log10_m1: jax.Array) -> tuple[jax.Array, jax.Array]:
  """J / sqrt(m) with m = (1/D) ||J||_F^2, and log10 m1 moved on by log10 m (-inf for J = 0)."""
  m = jnp.sum(jnp.square(j_DxI)) / j_DxI.shape[0]
  inv, log10_rms = log10_inv_rms(m)
  return j_DxI * inv, jnp.where(m > 0, log10_m1 + 2.0 * log10_rms, -jnp.inf)


def _svd_if(selected: jax.Array, j_DxI: jax.Array) -> jax.Array:
  r = min(j_DxI.shape)
  return jax.lax.cond(selected, lambda j: jnp.linalg.svd(j, compute_uv=False),
                      lambda j: jnp.zeros((r,), j.dtype), j_DxI)


def jacobian_spectra(params: dict, x_D: jax.Array, activation: str, svd_mask_K: jax.Array,
                     log_space: bool = False) -> dict[str, jax.Array]:
  """J_1..J_K of one MLP at one input x (D_in,); see the module docstring.

  Args:
    params: from `initjax.nn.networks.init_mlp` (the output layer is not used).
    svd_mask_K: (K,) bools, True where the singular values of J_k are wanted (k = 1..K).
    log_space: rescale the forward pass too (exact only for a positively homogeneous activation
      and zero biases, `initjax.measurement.layer_statistics.uses_log_space`).

  Returns:
    {"log10_m1": (K,) log10 (1/D_h) tr J_k J_k^T, "s_hat": (K, min(D_h, D_in)) the singular
    values of J_k / sqrt(m1(k)) in descending order where the mask is True, zeros elsewhere,
    "finite": (K,) whether h_1..h_k are all finite (else J_k is not a measurement: an overflow
    of the forward pass outside log space)}.
  """
  record = activations.get(activation)
  a, da = record.fn, record.derivative

  def forward(h_D, omega_DxD, beta_D):
    f_D = omega_DxD @ h_D + beta_D
    if log_space:                       # a[c f] = c a[f], a'[c f] = a'[f]: only the sign matters
      inv, _ = log10_inv_rms(jnp.mean(jnp.square(f_D)))
      f_D = f_D * inv
    return a(f_D), da(f_D)

  h_D, d_D = forward(x_D, params["omega_0"], params["beta_0"])
  j_DxI, log10_m1 = _normalized(d_D[:, None] * params["omega_0"], jnp.zeros((), x_D.dtype))
  finite = jnp.all(jnp.isfinite(h_D))
  first = (log10_m1, _svd_if(svd_mask_K[0], j_DxI), finite)

  def layer(carry, xs):
    h_D, j_DxI, log10_m1, finite = carry
    omega_DxD, beta_D, selected = xs
    h_D, d_D = forward(h_D, omega_DxD, beta_D)
    j_DxI, log10_m1 = _normalized(d_D[:, None] * (omega_DxD @ j_DxI), log10_m1)
    finite = finite & jnp.all(jnp.isfinite(h_D))
    return (h_D, j_DxI, log10_m1, finite), (log10_m1, _svd_if(selected, j_DxI), finite)

  _, rest = jax.lax.scan(layer, (h_D, j_DxI, log10_m1, finite),
                         (params["omega_hidden"], params["beta_hidden"], svd_mask_K[1:]))
  names = ("log10_m1", "s_hat", "finite")
  return {n: jnp.concatenate([f[None], r]) for n, f, r in zip(names, first, rest)}


def jacobian_flops(spec: NetworkSpec) -> float:
  """Multiply-adds x 2 of one network's Jacobian products at one input point (SVDs, random
  numbers and the forward pass not counted): 2 D_h^2 D_in per hidden layer after the first."""
  return 2.0 * spec.width * spec.width * spec.input_dim * (spec.depth - 1)


# ------------------------------------------------------------------------------------------------
# Many networks.

_TRACES = [0]


def trace_count() -> int:
  """How many programs `measure` has traced in this process (settings that differ only in
  values share one)."""
  return _TRACES[0]


@functools.lru_cache(maxsize=64)
def _seed_program(spec: NetworkSpec, weight_init: Any, dtype_name: str,
                  log_space: bool) -> Callable:
  init_fn = get_initializer(weight_init) if isinstance(weight_init, str) else weight_init

  def one(item, mask_K):
    _TRACES[0] += 1                     # runs when a program is traced, not when it runs
    key, scale, input_std = item
    params, x_PxD = propagation.network_for_seed(key, spec, init_fn, scale,
                                                 jnp.dtype(dtype_name))
    per_point = lambda x_D: jacobian_spectra(params, x_D, spec.activation, mask_K, log_space)
    return jax.vmap(per_point)(x_PxD * input_std)
  return one


def _svd_mask(depth: int, svd_layers: Sequence[int]) -> np.ndarray:
  layers = sorted({int(k) for k in svd_layers})
  if not layers or layers[0] < 1 or layers[-1] > depth:
    raise ValueError(f"svd_layers must be layer indices k in 1..{depth} (J_k = dh_k/dx); got "
                     f"{list(svd_layers)}")
  mask = np.zeros(depth, bool)
  mask[np.array(layers) - 1] = True
  return mask


def measure(key: jax.Array, spec: NetworkSpec, *, weight_init: str | Callable = "normal",
            scales: Sequence[Any] = (1.0,), input_variances: Sequence[float] | None = None,
            svd_layers: Sequence[int] | None = None, num_seeds: int = 100,
            dtype: Any = jnp.float32, seed_chunk: int | None = None,
            num_devices: int | None = None) -> dict[str, Any]:
  """Jacobian spectra of `num_seeds` random MLPs per setting, at `spec.batch_size` input points.

  Settings: every weight matrix drawn by `weight_init` is multiplied by sqrt(scale) (one value
  per setting, or K + 1 per-layer values), and the network's inputs are N(0, input_variance) per
  coordinate (default 1: set it to (q* - sigma2_b) / sigma2_w to start at the fixed point). All
  settings and seeds run in one compiled program per network shape and initializer (plain
  normals, He/Xavier/LeCun included, all share one); seed s has the same key in every setting.

  Returns:
    {"svd_layers": (n,) the layers k whose singular values were taken (default: 1, 2, 4, ...
     and K), "width": D_h, "log10_m1": float64 (settings, seeds, points, K) (-inf: J_k = 0),
     "singular_values": float64 (settings, seeds, points, n, min(D_h, D_in)), descending, with
     their scale}. NaN where the forward pass overflowed (outside log space), inf where
     10**log10 exceeds float64: `flag_invalid`.
  """
  spec.validate()
  if num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1; got {num_seeds}")
  if svd_layers is None:
    svd_layers = sorted({2 ** i for i in range(int(math.log2(spec.depth)) + 1)} | {spec.depth})
  mask = _svd_mask(spec.depth, svd_layers)
  input_variances = [1.0] * len(scales) if input_variances is None else list(input_variances)
  if len(input_variances) != len(scales) or not all(
      math.isfinite(v) and v > 0 for v in input_variances):
    raise ValueError(f"input_variances: one finite value > 0 per setting ({len(scales)}); got "
                     f"{input_variances}")
  dtype = jnp.dtype(dtype)
  if dtype == jnp.float64 and not jax.config.jax_enable_x64:
    raise ValueError("dtype float64 needs jax.config.update('jax_enable_x64', True) first")
  scales = [np.asarray(s, np.float64) for s in scales]
  if any(not (np.all(np.isfinite(s)) and np.all(s > 0)) for s in scales):
    raise ValueError(f"scales (weight-variance multipliers) must be finite and > 0; got {scales}")
  if isinstance(weight_init, str) and weight_init != "normal" and draws_plain_normal(weight_init):
    per_layer = np.array([expected_variance(weight_init, s)
                          for s in propagation.kernel_shapes(spec)])
    scales, weight_init = [s * per_layer for s in scales], "normal"
  work = parallel.workers(parallel.local_devices(num_devices), uses_lapack=True)  # the SVDs
  if seed_chunk is None:
    seed_chunk = propagation.default_seed_chunk(spec, work[0], itemsize=dtype.itemsize)
  one = _seed_program(spec, weight_init, dtype.name,
                      uses_log_space(spec.activation, spec.bias_variance))
  keys = jax.random.split(key, num_seeds)
  index = np.arange(len(scales) * num_seeds)
  setting = index // num_seeds
  stacked = np.stack([np.broadcast_to(s, scales[0].shape) for s in scales]) if all(
      s.shape == scales[0].shape for s in scales) else None
  if stacked is None:
    raise ValueError("scales: every setting needs the same number of values")
  items = (keys[index % num_seeds], jnp.asarray(stacked[setting], dtype),
           jnp.asarray(np.sqrt(np.asarray(input_variances))[setting], dtype))
  out = parallel.map_items(one, items, chunk=seed_chunk, worker_devices=work,
                           shared=jnp.asarray(mask),
                           lower_context=_jax_internals.unrolled_threefry_on_cpu)
  shape = (len(scales), num_seeds, spec.batch_size)
  log10_m1 = np.asarray(out["log10_m1"], np.float64).reshape(shape + (spec.depth,))
  finite = np.asarray(out["finite"], bool).reshape(shape + (spec.depth,))
  log10_m1[~finite] = np.nan
  s_hat = np.asarray(out["s_hat"], np.float64)[..., mask, :].reshape(shape + (mask.sum(), -1))
  with np.errstate(over="ignore", invalid="ignore"):
    s = s_hat * 10.0 ** (0.5 * log10_m1[..., mask])[..., None]
  return {"svd_layers": np.flatnonzero(mask) + 1, "width": spec.width, "log10_m1": log10_m1,
          "singular_values": s}


def flag_invalid(values: np.ndarray) -> np.ndarray:
  """True where a value is not a measurement (overflow, NaN)."""
  return ~np.isfinite(values)


# ------------------------------------------------------------------------------------------------
# Summaries across networks.

def _per_network(values_SxP: np.ndarray) -> np.ndarray:
  """The mean over a network's input points (its points are not independent samples)."""
  return np.mean(values_SxP, axis=-1)


def summarize(s_SxPxR: np.ndarray, units: int, dtype: Any = np.float32) -> dict[str, float]:
  """Moments of the spectrum of J J^T pooled over networks and points (the expected empirical
  spectral distribution, which free probability predicts), from singular values (seeds, points,
  r) of one layer; `units` = D_h eigenvalues per network (zeros pad r < D_h).

  mean_s2 = E[m_1], m_1 = (1/D_h) sum_i s_i^2; m2_s2 = E[m_2], m_2 = (1/D_h) sum_i s_i^4;
  var_s2 = E[m_2] - E[m_1]^2 (the variance of the pooled eigenvalue distribution);
  normalized_var = var_s2 / mean_s2^2. Their standard errors come from the spread of the
  per-network values (points of one network averaged first). max_s: the largest singular value
  per network (mean and 5/50/95% quantiles); condition number s_max / s_min per network (median)
  and the fraction of networks where s_min is resolved, s_min > s_max * eps * sqrt(D_h) (below
  that float rounding decides it: the median is then a lower bound). Networks with a non-finite
  value are left out and counted (num_flagged).
  """
  s_SxPxR = np.asarray(s_SxPxR, np.float64)
  ok = np.all(np.isfinite(s_SxPxR), axis=(1, 2))
  s = s_SxPxR[ok]
  n = int(s.shape[0])
  out = {"num_networks": n, "num_flagged": int((~ok).sum())}
  if n == 0:
    return out
  m1 = _per_network(np.sum(s ** 2, axis=-1) / units)
  m2 = _per_network(np.sum(s ** 4, axis=-1) / units)
  mean, second = float(np.mean(m1)), float(np.mean(m2))
  se = lambda v: float(np.std(v, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
  s_max, s_min = s[..., 0], s[..., -1] if s.shape[-1] == units else np.zeros_like(s[..., 0])
  resolved = s_min > s_max * float(jnp.finfo(dtype).eps) * math.sqrt(units)
  with np.errstate(divide="ignore"):
    condition = s_max / s_min
  q05, q50, q95 = np.quantile(np.max(s_max, axis=-1), [0.05, 0.5, 0.95])
  out.update(mean_s2=mean, mean_s2_se=se(m1), m2_s2=second, m2_s2_se=se(m2),
             var_s2=second - mean ** 2, normalized_var=second / mean ** 2 - 1.0,
             max_s_mean=float(np.mean(s_max)), max_s_q05=float(q05), max_s_median=float(q50),
             max_s_q95=float(q95), condition_median=float(np.median(condition)),
             condition_resolved=float(np.mean(resolved)))
  return out


def log10_mean_m1(log10_m1_SxPxK: np.ndarray) -> np.ndarray:
  """log10 E[m_1(k)] per layer over networks and points, from log10 values (no overflow)."""
  v = np.asarray(log10_m1_SxPxK, np.float64).reshape(-1, log10_m1_SxPxK.shape[-1])
  return special.logsumexp(v * math.log(10.0), axis=0) / math.log(10.0) - math.log10(v.shape[0])


def histogram(s_SxPxR: np.ndarray, units: int, edges: np.ndarray) -> np.ndarray:
  """Density per unit of log10 s^2 of the pooled eigenvalues of J J^T in the bins `edges`
  (log10 s^2); zero eigenvalues (s = 0, and the padding of r < D_h) are left out, so the
  densities integrate to the fraction of nonzero eigenvalues."""
  s = np.asarray(s_SxPxR, np.float64).reshape(-1, s_SxPxR.shape[-1])
  s = s[np.all(np.isfinite(s), axis=1)]
  with np.errstate(divide="ignore"):
    t = np.log10(np.square(s[s > 0]))
  counts, _ = np.histogram(t, bins=edges)
  return counts / (max(s.shape[0], 1) * units * np.diff(edges))
