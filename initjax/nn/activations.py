"""Activation functions a[.], one record per activation: everything initjax knows about each.

An `Activation` holds the function for the networks (JAX), its float64 NumPy twin and derivative
for the theory's quadrature, its recommended initialization gain, and, for the piecewise-linear
ones (ReLU, leaky ReLU, identity), the two slopes from which the theory's closed-form Gaussian
moments and the positive homogeneity that `initjax.propagation` relies on follow. The networks,
the initializers' `gain` and the theory all read these records.

Everywhere initjax takes an activation it accepts a registered name, an `Activation`, or a
JAX-traceable elementwise callable (`get`). A callable becomes a record whose NumPy twin runs the
callable itself in float64 (under `jax.enable_x64`) and whose derivative is autodiff; it is
checked once on a probe grid. A new named activation is one call of `register` (then the command
line accepts its name too), or one entry in `ACTIVATIONS`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from initjax.core.errors import check_choice
from initjax.nn.gaussian_expectations import gaussian_expectation

LEAKY_RELU_SLOPE = 0.01  # torch.nn.LeakyReLU, jax.nn.leaky_relu and calculate_gain default
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
PROBE_GRID = np.linspace(-30.0, 30.0, 241)  # where a callable is checked (0 is a node)


@dataclasses.dataclass(frozen=True)
class Activation:
  """Everything about one activation a[.].

  Two records are equal (and hash equal) when their `name` and `fn` are: records built twice
  from the same function are interchangeable as static arguments of `jax.jit` and cache keys.

  Attributes:
    name: the registry name (flags, tidy CSV columns); a callable's `__name__` otherwise.
    fn: a[f] on JAX arrays, elementwise.
    np_fn, np_derivative: a[f] and a'[f] on float64 NumPy arrays (the theory's quadrature).
    gain: the recommended gain g (Var[W] = g^2 / fan_in), as torch.nn.init.calculate_gain; None
      for piecewise-linear activations, whose gain follows from their slopes.
    slopes: (slope for f > 0, slope for f < 0) of an activation that is linear on each half-line
      (ReLU (1, 0), leaky ReLU (1, 0.01), identity (1, 1)); None otherwise. Such an activation is
      positively homogeneous (a[c f] = c a[f] for c > 0) and its Gaussian moments are closed form.
  """
  name: str
  fn: Callable[[jax.Array], jax.Array]
  np_fn: Callable[[np.ndarray], np.ndarray] = dataclasses.field(compare=False, repr=False)
  np_derivative: Callable[[np.ndarray], np.ndarray] = dataclasses.field(compare=False,
                                                                        repr=False)
  gain: float | None = dataclasses.field(default=None, compare=False)
  slopes: tuple[float, float] | None = dataclasses.field(default=None, compare=False)

  @property
  def positively_homogeneous(self) -> bool:
    """a[c f] = c a[f] for every c > 0 (true exactly for the piecewise-linear ones)."""
    return self.slopes is not None

  @property
  def init_gain(self) -> float:
    """The gain g: `gain` if given, else He's sqrt(2 / (p^2 + n^2)) from the slopes (p, n), else
    `variance_preserving_gain`."""
    if self.gain is not None:
      return self.gain
    if self.slopes is None:
      return variance_preserving_gain(self.np_fn)
    p, n = self.slopes
    return math.sqrt(2.0 / (p * p + n * n))

  def derivative(self, f: jax.Array) -> jax.Array:
    """a'[f] on JAX arrays: the slope on each side for piecewise-linear activations (so ReLU's is
    the book's indicator I[f > 0], a'(0) = 0), autodiff otherwise."""
    if self.slopes is not None:
      p, n = self.slopes
      return jnp.where(f > 0, p, n).astype(f.dtype)
    return jnp.vectorize(jax.grad(self.fn))(f)

  def gaussian_moments(self, variance: float) -> dict[str, float] | None:
    """Closed-form moments for f ~ N(0, variance) (piecewise linear only, else None).

    With slopes (p, n) and s = sqrt(variance): E[a[f]] = (p - n) s / sqrt(2 pi),
    E[a[f]^2] = (p^2 + n^2) / 2 * variance, E[a'[f]^2] = (p^2 + n^2) / 2.
    """
    if self.slopes is None:
      return None
    p, n = self.slopes
    half_sq = 0.5 * (p * p + n * n)
    mean_h = (p - n) * math.sqrt(max(variance, 0.0)) / math.sqrt(2.0 * math.pi)
    m2 = half_sq * variance
    return {"mean_h": mean_h, "second_moment_h": m2, "var_h": m2 - mean_h ** 2,
            "second_moment_da": half_sq}


# What every `activation` argument of initjax accepts: a registered name, an `Activation`, or a
# JAX-traceable elementwise callable (see `get`).
ActivationLike = str | Activation | Callable[[jax.Array], jax.Array]


def _piecewise_linear(name: str, positive: float, negative: float,
                      fn: Callable[[jax.Array], jax.Array]) -> Activation:
  return Activation(
      name=name, fn=fn, slopes=(positive, negative),
      np_fn=lambda f: np.where(f > 0, positive * f, negative * f),
      np_derivative=lambda f: np.where(f > 0, positive, negative) * np.ones_like(f))


def _gelu(f):
  return jax.nn.gelu(f, approximate=False)


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    _piecewise_linear("relu", 1.0, 0.0, jax.nn.relu),
    _piecewise_linear("leaky_relu", 1.0, LEAKY_RELU_SLOPE,
                      lambda f: jnp.where(f > 0, f, LEAKY_RELU_SLOPE * f)),
    _piecewise_linear("identity", 1.0, 1.0, lambda f: f),
    Activation("tanh", jnp.tanh, np.tanh, lambda f: 1.0 - np.tanh(f) ** 2, gain=5.0 / 3.0),
    Activation("sigmoid", jax.nn.sigmoid, special.expit,
               lambda f: special.expit(f) * (1.0 - special.expit(f)), gain=1.0),
    # softsign'(0) = 1 like tanh, without torch's 5/3 correction: initjax's choice.
    Activation("softsign", lambda f: f / (1.0 + jnp.abs(f)), lambda f: f / (1.0 + np.abs(f)),
               lambda f: 1.0 / (1.0 + np.abs(f)) ** 2, gain=1.0),
    # GELU is ReLU-like (~f for f >> 0, ~0 for f << 0): ReLU's gain, initjax's choice.
    Activation("gelu", _gelu, lambda f: 0.5 * f * (1.0 + special.erf(f / math.sqrt(2.0))),
               lambda f: (0.5 * (1.0 + special.erf(f / math.sqrt(2.0)))
                          + f * np.exp(-0.5 * f * f) / math.sqrt(2.0 * math.pi)),
               gain=math.sqrt(2.0)),
    Activation("selu", jax.nn.selu,
               lambda f: SELU_SCALE * np.where(f > 0, f, SELU_ALPHA * np.expm1(np.minimum(f, 0))),
               lambda f: SELU_SCALE * np.where(f > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(f, 0))),
               gain=0.75),
    # SiLU / swish (jax.nn.silu is jax.nn.swish), f sigmoid(f): not in torch's calculate_gain,
    # so its gain is the variance-preserving one of any callable (`variance_preserving_gain`).
    Activation("silu", jax.nn.silu, lambda f: f * special.expit(f),
               lambda f: special.expit(f) * (1.0 + f * (1.0 - special.expit(f)))),
)}


def activation_names() -> list[str]:
  return sorted(ACTIVATIONS)


def check_activation(activation):
  """`activation` unchanged if `get` accepts it (a name, a record or a callable), else the one-line
  error of `get`."""
  get(activation)
  return activation


def get(activation) -> Activation:
  """The record of a registered name, an `Activation` itself, or the record of a callable.

  A callable that is a registered activation's function (jax.nn.relu, jnp.tanh, ...) gives that
  record (with its closed forms); any other callable a record built once per function object
  (`from_callable`), so passing the same function twice gives the same record. Raises ValueError
  listing the valid names for an unknown name, or naming the problem of a callable.
  """
  if isinstance(activation, Activation):
    return activation
  if isinstance(activation, str):
    return ACTIVATIONS[check_choice("activation", activation, activation_names())]
  if callable(activation):
    for record in ACTIVATIONS.values():
      if record.fn is activation:
        return record
    return _record_of(activation)
  raise ValueError(f"activation must be a name, an Activation or a callable; got "
                   f"{type(activation).__name__} {activation!r}")


def get_activation(activation) -> Callable:
  """Returns a[.] (elementwise, JAX) for a name, a record or a callable."""
  return get(activation).fn


def get_activation_derivative(activation) -> Callable:
  """Returns a'[.] (elementwise, JAX), I[f > 0] for ReLU as in the book."""
  return get(activation).derivative


# ------------------------------------------------------------------------------------------------
# Callables.

def _pad_length(n: int) -> int:
  return max(256, 1 << (n - 1).bit_length())  # few distinct shapes -> few compilations


def _float64_twin(fn: Callable) -> Callable[[np.ndarray], np.ndarray]:
  """x -> fn(x) evaluated by JAX in float64, for NumPy arrays of any shape (flattened and padded
  to a power of two, so that the jitted function compiles for a handful of shapes only)."""
  jitted = jax.jit(fn)

  def twin(x):
    x = np.asarray(x, np.float64)
    flat = x.ravel()
    padded = np.zeros(_pad_length(flat.size))
    padded[:flat.size] = flat
    # Eagerly, also when called while a network that uses the activation is being traced.
    with jax.enable_x64(True), jax.ensure_compile_time_eval():
      out = np.asarray(jitted(jnp.asarray(padded)), np.float64)
    if out.shape != padded.shape:
      raise ValueError(f"maps shape {padded.shape} to {out.shape}")
    return out[:flat.size].reshape(x.shape)

  return twin


def variance_preserving_gain(np_fn: Callable[[np.ndarray], np.ndarray]) -> float:
  """g = 1 / sqrt(E[a(z)^2]), z ~ N(0, 1): the gain of a callable (and of SiLU).

  With Var[W] = g^2 / fan_in and zero biases, a unit pre-activation variance is a fixed point of
  the mean-field map q -> g^2 E[a(sqrt(q) z)^2]: the forward variance is kept at q = 1. It gives
  sqrt(2) for ReLU and 1 for the identity (He and LeCun, as torch) and 1.59 for tanh (torch's
  empirical 5/3 = 1.67).
  """
  return 1.0 / math.sqrt(gaussian_expectation(lambda f: np_fn(f) ** 2, 1.0))


def _probe(name: str, np_fn, np_derivative) -> None:
  """One-line ValueError if the callable is not traceable, not elementwise or not finite."""
  for what, fn in (("a(f)", np_fn), ("a'(f)", np_derivative)):
    try:
      values = fn(PROBE_GRID)
    except Exception as e:  # pylint: disable=broad-except
      first = (str(e).strip().splitlines() or [""])[0]
      raise ValueError(f"activation {name!r} is not a JAX-traceable elementwise function: "
                       f"{what} raised {type(e).__name__}: {first}") from None
    bad = ~np.isfinite(values)
    if bad.any():
      raise ValueError(f"activation {name!r} gives non-finite {what} = {values[bad][0]} at "
                       f"f = {PROBE_GRID[bad][0]:g} (checked on [-30, 30] in float64)")


def from_callable(fn: Callable, name: str | None = None, gain: float | None = None,
                  slopes: tuple[float, float] | None = None) -> Activation:
  """A record for an elementwise, JAX-traceable callable a[f].

  Its NumPy twin evaluates `fn` itself in float64 and its derivative is `jax.grad` (so a kink is
  differentiated as JAX does: ReLU'(0) = 0). Both are checked on [-30, 30]: ValueError if `fn`
  cannot be traced, is not elementwise, or gives a non-finite value there. `gain` defaults to
  `variance_preserving_gain`; `slopes` (p, n) declares a piecewise-linear activation (closed-form
  moments, positive homogeneity) and is the caller's promise.
  """
  if not callable(fn):
    raise ValueError(f"activation must be callable; got {type(fn).__name__}")
  name = name or getattr(fn, "__name__", None) or type(fn).__name__
  np_fn = _float64_twin(fn)
  np_derivative = _float64_twin(jnp.vectorize(jax.grad(fn)))
  _probe(name, np_fn, np_derivative)
  if gain is None and slopes is None:
    gain = variance_preserving_gain(np_fn)
  return Activation(name=name, fn=fn, np_fn=np_fn, np_derivative=np_derivative, gain=gain,
                    slopes=None if slopes is None else (float(slopes[0]), float(slopes[1])))


@functools.lru_cache(maxsize=256)
def _record_of(fn: Callable) -> Activation:
  return from_callable(fn)


def register(name: str, fn: Callable, *, gain: float | None = None,
             slopes: tuple[float, float] | None = None, overwrite: bool = False) -> Activation:
  """Adds a named activation (checked as `from_callable`) to `ACTIVATIONS` and returns it.

  After `register("my_act", fn)` every part of initjax, flags included, accepts "my_act" and
  `fn` itself gives the same record. Raises ValueError if the name is taken (unless `overwrite`)
  or is not a plain identifier.
  """
  if not (isinstance(name, str) and name.isidentifier()):
    raise ValueError(f"activation name must be an identifier; got {name!r}")
  if name in ACTIVATIONS and not overwrite:
    raise ValueError(f"activation {name!r} is already registered (pass overwrite=True)")
  record = from_callable(fn, name=name, gain=gain, slopes=slopes)
  ACTIVATIONS[name] = record
  return record
