"""Activation functions a[.], one record per name: everything initjax knows about each.

An `Activation` holds the function for the networks (JAX), its float64 NumPy twin and derivative
for the theory's quadrature, its recommended initialization gain, and, for the piecewise-linear
ones (ReLU, leaky ReLU, identity), the two slopes from which the theory's closed-form Gaussian
moments and the positive homogeneity that `initjax.propagation` relies on follow. The networks,
the initializers' `gain` and the theory all read these records, so a new activation is one entry
in `ACTIVATIONS`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from initjax.errors import check_choice

LEAKY_RELU_SLOPE = 0.01  # torch.nn.LeakyReLU, jax.nn.leaky_relu and calculate_gain default
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@dataclasses.dataclass(frozen=True)
class Activation:
  """Everything about one activation a[.].

  Attributes:
    name: the registry name (flags, tidy CSV columns).
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
  np_fn: Callable[[np.ndarray], np.ndarray]
  np_derivative: Callable[[np.ndarray], np.ndarray]
  gain: float | None = None
  slopes: tuple[float, float] | None = None

  @property
  def positively_homogeneous(self) -> bool:
    """a[c f] = c a[f] for every c > 0 (true exactly for the piecewise-linear ones)."""
    return self.slopes is not None

  @property
  def init_gain(self) -> float:
    """The gain g: `gain` if given, else He's sqrt(2 / (p^2 + n^2)) from the slopes (p, n)."""
    if self.gain is not None:
      return self.gain
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
)}


def activation_names() -> list[str]:
  return sorted(ACTIVATIONS)


def check_activation(name: str) -> str:
  return check_choice("activation", name, activation_names())


def get(name: str) -> Activation:
  """The record of activation `name`; ValueError listing the valid names otherwise."""
  return ACTIVATIONS[check_activation(name)]


def get_activation(name: str) -> Callable:
  """Returns a[.] for `name` (elementwise, JAX)."""
  return get(name).fn


def get_activation_derivative(name: str) -> Callable:
  """Returns a'[.] for `name` (elementwise, JAX), I[f > 0] for ReLU as in the book."""
  return get(name).derivative
