"""Per-layer statistics of many random MLPs at initialization, and their summaries.

For each random initialization (a seed) `measure` draws the weights and a batch of N
standard-normal inputs, runs the network with the book's least-squares loss against y = 0, and
reduces every layer to one log10 number per quantity (`initjax.layer_statistics`: exact at any
depth, nothing overflows). Seeds run through `lax.map` in chunks of vmapped networks, so memory
is bounded for any number of seeds; the seed axis is spread over the local devices
(`initjax.parallel`); configurations that differ only in a weight-variance multiplier (the five
sigma2 of the book's figure) share one compiled program.

The rest of the module summarizes the (seed x layer) values across seeds and compares them with
`initjax.theory`: quantiles and log-mean per layer, slopes in decades per layer.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initjax import theory
from initjax.core import _jax_internals, parallel
from initjax.measurement.layer_statistics import QUANTITIES, network_statistics, uses_log_space
from initjax.nn import activations
from initjax.nn.initializers import draws_plain_normal, expected_variance, get_initializer, normal
from initjax.nn.networks import init_mlp
from initjax.theory import architectures

__all__ = ["QUANTITIES", "NetworkSpec", "measure", "network_for_seed", "network_statistics",
           "uses_log_space", "default_seed_chunk", "flag_invalid", "summarize_seeds",
           "slope_per_layer", "layer_slopes", "layer_indices", "theory_for"]


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
    activations.check_activation(self.activation)
    if self.bias_variance < 0:
      raise ValueError(f"bias_variance must be >= 0; got {self.bias_variance}")
    return self


def layer_indices(quantity: str, depth: int) -> np.ndarray:
  """The book's layer index k of each value: 0..K, or 1..K for h_k and dl/dh_k."""
  return np.arange(1, depth + 1) if quantity in ("var_h", "var_dl_dh") else np.arange(depth + 1)


def _plain_normal(weight_init) -> bool:
  """A registered plain-normal initializer: its draws call no LAPACK (an orthogonal one's QR
  does; a callable may), `parallel.workers(uses_lapack=...)`."""
  return isinstance(weight_init, str) and draws_plain_normal(weight_init)


def _resolve_init(weight_init) -> Callable:
  if isinstance(weight_init, str):
    return get_initializer(weight_init)
  return weight_init


def kernel_shapes(spec: NetworkSpec) -> list[tuple[int, int]]:
  """The Flax-layout (in, out) shape of every weight matrix, Omega_0..Omega_K."""
  return ([(spec.input_dim, spec.width)] + [(spec.width, spec.width)] * (spec.depth - 1)
          + [(spec.width, spec.output_dim)])


def network_for_seed(key: jax.Array, spec: NetworkSpec, init_fn: Callable, scale: Any,
                     dtype: Any) -> tuple[dict, jax.Array]:
  """The network and the inputs of one seed of `measure`: init_mlp(k_params) with weight matrix
  Omega_k multiplied by sqrt(scale_k) (`scale`: one value, or K + 1, one per weight matrix),
  and N standard-normal inputs from k_x."""
  dtype = jnp.dtype(dtype)
  bias_init = None
  if spec.bias_variance > 0:
    bias_init = normal(spec.bias_variance)
  k_params, k_x = jax.random.split(key)
  params = init_mlp(k_params, input_dim=spec.input_dim, width=spec.width, depth=spec.depth,
                    output_dim=spec.output_dim, weight_init=init_fn, bias_init=bias_init,
                    dtype=dtype)
  root = jnp.sqrt(jnp.asarray(scale, dtype)).astype(dtype)
  if root.ndim:                       # one value per weight matrix
    params = {**params, "omega_0": params["omega_0"] * root[0],
              "omega_hidden": params["omega_hidden"] * root[1:spec.depth, None, None],
              "omega_out": params["omega_out"] * root[spec.depth]}
  else:
    params = {name: (p * root if name.startswith("omega") else p) for name, p in params.items()}
  x_NxD = jax.random.normal(k_x, (spec.batch_size, spec.input_dim), dtype)
  return params, x_NxD


def seed_bytes(spec: NetworkSpec, itemsize: int = 4) -> float:
  """Device memory one seed of `measure` keeps alive: its weights (with the random-number
  temporaries, about 3 (K, D_h, D_h) arrays), the sign of every pre-activation (1 byte per unit;
  a'[f] itself for other activations) and a few (N, D) arrays."""
  d = max(spec.width, spec.input_dim)
  mask_bytes = 1 if activations.get(spec.activation).positively_homogeneous else itemsize
  return (3.0 * spec.depth * spec.width * d * itemsize
          + spec.depth * spec.batch_size * spec.width * mask_bytes
          + 8.0 * spec.batch_size * d * itemsize)


def default_seed_chunk(spec: NetworkSpec, device=None, itemsize: int = 4) -> int:
  """Seeds vmapped per step on one device: 1 on a CPU, else as many as fit (at most 256).

  On a CPU, vmapping networks does not make the (N x D_h) @ (D_h x D_h) products faster (XLA
  runs them one core each, batched or not): every chunk size from 1 to 16 measured the same or
  slower than 1 for N = 10..1000 inputs (scripts/benchmark.py); the cores are used by the devices
  instead (one thread each, `parallel.workers`). On an accelerator the chunk is what fits in half of its
  free memory (`parallel.chunk_size`).
  """
  device = device or jax.local_devices()[0]
  if device.platform == "cpu":
    return 1
  return int(min(256, parallel.chunk_size(256, seed_bytes(spec, itemsize), [device])))


def run_seeds(one: Callable, key: jax.Array, scales: Any, num_seeds: int, dtype,
              seed_chunk: int, work: Sequence[Any]) -> dict[str, np.ndarray]:
  """`one((key, scale)) -> {quantity: per-layer values}` for every (setting, seed), in blocks
  spread over the workers; seed s gets the same key for every setting (paired draws).
  `scales` has one entry per setting (a number, or a vector of per-layer values).

  Returns {quantity: float64 array (len(scales), num_seeds, layers)}.
  """
  # Item i = (setting i // num_seeds, seed i % num_seeds).
  keys = jax.random.split(key, num_seeds)
  index = np.arange(len(scales) * num_seeds)
  items = (keys[index % num_seeds], jnp.asarray(np.asarray(scales)[index // num_seeds], dtype))
  out = parallel.map_items(one, items, chunk=seed_chunk, worker_devices=work,
                           lower_context=_jax_internals.unrolled_threefry_on_cpu)
  return {q: np.asarray(v, np.float64).reshape(len(scales), num_seeds, -1)
          for q, v in out.items()}


def _check_scales(scales, num_seeds, dtype) -> list[float]:
  if num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1; got {num_seeds}")
  scales = [float(s) for s in scales]
  if not scales or any(not (math.isfinite(s) and s > 0) for s in scales):
    raise ValueError(f"scales (weight variances) must be finite and > 0; got {scales}")
  if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
    raise ValueError("dtype float64 needs jax.config.update('jax_enable_x64', True) first")
  return scales


@functools.lru_cache(maxsize=64)
def _mlp_seed(spec: NetworkSpec, weight_init: Any, dtype_name: str, log_space: bool) -> Callable:
  init_fn = _resolve_init(weight_init)

  def one(key_and_scale):
    key, scale = key_and_scale
    params, x_NxD = network_for_seed(key, spec, init_fn, scale, jnp.dtype(dtype_name))
    return network_statistics(params, x_NxD, spec.activation, log_space=log_space)
  return one


def measure(key: jax.Array, spec: NetworkSpec, *, weight_init: str | Callable = "normal",
            scales: Sequence[float] = (1.0,), layer_variances: Sequence[Sequence[float]] | None
            = None, num_seeds: int = 100, dtype: Any = jnp.float32,
            seed_chunk: int | None = None, log_space: bool | None = None,
            num_devices: int | None = None) -> dict[str, np.ndarray]:
  """Per-seed, per-layer log10 statistics for every weight-variance multiplier in `scales`.

  Every weight matrix drawn by `weight_init` is multiplied by sqrt(scale): with the registered
  `normal` initializer (unit variance) `scales` are the book's sigma2_Omega values; with
  `he_normal` a scale of 1 is He. Seed s uses the same key for every scale (paired draws), and
  all scales and seeds run in one compiled program, in chunks of `seed_chunk` vmapped networks.
  Initializers that draw plain normals (He, Xavier, LeCun normal, normal) differ only in their
  per-layer variances, so they all run in one program per network shape: the unit-normal draws
  scaled layer by layer, the same numbers as `weight_init` draws for the same key.
  `layer_variances` (instead of `weight_init` and `scales`) gives each setting's K + 1 weight
  variances directly (plain normals), e.g. the fixed sigma2 of the book's figure next to He's
  and Xavier's per-layer variances: all of them run in one program
  (`default_seed_chunk`), with the seeds spread over `num_devices` local devices (default all;
  a CPU's cores are used by one thread each, `initjax.parallel`). Each seed's values do not
  depend on the number of devices.

  Returns:
    {quantity: float64 array (len(scales), num_seeds, layers)} of log10 values; non-finite
    entries could not be measured (see `flag_invalid`).
  """
  spec.validate()
  if layer_variances is not None:
    layer_variances = [list(v) for v in layer_variances]
    if any(len(v) != spec.depth + 1 for v in layer_variances):
      raise ValueError(f"layer_variances: each setting needs {spec.depth + 1} values "
                       "(Omega_0..Omega_K)")
    _check_scales([x for v in layer_variances for x in v], num_seeds, dtype)
    scales, weight_init = layer_variances, "normal"
  else:
    scales = _check_scales(scales, num_seeds, dtype)
  dtype = jnp.dtype(dtype)
  if log_space is None:
    log_space = uses_log_space(spec.activation, spec.bias_variance)
  if layer_variances is None and isinstance(weight_init, str) and draws_plain_normal(
      weight_init):
    per_layer = [expected_variance(weight_init, s) for s in kernel_shapes(spec)]
    scales = [[s * v for v in per_layer] for s in scales]
    weight_init = "normal"
  work = parallel.workers(parallel.local_devices(num_devices),
                          uses_lapack=not _plain_normal(weight_init))
  if seed_chunk is None:
    seed_chunk = default_seed_chunk(spec, work[0], itemsize=dtype.itemsize)
  one = _mlp_seed(spec, weight_init, dtype.name, bool(log_space))
  return run_seeds(one, key, scales, num_seeds, dtype, seed_chunk, work)


@functools.lru_cache(maxsize=64)
def _arch_seed(arch_name: str, activation: str, options: Any, input_shape: tuple, width: int,
               depth: int, output_dim: int, batch_size: int, bias_variance: float,
               weight_init: Any, dtype_name: str) -> Callable:
  arch, dtype = architectures.get(arch_name), jnp.dtype(dtype_name)
  model = arch.model(activation, options)
  init_fn = _resolve_init(weight_init)
  bias_init = None
  if bias_variance > 0:
    bias_init = normal(bias_variance)
  least_squares = lambda f, y: jnp.sum((f - y) ** 2)

  def one(key_and_scale):
    key, scale = key_and_scale
    k_params, k_x = jax.random.split(key)
    params = arch.init(k_params, input_shape=input_shape, width=width, depth=depth,
                       output_dim=output_dim, weight_init=init_fn, bias_init=bias_init,
                       options=options)
    root = jnp.sqrt(jnp.asarray(scale, dtype)).astype(dtype)
    params = {name: (p * root if p.ndim >= 2 and name not in arch.unscaled
                  and not name.startswith("norm_") else p)
              for name, p in params.items()}
    shape = (batch_size,) + tuple(input_shape)
    x = (jax.random.normal(k_x, shape, dtype) if arch.inputs is None
         else arch.inputs(k_x, shape, depth, dtype))
    stats = model.layer_statistics(params, x, jnp.zeros((batch_size, output_dim), dtype),
                                   least_squares)
    return {q: jnp.log10(v) for q, v in stats.items() if q != "loss"}
  return one


def measure_architecture(key: jax.Array, arch: str, *, activation: str = "relu",
                         options: Any = None, input_shape: tuple = (100,), width: int = 100,
                         depth: int = 50, output_dim: int = 1, batch_size: int = 100,
                         bias_variance: float = 0.0, weight_init: str | Callable = "normal",
                         scales: Sequence[float] = (1.0,), num_seeds: int = 100,
                         dtype: Any = jnp.float32, seed_chunk: int | None = None,
                         num_devices: int | None = None) -> dict[str, np.ndarray]:
  """`measure` for any built-in architecture (`initjax.architectures`): per seed, the log10 of
  the architecture's per-layer statistics (the residual MLP: Var[h_k], Var[dl/dh_k],
  k = 0..K; the CNN: also Var[dl/df_k] and the channel statistics), computed directly (not in
  log space: a value that overflows comes back non-finite and is flagged). Every weight (rank
  >= 2 parameter) drawn by `weight_init` is multiplied by sqrt(scale) (not the recurrent kernels,
  drawn by `options.recurrent_init`); standard-normal inputs of `input_shape` (the recurrent
  architectures': each step rescaled to mean square 1), least squares against y = 0."""
  options = options or architectures.ArchOptions()
  architectures.get(arch)
  scales = _check_scales(scales, num_seeds, dtype)
  dtype = jnp.dtype(dtype)
  work = parallel.workers(parallel.local_devices(num_devices),
                          uses_lapack=not _plain_normal(weight_init))
  if seed_chunk is None:
    seed_chunk = 1 if work[0].platform == "cpu" else 16
  one = _arch_seed(arch, activation, options, tuple(input_shape), width, depth, output_dim,
                   batch_size, float(bias_variance), weight_init, dtype.name)
  return run_seeds(one, key, scales, num_seeds, dtype, seed_chunk, work)


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


def _finite_median(values_SxL: np.ndarray) -> np.ndarray:
  return np.array([np.median(c[np.isfinite(c)]) if np.isfinite(c).any() else np.nan
                   for c in values_SxL.T])


def layer_slopes(depth: int, measured: dict[str, np.ndarray], pred: dict[str, np.ndarray]
                 ) -> dict[str, float]:
  """Change of log10 variance per layer: forward along h_1..h_K, backward along dl/dh_K..h_1.

  Measured slopes are fitted to the across-seed median of the (seed x layer) values in
  `measured`; positive means growing in the direction of travel (forward: with k; backward:
  towards the input). `depth` is unused beyond a check: the layers are those of the values
  (the residual MLP has h_0..h_K).
  """
  k = np.arange(np.shape(pred["var_h"])[-1])
  if k.size not in (depth, depth + 1):
    raise ValueError(f"{k.size} layers of Var[h_k] for depth {depth}")
  return {
      "forward_measured": slope_per_layer(k, _finite_median(measured["var_h"])),
      "forward_theory": slope_per_layer(k, pred["var_h"]),
      "backward_measured": -slope_per_layer(k, _finite_median(measured["var_dl_dh"])),
      "backward_theory": -slope_per_layer(k, pred["var_dl_dh"]),
  }


def theory_for(spec: NetworkSpec, weight_init: str | Callable, scale: float,
               init_kwargs: dict | None = None) -> theory.MLPPrediction | None:
  """Theory for a registered initializer (per-layer variance from its fans) times `scale`."""
  if not isinstance(weight_init, str):
    return None
  kw = dict(init_kwargs or {})
  fans = [(spec.input_dim, spec.width)] + [(spec.width, spec.width)] * (spec.depth - 1) + [
      (spec.width, spec.output_dim)]
  sigma2 = [scale * expected_variance(weight_init, shape, **kw) for shape in fans]
  return theory.predict_mlp(input_dim=spec.input_dim, width=spec.width, depth=spec.depth,
                            output_dim=spec.output_dim, sigma2_omega=sigma2,
                            sigma2_beta=spec.bias_variance, activation=spec.activation,
                            input_second_moment=1.0)
