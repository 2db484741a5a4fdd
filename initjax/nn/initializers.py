"""Weight initializers by name: He, Xavier/Glorot, LeCun, orthogonal, delta-orthogonal, identity
(IRNN), fixed variance.

Every initializer is a factory returning ``init(key, shape, dtype) -> Array`` (the
``jax.nn.initializers`` protocol), so each works as a Flax ``kernel_init``
(``flax.linen.Dense``, ``flax.nnx.Linear``; kernels there have shape (in, out)).

Conventions (differences from ``jax.nn.initializers`` spelled out):
  * ``he_normal``, ``xavier_normal`` (alias ``glorot_normal``) and ``lecun_normal``
    draw a PLAIN normal, as in the papers, the book and PyTorch. JAX's ``he_normal``,
    ``glorot_normal`` and ``lecun_normal`` (and so Flax's default kernel init) draw a
    normal truncated at +-2 std, rescaled to the same variance; use
    ``he_truncated_normal`` or ``variance_scaling(..., "truncated_normal")`` for that.
  * Fans (``initjax.fans``) follow ``jax.nn.initializers``: axes other than in/out/batch
    form the receptive field, so a conv kernel (h, w, c_in, c_out) has fan_in = h*w*c_in.
    Rank-0/1 shapes work with explicit axes (``in_axis=[0], out_axis=[]``), as JAX.

Drop-in behaviour, as ``jax.nn.initializers``: ``dtype=None`` (the default) means JAX's
default float dtype at call time (float64 under ``JAX_ENABLE_X64``); complex dtypes draw
what JAX draws, bit for bit (uniform on a disk; the modulus truncated, whose E|z|^2 is 1.9%
above the nominal variance in JAX, see ``variance_scaling``); every init takes an optional
``out_sharding``. Scales and gains may be arrays,
traced ones included (so one compiled program serves many scales): Python numbers and
concrete arrays are checked, traced values cannot be and are not.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initjax.core.errors import check_choice
from initjax.nn import activations
from initjax.nn.fans import MODES, Axes, compute_fans  # noqa: F401 (re-exported)
from initjax.nn.fans import check_mode as _check_mode
from initjax.nn.fans import fan as _fan

Initializer = Callable[..., jax.Array]

# Standard deviation of a standard normal truncated to (-2, 2); same constant as JAX.
TRUNCATED_NORMAL_STD = 0.87962566103423978
# Standard deviation of a unit-variance complex normal with modulus truncated to 2; as JAX.
COMPLEX_TRUNCATED_NORMAL_STD = 0.95311164380491208

DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")


def _check_number(what: str, value: Any, positive: bool) -> Any:
  """A Python number -> float, checked; a real scalar array (NumPy or JAX) -> itself, checked
  when its value is known (a traced one is not: its value does not exist yet)."""
  kind = "a positive finite number" if positive else "a finite number"
  if isinstance(value, bool):
    raise ValueError(f"{what} must be {kind}; got {value!r}")
  if isinstance(value, (int, float)):
    result = concrete = float(value)
  elif hasattr(value, "dtype") and hasattr(value, "shape"):
    dtype = jnp.dtype(value.dtype)
    if np.ndim(value) != 0 or dtype == jnp.bool_ or not jnp.issubdtype(dtype, jnp.number) or (
        jnp.issubdtype(dtype, jnp.complexfloating)):
      raise ValueError(f"{what} must be {kind} (a real scalar); got an array of shape "
                       f"{tuple(np.shape(value))} and dtype {dtype}")
    try:
      concrete = float(np.asarray(value))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
      return value  # traced: checked by nobody, as in jax.nn.initializers
    result = value
  else:
    raise ValueError(f"{what} must be {kind}; got {value!r}")
  if not math.isfinite(concrete) or (positive and not concrete > 0):
    raise ValueError(f"{what} must be {kind}; got {value!r}")
  return result


def _check_positive(what: str, value: Any) -> Any:
  return _check_number(what, value, positive=True)


def _check_finite(what: str, value: Any) -> Any:
  return _check_number(what, value, positive=False)


def _float_dtype(dtype: Any) -> Any:
  """JAX's default float dtype (float64 under x64) when `dtype` is None, as jax.nn.initializers."""
  return jnp.result_type(float) if dtype is None else dtype


def _complex_dtype(dtype: Any) -> tuple[Any, Any]:
  """(real dtype, complex dtype) of a complex `dtype`, as jax's complex samplers use them."""
  real = np.array(0, dtype).real.dtype
  return real, np.result_type(real, np.complex64)


def _complex_uniform(key: jax.Array, shape: tuple, dtype: Any) -> jax.Array:
  """Uniform on the unit-variance disk |z| <= sqrt(2): r = sqrt(2 u), angle 2 pi v (JAX's
  algorithm, same draws)."""
  key_r, key_theta = jax.random.split(key)
  real, dtype = _complex_dtype(dtype)
  r = jnp.sqrt(2 * jax.random.uniform(key_r, shape, real)).astype(dtype)
  theta = 2 * np.pi * jax.random.uniform(key_theta, shape, real).astype(dtype)
  return r * jnp.exp(1j * theta)


def _complex_truncated_normal(key: jax.Array, upper: float, shape: tuple,
                              dtype: Any) -> jax.Array:
  """Complex normal of unit variance with |z| truncated to `upper`, by inverting the CDF of
  |z|^2 (JAX's algorithm, same draws)."""
  key_r, key_theta = jax.random.split(key)
  real, dtype = _complex_dtype(dtype)
  t = ((1 - jnp.exp(jnp.array(-(upper ** 2), dtype)))
       * jax.random.uniform(key_r, shape, real).astype(dtype))
  r = jnp.sqrt(-jnp.log(1 - t))
  theta = 2 * np.pi * jax.random.uniform(key_theta, shape, real).astype(dtype)
  return r * jnp.exp(1j * theta)


def variance_scaling(scale: Any, mode: str, distribution: str, in_axis: Axes = -2,
                     out_axis: Axes = -1, batch_axis: Axes = (),
                     dtype: Any = None) -> Initializer:
  """Zero-mean initializer with variance scale / n, n = fan_in, fan_out,
  (fan_in + fan_out) / 2 or sqrt(fan_in * fan_out) for mode fan_in, fan_out, fan_avg,
  fan_geo_avg.

  distribution:
    normal: N(0, var), untruncated.
    truncated_normal: sqrt(var) / 0.8796... * TN(-2, 2), i.e. a normal cut at +-2 of
      its std and rescaled so the variance is exactly var (as JAX).
    uniform: U(-sqrt(3 var), sqrt(3 var)).
  Complex dtypes (as JAX): complex normal and uniform on a disk, E|z|^2 = var; a truncated
  normal cut at modulus 2 and rescaled by JAX's 0.9531..., which gives E|z|^2 = 1.0187 var
  (the exact constant would be 0.9620; initjax keeps JAX's draws). `scale` may be a (traced)
  scalar array.
  Same draws as ``jax.nn.initializers.variance_scaling`` for the same key.
  """
  scale = _check_positive("scale", scale)
  _check_mode(mode)
  if distribution not in DISTRIBUTIONS:
    raise ValueError(f"Invalid distribution {distribution!r}; valid choices: "
                     f"{', '.join(DISTRIBUTIONS)}")

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = dtype,
           out_sharding: Any = None) -> jax.Array:
    shape = tuple(int(d) for d in shape)
    dtype = _float_dtype(dtype)
    fan_in, fan_out = compute_fans(shape, in_axis, out_axis, batch_axis)
    variance = jnp.array(scale / _fan(mode, fan_in, fan_out), dtype=dtype)
    real = not jnp.issubdtype(dtype, jnp.complexfloating)
    if distribution == "normal":
      return jax.random.normal(key, shape, dtype, out_sharding=out_sharding) * jnp.sqrt(variance)
    if distribution == "truncated_normal":
      if real:
        std = jnp.sqrt(variance) / jnp.array(TRUNCATED_NORMAL_STD, dtype)
        return jax.random.truncated_normal(key, -2, 2, shape, dtype,
                                           out_sharding=out_sharding) * std
      std = jnp.sqrt(variance) / jnp.array(COMPLEX_TRUNCATED_NORMAL_STD, dtype)
      return _complex_truncated_normal(key, 2, shape, dtype) * std
    if real:
      return jax.random.uniform(key, shape, dtype, -1,
                                out_sharding=out_sharding) * jnp.sqrt(3 * variance)
    return _complex_uniform(key, shape, dtype) * jnp.sqrt(variance)

  return init


# torch.nn.init.calculate_gain's names for linear maps: gain 1. Activations take theirs from
# their record in initjax.activations.
_LINEAR_GAINS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                 "conv_transpose3d")


def gain(activation: str, param: float | None = None) -> float:
  """Recommended gain g for `activation`, as torch.nn.init.calculate_gain.

  linear/identity/conv*/sigmoid: 1; tanh: 5/3; relu: sqrt(2); selu: 3/4;
  leaky_relu: sqrt(2 / (1 + slope^2)) with slope = param, default 0.01 (torch).
  Not in torch (initjax's choices): softsign: 1 (softsign'(0) = 1, like tanh without
  the 5/3 correction); gelu: sqrt(2) (GELU is ReLU-like: ~x for x >> 0, ~0 for x << 0).
  `param` is ignored for activations other than leaky_relu (as torch).
  """
  if activation in _LINEAR_GAINS:
    return 1.0
  if activation not in activations.ACTIVATIONS:
    check_choice("activation", activation, sorted([*activations.ACTIVATIONS, *_LINEAR_GAINS]))
  if activation == "leaky_relu" and param is not None:
    return math.sqrt(2.0 / (1.0 + _check_finite("param", param) ** 2))
  return activations.get(activation).init_gain


def _he_scale(gain: float | None, negative_slope: float) -> float:
  # 2 / (1 + a^2) computed directly (not sqrt(.)**2) so that the default is exactly 2.
  if gain is not None:
    return _check_positive("gain", gain) ** 2
  return 2.0 / (1.0 + _check_finite("negative_slope", negative_slope) ** 2)


def he_normal(gain: float | None = None, negative_slope: float = 0.0, mode: str = "fan_in",
              in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (),
              dtype: Any = None) -> Initializer:
  """He (Kaiming) init: PLAIN normal N(0, g^2 / n), g = gain if given else
  sqrt(2 / (1 + negative_slope^2)), n = fan_in (or fan_out etc., per `mode`).

  JAX's ``jax.nn.initializers.he_normal`` is a truncated normal; initjax's
  ``he_normal`` is the plain normal of the book and PyTorch (kaiming_normal_). Use
  ``he_truncated_normal`` for JAX's. Same variance either way.
  """
  return variance_scaling(_he_scale(gain, negative_slope), mode, "normal", in_axis,
                          out_axis, batch_axis, dtype)


def he_uniform(gain: float | None = None, negative_slope: float = 0.0, mode: str = "fan_in",
               in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (),
               dtype: Any = None) -> Initializer:
  """He init, uniform: U(-sqrt(3 var), sqrt(3 var)), var = g^2 / n as ``he_normal``."""
  return variance_scaling(_he_scale(gain, negative_slope), mode, "uniform", in_axis,
                          out_axis, batch_axis, dtype)


def he_truncated_normal(gain: float | None = None, negative_slope: float = 0.0,
                        mode: str = "fan_in", in_axis: Axes = -2, out_axis: Axes = -1,
                        batch_axis: Axes = (), dtype: Any = None) -> Initializer:
  """He init, truncated at +-2 std and rescaled: variance exactly g^2 / n as
  ``he_normal``. With the defaults it equals ``jax.nn.initializers.he_normal()``."""
  return variance_scaling(_he_scale(gain, negative_slope), mode, "truncated_normal",
                          in_axis, out_axis, batch_axis, dtype)


def xavier_normal(gain: float = 1.0, in_axis: Axes = -2, out_axis: Axes = -1,
                  batch_axis: Axes = (), dtype: Any = None) -> Initializer:
  """Xavier/Glorot (Glorot & Bengio 2010): PLAIN normal N(0, gain^2 * 2/(fan_in + fan_out)).

  JAX's ``glorot_normal`` is truncated (same variance); this one is not (as PyTorch).
  """
  return variance_scaling(_check_positive("gain", gain) ** 2, "fan_avg", "normal", in_axis,
                          out_axis, batch_axis, dtype)


def xavier_uniform(gain: float = 1.0, in_axis: Axes = -2, out_axis: Axes = -1,
                   batch_axis: Axes = (), dtype: Any = None) -> Initializer:
  """Xavier/Glorot uniform: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)), so
  variance gain^2 * 2/(fan_in + fan_out). gain=1 equals ``jax...glorot_uniform()``."""
  return variance_scaling(_check_positive("gain", gain) ** 2, "fan_avg", "uniform", in_axis,
                          out_axis, batch_axis, dtype)


def lecun_normal(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (),
                 dtype: Any = None) -> Initializer:
  """LeCun: PLAIN normal N(0, 1/fan_in). JAX's/Flax's default ``lecun_normal`` is
  truncated (same variance)."""
  return variance_scaling(1.0, "fan_in", "normal", in_axis, out_axis, batch_axis, dtype)


def lecun_uniform(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (),
                  dtype: Any = None) -> Initializer:
  """LeCun uniform: U(-sqrt(3/fan_in), sqrt(3/fan_in)), variance 1/fan_in."""
  return variance_scaling(1.0, "fan_in", "uniform", in_axis, out_axis, batch_axis, dtype)


def orthogonal(gain: float = 1.0, column_axis: int = -1,
               dtype: Any = None) -> Initializer:
  """gain * Q, Q Haar-random with orthonormal columns (n_rows >= n_cols) or rows, where
  n_cols = shape[column_axis], n_rows = prod(other dims). Q^T Q = gain^2 I (tall) or
  Q Q^T = gain^2 I (wide); each entry has variance gain^2 / max(n_rows, n_cols).
  Same draws as ``jax.nn.initializers.orthogonal(scale=gain)``."""
  gain = _check_positive("gain", gain)
  jax_init = jax.nn.initializers.orthogonal(scale=gain, column_axis=column_axis)

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = dtype,
           out_sharding: Any = None) -> jax.Array:
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
      raise ValueError(f"orthogonal needs a weight matrix or kernel of rank >= 2; got {shape}")
    return jax_init(key, shape, _float_dtype(dtype), out_sharding=out_sharding)

  return init


def delta_orthogonal(gain: float = 1.0, column_axis: int = -1,
                     dtype: Any = None) -> Initializer:
  """Delta-orthogonal convolution kernel (Xiao et al. 2018): zero everywhere except at the
  center tap of the spatial axes, which holds gain * Q, Q (c_in, c_out) Haar-orthogonal, so the
  convolution is gain times an isometry (every nonzero singular value equals gain).

  A kernel (k_1, ..., k_d, c_in, c_out) gets W[(k_1 - 1) // 2, ..., (k_d - 1) // 2] =
  orthogonal(gain, column_axis)(key, (c_in, c_out)): Q Q^T = gain^2 I for c_in <= c_out (the
  map x -> W^T x keeps norms up to gain), Q^T Q = gain^2 I for c_in > c_out. Each entry has
  variance gain^2 / (k_1 ... k_d max(c_in, c_out)). The mean-field q-map of such a layer is the
  dense one with sigma2_w = gain^2: delta_orthogonal(sqrt(sigma2_w)) is the critical CNN init.
  Same draws as ``jax.nn.initializers.delta_orthogonal(scale=gain, column_axis)`` where JAX
  accepts the shape (rank 3 to 5, c_in <= c_out). Beyond it: rank 2 (no spatial axes: the
  orthogonal matrix itself), any rank, c_in > c_out, and `out_sharding` (JAX raises there).
  """
  gain = _check_positive("gain", gain)
  center_init = orthogonal(gain=gain, column_axis=column_axis)

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = dtype,
           out_sharding: Any = None) -> jax.Array:
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
      raise ValueError(f"delta_orthogonal needs a kernel of rank >= 2 (..., c_in, c_out); got "
                       f"{shape}")
    dtype = _float_dtype(dtype)
    center = tuple((k - 1) // 2 for k in shape[:-2])
    kernel = jnp.zeros(shape, dtype, device=out_sharding)
    return kernel.at[center].set(center_init(key, shape[-2:], dtype))

  return init


def identity(gain: float = 1.0, column_axis: int = -1, dtype: Any = None) -> Initializer:
  """gain * I: the identity matrix (its first min(n_rows, n_cols) diagonal entries), with
  n_cols = shape[column_axis] and n_rows = prod(other dims) as `orthogonal`; the recurrent kernel
  of Le, Jaitly & Hinton's IRNN (2015). Deterministic: the key is ignored. An orthogonal matrix
  itself, so each entry has variance gain^2 / max(n_rows, n_cols) about zero (E[W^2]) and the
  same per-fan-in sigma2_w = gain^2 for a square one."""
  gain = _check_positive("gain", gain)

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = dtype,
           out_sharding: Any = None) -> jax.Array:
    del key
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
      raise ValueError(f"identity needs a weight matrix or kernel of rank >= 2; got {shape}")
    dtype = _float_dtype(dtype)
    axis = column_axis % len(shape)
    n_cols = shape[axis]
    n_rows = math.prod(shape) // n_cols
    eye = jnp.eye(n_rows, n_cols, dtype=dtype, device=out_sharding) * jnp.array(gain, dtype)
    moved = shape[:axis] + shape[axis + 1:] + (n_cols,)
    return jnp.moveaxis(eye.reshape(moved), -1, axis)

  return init


def normal(variance: Any = 1.0, dtype: Any = None) -> Initializer:
  """N(0, variance) whatever the shape (any rank, biases included): the book's
  fixed-variance experiment, sigma_Omega^2 in {0.001, ..., 1.0}. variance > 0 (a
  number or a scalar array, traced or not). Complex dtypes: E|z|^2 = variance.
  (``jax.nn.initializers.normal`` takes a standard deviation instead.)"""
  variance = _check_positive("variance", variance)
  std = math.sqrt(variance) if isinstance(variance, float) else jnp.sqrt(variance)

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = dtype,
           out_sharding: Any = None) -> jax.Array:
    dtype = _float_dtype(dtype)
    return (jax.random.normal(key, tuple(shape), dtype, out_sharding=out_sharding)
            * jnp.array(std, dtype))

  return init


def zeros(dtype: Any = None) -> Initializer:
  """All zeros (biases); the key is ignored."""

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = dtype,
           out_sharding: Any = None) -> jax.Array:
    del key
    return jnp.zeros(tuple(shape), _float_dtype(dtype), out_sharding=out_sharding)

  return init


def constant(value: Any, dtype: Any = None) -> Initializer:
  """Every entry equal to `value` (biases); the key is ignored."""
  value = _check_finite("value", value)

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = dtype,
           out_sharding: Any = None) -> jax.Array:
    del key
    return jnp.full(tuple(shape), value, _float_dtype(dtype), device=out_sharding)

  return init


_HE = {"gain": None, "negative_slope": 0.0, "mode": "fan_in"}

# name -> (factory, default keyword arguments), as init2winit's registry. Aliases share
# the factory: glorot_* = xavier_* (plain normal!), kaiming_* = he_*.
INITIALIZERS: dict[str, tuple[Callable[..., Initializer], dict[str, Any]]] = {
    "he_normal": (he_normal, _HE),
    "he_uniform": (he_uniform, _HE),
    "he_truncated_normal": (he_truncated_normal, _HE),
    "kaiming_normal": (he_normal, _HE),
    "kaiming_uniform": (he_uniform, _HE),
    "xavier_normal": (xavier_normal, {"gain": 1.0}),
    "xavier_uniform": (xavier_uniform, {"gain": 1.0}),
    "glorot_normal": (xavier_normal, {"gain": 1.0}),
    "glorot_uniform": (xavier_uniform, {"gain": 1.0}),
    "lecun_normal": (lecun_normal, {}),
    "lecun_uniform": (lecun_uniform, {}),
    "orthogonal": (orthogonal, {"gain": 1.0, "column_axis": -1}),
    "delta_orthogonal": (delta_orthogonal, {"gain": 1.0, "column_axis": -1}),
    "identity": (identity, {"gain": 1.0, "column_axis": -1}),
    "normal": (normal, {"variance": 1.0}),
    "zeros": (zeros, {}),
    "constant": (constant, {"value": 0.0}),
}


def initializer_names() -> list[str]:
  return sorted(INITIALIZERS)


def _resolve(name: str, kwargs: dict[str, Any]) -> tuple[Callable[..., Initializer], dict]:
  """Returns the factory for `name` and its full keyword arguments (defaults filled)."""
  check_choice("initializer", name, initializer_names())
  factory, defaults = INITIALIZERS[name]
  signature = inspect.signature(factory)
  for k in kwargs:
    if k not in signature.parameters:
      raise ValueError(f"Unknown keyword {k!r} for initializer {name!r}; valid keywords: "
                       f"{', '.join(signature.parameters) or '(none)'}")
  bound = signature.bind(**{**defaults, **kwargs})
  bound.apply_defaults()
  return factory, dict(bound.arguments)


def get_initializer(name: str, **kwargs: Any) -> Initializer:
  """Returns ``init(key, shape, dtype)`` for registry `name` built with `kwargs`."""
  factory, args = _resolve(name, kwargs)
  return factory(**args)


def draws_plain_normal(name: str) -> bool:
  """Whether registry `name` draws N(0, variance) (He, Xavier, LeCun normal, normal): such
  initializers differ only in their per-layer variance, so one program that draws unit normals
  and scales them serves them all (`initjax.propagation.measure`)."""
  return family(name) == "normal"


_FAMILIES = {he_normal: "normal", xavier_normal: "normal", lecun_normal: "normal",
             normal: "normal", he_truncated_normal: "truncated_normal", he_uniform: "uniform",
             xavier_uniform: "uniform", lecun_uniform: "uniform"}


def family(name: str) -> str | None:
  """The distribution registry `name` draws for a real dtype, as one of `DISTRIBUTIONS`, when it
  is that distribution times a per-shape standard deviation sqrt(`expected_variance`) (He,
  Xavier, LeCun, normal); None for the others (orthogonal, zeros, constant). Initializers of one
  family differ only in that standard deviation, so one compiled program that draws the unit
  distribution and scales it serves them all (`initjax.nn.redraw`)."""
  return _FAMILIES.get(_resolve(name, {})[0])


def _fan_variance(scale: float, mode: str, shape, args: dict) -> float:
  fan_in, fan_out = compute_fans(shape, args["in_axis"], args["out_axis"], args["batch_axis"])
  return scale / _fan(mode, fan_in, fan_out)


def _orthogonal_variance(shape, args: dict) -> float:
  if len(shape) < 2:
    raise ValueError(f"orthogonal needs a weight matrix or kernel of rank >= 2; got {shape}")
  n_cols = shape[args["column_axis"]]
  n_rows = math.prod(shape) // n_cols
  return args["gain"] ** 2 / max(n_rows, n_cols)


def _delta_orthogonal_variance(shape, args: dict) -> float:
  if len(shape) < 2:
    raise ValueError(f"delta_orthogonal needs a kernel of rank >= 2; got {shape}")
  return args["gain"] ** 2 / (math.prod(shape[:-2]) * max(shape[-2:]))


# factory -> (shape, full kwargs) -> per-entry variance.
_VARIANCE: dict[Callable[..., Initializer], Callable[[tuple, dict], float]] = {
    **{f: lambda s, a: _fan_variance(_he_scale(a["gain"], a["negative_slope"]), a["mode"], s, a)
       for f in (he_normal, he_uniform, he_truncated_normal)},
    **{f: lambda s, a: _fan_variance(a["gain"] ** 2, "fan_avg", s, a)
       for f in (xavier_normal, xavier_uniform)},
    **{f: lambda s, a: _fan_variance(1.0, "fan_in", s, a) for f in (lecun_normal, lecun_uniform)},
    orthogonal: _orthogonal_variance,
    identity: _orthogonal_variance,
    delta_orthogonal: _delta_orthogonal_variance,
    normal: lambda s, a: a["variance"],
    zeros: lambda s, a: 0.0,
    constant: lambda s, a: 0.0,
}


def expected_variance(name: str, shape: Sequence[int], **kwargs: Any) -> float:
  """Variance of each entry that ``get_initializer(name, **kwargs)`` draws for `shape`
  (0.0 for zeros/constant; gain^2 / max(n_rows, n_cols) for orthogonal)."""
  factory, args = _resolve(name, kwargs)
  factory(**args)  # validates the values
  return float(_VARIANCE[factory](tuple(int(d) for d in shape), args))
