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

Performance (see scripts/benchmark.py). The rescaling costs no pass over the (N x D)
activations: a layer's 1/RMS is folded into the next (D x D) weight matrix (exact: the next
layer is linear, and a[c f] = c a[f]). Each layer's statistics take one reduction per quantity:
the sum of f_k (and of dl/dh_k) is linear in the layer's input, so it comes from the input's
column sums; the per-example squares of h_k and dl/df_k give both the pooled variances and the
weight-gradient statistic. The backward pass keeps only the sign of f_k (one byte per unit)
for a homogeneous activation. On a CPU, XLA runs the small per-layer products of one program on
one core, so `measure` shares the chunks out between one call of the program per core (from
threads), and it draws the weights with JAX's unrolled Threefry lowering (the one used on
accelerators: the same bits, about 25% less RNG time than the rolled CPU loop).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import os
import threading
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initjax import theory
from initjax.activations import (POSITIVELY_HOMOGENEOUS, check_activation, get_activation,
                                 get_activation_derivative)
from initjax.networks import init_mlp

QUANTITIES = ("var_f", "var_h", "var_dl_dh", "var_dl_df", "var_dl_domega")

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# One network.

def _log10_or_zero(ms):
  """(1 / sqrt(ms), log10 sqrt(ms)) for ms > 0; (1, 0) for ms == 0 (an all-zero array)."""
  ok = ms > 0
  safe = jnp.where(ok, ms, 1.0)
  return jax.lax.rsqrt(safe), jnp.where(ok, 0.5 * jnp.log10(safe), 0.0)


def _log10_var(total, total_sq, count, log10_scale):
  """log10 of the pooled variance from the sum and the sum of squares of `count` entries."""
  # The barrier keeps XLA from rewriting (total / count)**2 as total**2 / count**2, which
  # overflows on the direct (not rescaled) path long before the variance does.
  mean, mean_sq = jax.lax.optimization_barrier((total / count, total_sq / count))
  var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
  return jnp.log10(var) + 2.0 * log10_scale


def _barrier(x):
  """Keeps XLA's simplifier from turning a sum of per-example (or per-unit) sums back into a
  second full pass over the (N, D) array."""
  return jax.lax.optimization_barrier(x)


def _sum_of_linear(u_colsum, omega, mult, beta, n):
  """Sum over all entries of u @ (mult * omega)^T + beta, from the column sums of u."""
  return mult * jnp.dot(u_colsum, jnp.sum(omega, axis=0)) + n * jnp.sum(beta)


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

  Implementation (every step exact in real arithmetic; see the module docstring): a layer's
  1/RMS rescaling is folded into the next (D x D) weight matrix instead of dividing the (N x D)
  activations; the sum of a layer's outputs comes from the column sums of its input (linear);
  for a positively homogeneous activation the backward pass needs only the sign of f_k, stored
  as a boolean mask, otherwise a'[f_k] itself is stored.
  """
  a = get_activation(activation)
  da = get_activation_derivative(activation)
  dtype = x_NxD.dtype
  n = x_NxD.shape[0]
  homogeneous = activation in POSITIVELY_HOMOGENEOUS
  fold = log_space and homogeneous          # a[c f] = c a[f]: fold 1/rms into the next weights
  one = jnp.ones((), dtype)
  zero = jnp.zeros((), dtype)

  def layer(u, mult, omega, beta):
    return u @ (omega * mult).T + beta

  # ---- Forward. f_raw_k = u_k @ (m_k Omega_k^T) + beta_k with u_0 = x and u_k = h_k, raw:
  # the true f_k is f_raw_k * 10**sig_k, where sig_k is the log10 of the product of the RMS
  # of f_0..f_{k-1} (0 without log_space). With the rescaling folded (homogeneous a),
  # u_{k+1} = a[f_raw_k] has the scale sig_k and m_{k+1} = 1 / rms(f_raw_k); otherwise
  # u_{k+1} = a[f_raw_k / rms(f_raw_k)] (the scale moves on by the rms) and m_{k+1} = 1.
  # The sum of f_raw_k comes from the column sums of u_k (f is linear in u).
  def fwd_layer(u, u_colsum, mult, sig, omega, beta):
    """Layer k: f_k from u_k, its statistics, and u_{k+1} = a[f_k] with its statistics."""
    f_raw = layer(u, mult, omega, beta)
    d = f_raw.shape[-1]
    f_sum = _sum_of_linear(u_colsum, omega, mult, beta, n)
    f_sq = jnp.sum(jnp.square(f_raw))
    log_var_f = _log10_var(f_sum, f_sq, n * d, sig)
    if log_space:
      inv_rms, step = _log10_or_zero(f_sq / (n * d))
    else:
      inv_rms, step = one, zero
    if fold or not log_space:
      u_next = a(f_raw)
      u_sig, mult_next = sig, inv_rms
    else:
      u_next = a(f_raw * inv_rms)
      u_sig, mult_next = sig + step, one
    if homogeneous:
      saved = f_raw > 0                       # a'[f] depends only on the sign: a bool mask
    else:
      saved = da(f_raw * inv_rms) if log_space else da(f_raw)
    colsum = _barrier(jnp.sum(u_next, axis=0))
    sq_N = _barrier(jnp.sum(jnp.square(u_next), axis=1))
    log_var_h = _log10_var(jnp.sum(colsum), jnp.sum(sq_N), n * d, u_sig)
    return (u_next, colsum, mult_next, sig + step), (saved, sq_N, u_sig, log_var_f, log_var_h)

  def fwd_step(carry, xs):
    return fwd_layer(*carry, *xs)

  carry0, (saved_0, u_sq_1, u_sig_1, lvf_0, lvh_1) = fwd_layer(
      x_NxD, jnp.sum(x_NxD, axis=0), one, zero, params["omega_0"], params["beta_0"])
  carry, (saved_s, u_sq_s, u_sig_s, lvf_s, lvh_s) = jax.lax.scan(
      fwd_step, carry0, (params["omega_hidden"], params["beta_hidden"]))
  # saved_s, lvf_s: layers 1..K-1; u_sq_s, u_sig_s, lvh_s: h_2..h_K.
  u_K, u_K_colsum, mult_K, sig_out = carry
  f_out = layer(u_K, mult_K, params["omega_out"], params["beta_out"])
  d_out = f_out.shape[-1]
  f_out_sum = _sum_of_linear(u_K_colsum, params["omega_out"], mult_K, params["beta_out"], n)
  lvf_out = _log10_var(f_out_sum, jnp.sum(jnp.square(f_out)), n * d_out, sig_out)

  # ---- Backward. G_k raw: the true dl/df_k is G_k * 10**gam_k. dl/dh_k = (G_k / rms(G_k))
  # Omega_k has the scale gam_k + log10 rms(G_k) (the rescaling, folded into Omega_k), and so
  # has G_{k-1} = a'[f_{k-1}] * dl/dh_k. The sum of dl/dh_k comes from the column sums of G_k.
  def grad_of(saved, dl_dh):
    if homogeneous:
      return da(saved.astype(dtype)) * dl_dh  # a'(1) or a'(0): the derivative's two values
    return saved * dl_dh

  def bwd_matmul(g, g_colsum, g_sq, gam, omega):
    """dl/dh_k from G_k, and its log10 variance."""
    inv_rms, step = _log10_or_zero(g_sq / g.size)
    dl_dh = g @ (omega * inv_rms)
    dh_sum = inv_rms * jnp.dot(g_colsum, jnp.sum(omega, axis=1))
    log_var_dh = _log10_var(dh_sum, jnp.sum(jnp.square(dl_dh)), dl_dh.size, gam + step)
    return dl_dh, gam + step, log_var_dh

  def bwd_mask(saved, dl_dh, gam):
    """G_{k-1} = a'[f_{k-1}] * dl/dh_k, its column sums, per-example and total sums of squares."""
    g = grad_of(saved, dl_dh)
    colsum = _barrier(jnp.sum(g, axis=0))
    sq_N = _barrier(jnp.sum(jnp.square(g), axis=1))
    sq = jnp.sum(sq_N)
    log_var_df = _log10_var(jnp.sum(colsum), sq, g.size, gam)
    return (g, colsum, sq, gam), sq_N, log_var_df

  def bwd_step(carry, xs):
    dl_dh, gam = carry                         # dl/dh_{k+1} and its scale
    saved, omega = xs                          # a'[f_k] (or its sign), Omega_k
    g_carry, sq_N, log_var_df = bwd_mask(saved, dl_dh, gam)
    dl_dh_k, gam_k, log_var_dh = bwd_matmul(*g_carry, omega)
    return (dl_dh_k, gam_k), (log_var_df, sq_N, gam, log_var_dh)

  g_out = 2.0 * f_out                         # dl/df_K for y = 0
  go_sq_N = jnp.sum(jnp.square(g_out), axis=1)
  go_sq = jnp.sum(go_sq_N)
  go_colsum = jnp.sum(g_out, axis=0)
  lvdf_out = _log10_var(jnp.sum(go_colsum), go_sq, g_out.size, sig_out)
  dl_dh_K, gam_K, lvdh_K = bwd_matmul(g_out, go_colsum, go_sq, sig_out, params["omega_out"])
  (dl_dh_1, gam_1), (lvdf_s, g_sq_s, gam_s, lvdh_s) = jax.lax.scan(
      bwd_step, (dl_dh_K, gam_K), (saved_s, params["omega_hidden"]), reverse=True)
  # lvdf_s, g_sq_s, gam_s: dl/df_1..dl/df_{K-1}; lvdh_s: dl/dh_1..dl/dh_{K-1}.
  _, g_sq_0, lvdf_0 = bwd_mask(saved_0, dl_dh_1, gam_1)

  # ---- Per-example weight gradients: log10 E_i[mean_j G_k,ij^2 mean_m u_k,im^2] + scales.
  x_sq_N = jnp.sum(jnp.square(x_NxD), axis=-1)
  in_sq = jnp.concatenate([x_sq_N[None], u_sq_1[None], u_sq_s])                  # (K+1, N)
  in_log_scale = jnp.concatenate([zero[None], u_sig_1[None], u_sig_s])            # (K+1,)
  g_sq = jnp.concatenate([g_sq_0[None], g_sq_s, go_sq_N[None]])                  # (K+1, N)
  g_log_scale = jnp.concatenate([gam_1[None], gam_s, sig_out[None]])
  num_layers = in_sq.shape[0]
  width = params["omega_0"].shape[0]
  log_widths = np.log10(np.array([x_NxD.shape[-1]] + [width] * (num_layers - 1), np.float64)
                        * np.array([width] * (num_layers - 1) + [d_out], np.float64))
  log_scale = 2.0 * (in_log_scale + g_log_scale) - log_widths.astype(dtype)
  if log_space:
    # Rescaled values are O(1): take the mean of the products directly, each factor divided
    # by its mean over examples (so every factor is <= N: nothing overflows).
    def normalized(sq_LxN):
      m = jnp.mean(sq_LxN, axis=1, keepdims=True)
      m = jnp.where(m > 0, m, 1.0)
      return sq_LxN / m, jnp.log10(m[:, 0])
    in_norm, in_log_m = normalized(in_sq)
    g_norm, g_log_m = normalized(g_sq)
    log_domega = jnp.log10(jnp.mean(in_norm * g_norm, axis=1)) + in_log_m + g_log_m + log_scale
  else:
    # The direct path may hold huge values: a log-sum-exp over examples.
    log_terms = jnp.log10(g_sq) + jnp.log10(in_sq)
    peak = jnp.max(log_terms, axis=1, keepdims=True)
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    log_domega = (peak[:, 0] + jnp.log10(jnp.mean(10.0 ** (log_terms - peak), axis=1))
                  + log_scale)

  return {
      "var_f": jnp.concatenate([lvf_0[None], lvf_s, lvf_out[None]]),
      "var_h": jnp.concatenate([lvh_1[None], lvh_s]),
      "var_dl_dh": jnp.concatenate([lvdh_s, lvdh_K[None]]),
      "var_dl_df": jnp.concatenate([lvdf_0[None], lvdf_s, lvdf_out[None]]),
      "var_dl_domega": log_domega,
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


def layer_indices(quantity: str, depth: int) -> np.ndarray:
  """The book's layer index k of each value: 0..K, or 1..K for h_k and dl/dh_k."""
  return np.arange(1, depth + 1) if quantity in ("var_h", "var_dl_dh") else np.arange(depth + 1)


def _resolve_init(weight_init) -> Callable:
  if isinstance(weight_init, str):
    from initjax.initializers import get_initializer  # pylint: disable=import-outside-toplevel
    return get_initializer(weight_init)
  return weight_init


def network_for_seed(key: jax.Array, spec: NetworkSpec, init_fn: Callable, scale: Any,
                     dtype: Any) -> tuple[dict, jax.Array]:
  """The network and the inputs of one seed of `measure`: init_mlp(k_params) with every weight
  matrix multiplied by sqrt(scale), and N standard-normal inputs from k_x."""
  dtype = jnp.dtype(dtype)
  bias_init = None
  if spec.bias_variance > 0:
    from initjax.initializers import normal  # pylint: disable=import-outside-toplevel
    bias_init = normal(spec.bias_variance)
  k_params, k_x = jax.random.split(key)
  params = init_mlp(k_params, input_dim=spec.input_dim, width=spec.width, depth=spec.depth,
                    output_dim=spec.output_dim, weight_init=init_fn, bias_init=bias_init,
                    dtype=dtype)
  root = jnp.sqrt(jnp.asarray(scale, dtype)).astype(dtype)
  params = {name: (p * root if name.startswith("omega") else p) for name, p in params.items()}
  x_NxD = jax.random.normal(k_x, (spec.batch_size, spec.input_dim), dtype)
  return params, x_NxD


@functools.lru_cache(maxsize=64)
def _compiled(spec: NetworkSpec, weight_init: Any, dtype_name: str, seed_chunk: int,
              log_space: bool):
  init_fn = _resolve_init(weight_init)
  dtype = jnp.dtype(dtype_name)

  def one(key_and_scale):
    key, scale = key_and_scale
    params, x_NxD = network_for_seed(key, spec, init_fn, scale, dtype)
    return network_statistics(params, x_NxD, spec.activation, log_space=log_space)

  @jax.jit
  def run(keys, scales):
    if seed_chunk == 1:                 # a plain loop: no vmap axis of size 1
      return jax.lax.map(one, (keys, scales))
    return jax.lax.map(one, (keys, scales), batch_size=seed_chunk)

  return run


_LOWERING_LOCK = threading.Lock()


@contextlib.contextmanager
def _unrolled_threefry_on_cpu():
  """Lowers jax.random's Threefry hash unrolled on the CPU while the block runs.

  JAX lowers Threefry-2x32 on the CPU as a rolled loop of 5 steps (small programs, but every step
  is a pass over memory); on accelerators it uses the unrolled form, a single fused kernel.
  Both compute the same bits. Private JAX internals: if they are not where we expect, the block
  runs with JAX's default lowering.
  """
  try:
    from jax._src.interpreters import mlir  # pylint: disable=import-outside-toplevel
    from jax._src.random import threefry2x32 as tf  # pylint: disable=import-outside-toplevel
    rolled, unrolled = tf._threefry2x32_cpu_lowering_rule, tf._threefry2x32_lowering_rule  # pylint: disable=protected-access
    prim = tf.threefry2x32_p
  except (ImportError, AttributeError):
    yield
    return
  with _LOWERING_LOCK:
    mlir.register_lowering(prim, unrolled, platform="cpu")
    try:
      yield
    finally:
      mlir.register_lowering(prim, rolled, platform="cpu")


@functools.lru_cache(maxsize=64)
def _executable(spec: NetworkSpec, weight_init: Any, dtype_name: str, seed_chunk: int,
                log_space: bool, keys_shape: tuple[int, ...], keys_dtype: Any):
  """`_compiled`'s program compiled ahead of time for one shape of keys (and of scales)."""
  run = _compiled(spec, weight_init, dtype_name, seed_chunk, log_space)
  args = (jax.ShapeDtypeStruct(keys_shape, keys_dtype),
          jax.ShapeDtypeStruct(keys_shape[:1], jnp.dtype(dtype_name)))
  if jax.default_backend() == "cpu":
    with _unrolled_threefry_on_cpu():
      lowered = run.lower(*args)
  else:
    lowered = run.lower(*args)
  return lowered.compile()


def _parallel_streams(num_chunks: int) -> int:
  """How many calls of the compiled program to run at once: one per CPU core.

  XLA:CPU runs the small (N x D_h) @ (D_h x D_h) products of one program on one core; two
  programs called from two threads run on two cores. On an accelerator, one stream.
  """
  if jax.default_backend() != "cpu":
    return 1
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    cores = os.cpu_count() or 1
  return int(max(1, min(cores, num_chunks)))


def default_seed_chunk(spec: NetworkSpec, memory_bytes: float = 1.0e9, itemsize: int = 4) -> int:
  """Seeds per vmapped chunk: 1 on a CPU, else as many as fit in `memory_bytes`.

  On a CPU, vmapping networks does not make the (N x D_h) @ (D_h x D_h) products faster (XLA
  runs them one core each, batched or not) and every chunk size from 1 to 16 measured the same
  or slower than 1 for N = 10..1000 inputs (scripts/benchmark.py); `measure` uses the cores by
  running one program per core instead. On an accelerator the chunk is bounded by memory: a
  network keeps its weights (with the random-number temporaries, about 3 (K, D_h, D_h) arrays),
  the sign of every pre-activation (1 byte per unit; a'[f] itself for other activations) and a
  few (N, D) arrays alive.
  """
  if jax.default_backend() == "cpu":
    return 1
  d = max(spec.width, spec.input_dim)
  mask_bytes = 1 if spec.activation in POSITIVELY_HOMOGENEOUS else itemsize
  per_seed = (3.0 * spec.depth * spec.width * d * itemsize
              + spec.depth * spec.batch_size * spec.width * mask_bytes
              + 8.0 * spec.batch_size * d * itemsize)
  return int(max(1, min(256, memory_bytes // per_seed)))


def measure(key: jax.Array, spec: NetworkSpec, *, weight_init: str | Callable = "normal",
            scales: Sequence[float] = (1.0,), num_seeds: int = 100, dtype: Any = jnp.float32,
            seed_chunk: int | None = None, log_space: bool | None = None,
            num_devices: int | None = None) -> dict[str, np.ndarray]:
  """Per-seed, per-layer log10 statistics for every weight-variance multiplier in `scales`.

  Every weight matrix drawn by `weight_init` is multiplied by sqrt(scale): with the registered
  `normal` initializer (unit variance) `scales` are the book's sigma2_Omega values; with
  `he_normal` a scale of 1 is He. Seed s uses the same key for every scale (paired draws), and
  all scales and seeds run in one compiled program, in chunks of `seed_chunk` vmapped networks
  (on a CPU, the chunks are shared out between one call of the program per core). With more
  than one local device (GPUs, TPU cores, or CPU devices forced with XLA_FLAGS), the seed axis
  is sharded over `num_devices` of them (default all) with `shard_map`; results are the same.

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
  from initjax import distributed  # pylint: disable=import-outside-toplevel
  devices = distributed.local_devices(num_devices)
  if len(devices) > 1:
    return _measure_sharded(key, spec, weight_init, scales, num_seeds, dtype, seed_chunk,
                            bool(log_space), distributed.seed_mesh(len(devices)))
  num_chunks = -(-n_items // seed_chunk)
  streams = _parallel_streams(num_chunks)
  per_stream = -(-num_chunks // streams) * seed_chunk
  keys = jax.random.split(key, num_seeds)
  # Item i = (scale i // num_seeds, seed i % num_seeds); padded (by repeating items) to a whole
  # number of chunks per stream: lax.map would compile a remainder separately.
  index = np.arange(streams * per_stream) % n_items
  keys_all = keys[index % num_seeds]
  scales_all = jnp.asarray(np.asarray(scales)[index // num_seeds], dtype)
  run = _executable(spec, weight_init, dtype.name, seed_chunk, bool(log_space),
                    (per_stream,) + tuple(keys_all.shape[1:]), keys_all.dtype)
  parts = [(keys_all[i * per_stream:(i + 1) * per_stream],
            scales_all[i * per_stream:(i + 1) * per_stream]) for i in range(streams)]
  if streams == 1:
    outs = [run(*parts[0])]
  else:
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
      outs = list(pool.map(lambda p: jax.block_until_ready(run(*p)), parts))
  return {q: np.concatenate([np.asarray(o[q], dtype=np.float64) for o in outs])[:n_items]
          .reshape(len(scales), num_seeds, -1) for q in outs[0]}


def _measure_sharded(key, spec, weight_init, scales, num_seeds, dtype, seed_chunk, log_space,
                     mesh) -> dict[str, np.ndarray]:
  """`measure` with the seed axis sharded over the devices of `mesh` (same keys, same values)."""
  from initjax import distributed  # pylint: disable=import-outside-toplevel
  n_items = len(scales) * num_seeds
  block = mesh.size * seed_chunk
  index = np.arange(distributed.pad_to_multiple(n_items, block)) % n_items
  keys = jax.random.split(key, num_seeds)
  keys_all = keys[index % num_seeds]
  scales_all = jnp.asarray(np.asarray(scales)[index // num_seeds], dtype)
  run = _compiled(spec, weight_init, dtype.name, seed_chunk, log_space)
  out = jax.jit(distributed.shard_over_seeds(run, mesh))(keys_all, scales_all)
  return {q: np.asarray(v, dtype=np.float64)[:n_items].reshape(len(scales), num_seeds, -1)
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
