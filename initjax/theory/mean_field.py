"""Mean-field signal propagation for any activation: fixed points, correlations, depth scales.

Convention (the one place it is stated; `chi_1` and the rest of `initjax.theory` use it):
sigma2_w = fan_in * Var[W], i.e. W_ij ~ N(0, sigma2_w / N_{l-1}), and sigma2_b = Var[b]. He for
ReLU is sigma2_w = 2, LeCun (Xavier's forward condition) sigma2_w = 1.

Poole et al. 2016 and Schoenholz et al. 2017, with z, z1, z2 independent standard normals:

    q-map      q^l = F(q^{l-1}) = sigma2_w E[phi(sqrt(q^{l-1}) z)^2] + sigma2_b
    input      q^0 = sigma2_w * input_variance + sigma2_b     (the first layer, E[x_j^2] =
               input_variance)
    chi_1      = sigma2_w E[phi'(sqrt(q*) z)^2]               (gradient variance factor per layer)
    F'(q)      = sigma2_w E[phi'(u)^2 + phi(u) phi''(u)] = sigma2_w E[u phi(u) phi'(u)] / q
    c-map      c^l = (sigma2_w E[phi(u_a) phi(u_b)] + sigma2_b) / q*,
               u_a = sqrt(q*) z1, u_b = sqrt(q*) (c^{l-1} z1 + sqrt(1 - (c^{l-1})^2) z2)
    chi_c      = sigma2_w E[phi'(u_a) phi'(u_b)] at c = c*   (the slope of the c-map at c*)
    xi_q       = -1 / ln F'(q*),   xi_c = -1 / ln chi_c

(F'(q) by Stein's lemma, E[z g(sqrt(q) z)] = sqrt(q) E[g'], which needs no phi'' and so holds at
kinks too.) In the ordered phase (chi_1 < 1) c* = 1 and chi_c = chi_1; in the chaotic phase
(chi_1 > 1) c* < 1. The c-map is a power series in c with nonnegative coefficients (the squared
Hermite coefficients of phi(sqrt(q*) z)), so on [0, 1] it is increasing and convex with C(1) = 1,
C'(1) = chi_1: c* in [0, 1] is unique, and xi_c diverges exactly where chi_1 = 1.

**Which fixed point.** An activation may have several fixed points of the q-map (GELU and SiLU
with zero bias: q = 0 is stable for sigma2_w < 1 / phi'(0)^2, and an unstable q_u separates it
from growth without bound). Every function here follows the trajectory q^0, q^1, ... from the
network's actual input: for a monotone F it moves to the nearest fixed point in the direction of
F(q^0) - q^0; otherwise the map is iterated. The result names the fixed point reached and why.

**Degenerate fixed points.** q* = 0 (zero bias, phi(0) = 0) and q* = inf (growth without bound)
are reported as limits of the trajectory. There phi acts as its linearization, linear on each
half-line near 0 or for |u| -> inf (true of every registered activation); the c-map of such a
positively homogeneous function has slope exactly 1 at c = 1, so c* = 1, chi_c = 1 and
xi_c = inf: correlations converge algebraically (ReLU: the arc-cosine map) or freeze (a
linear network), while the signal and its gradients shrink or grow by F'(q*) and chi_1 per layer.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize

from initjax.nn import activations
from initjax.nn import gaussian_expectations as gauss
from initjax.nn.activations import ActivationLike

Q_GRID = np.geomspace(1e-10, 1e10, 241)  # where the q-map is scanned for fixed points
Q_TINY = 1e-200   # q -> 0+ limits (one-sided slopes of phi at 0)
MAX_ITERATIONS = 10_000
PHASES = ("ordered", "critical", "chaotic", "diverging")


def check_variances(sigma2_w: float, sigma2_b: float, input_variance: float = 1.0) -> None:
  """One-line ValueError unless sigma2_w > 0, sigma2_b >= 0 and input_variance >= 0, finite."""
  for name, value, ok in (("sigma2_w", sigma2_w, lambda v: v > 0),
                          ("sigma2_b", sigma2_b, lambda v: v >= 0),
                          ("input_variance", input_variance, lambda v: v >= 0)):
    if not (isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value)
            and ok(value)):
      bound = "> 0" if name == "sigma2_w" else ">= 0"
      raise ValueError(f"{name} must be finite and {bound}; got {value!r}")


def _finite(values, what: str, record) -> np.ndarray:
  values = np.asarray(values, np.float64)
  if np.isnan(values).any():
    raise ValueError(f"{what} of activation {record.name!r} is not finite (NaN)")
  return values


# ------------------------------------------------------------------------------------------------
# The q-map.

def second_moments(activation: ActivationLike, q) -> np.ndarray:
  """E[phi(sqrt(q) z)^2] for each q (closed form for piecewise-linear phi)."""
  record = activations.get(activation)
  q = np.atleast_1d(np.asarray(q, np.float64))
  if record.slopes is not None:
    p, n = record.slopes
    return 0.5 * (p * p + n * n) * q
  return _finite(gauss.gaussian_expectations(lambda u: record.np_fn(u) ** 2, q),
                 "E[a(f)^2]", record)


def q_map(activation: ActivationLike, sigma2_w: float, sigma2_b: float, q) -> np.ndarray:
  """F(q) = sigma2_w E[phi(sqrt(q) z)^2] + sigma2_b, elementwise in q."""
  return sigma2_w * second_moments(activation, q) + sigma2_b


def q_map_slope(activation: ActivationLike, sigma2_w: float, q: float) -> float:
  """F'(q) = sigma2_w E[u phi(u) phi'(u)] / q, u ~ N(0, q) (= chi_1 + sigma2_w E[phi phi''])."""
  record = activations.get(activation)
  if record.slopes is not None:
    p, n = record.slopes
    return sigma2_w * 0.5 * (p * p + n * n)
  q = max(q, Q_TINY)
  value = gauss.gaussian_expectation(lambda u: u * record.np_fn(u) * record.np_derivative(u), q)
  return float(_finite(sigma2_w * value / q, "E[f a(f) a'(f)]", record))


def chi_1_at(activation: ActivationLike, sigma2_w: float, q: float) -> float:
  """chi_1 = sigma2_w E[phi'(sqrt(q) z)^2] at a given q (q = 0: the limit q -> 0+)."""
  record = activations.get(activation)
  if record.slopes is not None:
    p, n = record.slopes
    return sigma2_w * 0.5 * (p * p + n * n)
  value = gauss.gaussian_expectation(lambda u: record.np_derivative(u) ** 2, max(q, Q_TINY))
  return float(_finite(sigma2_w * value, "E[a'(f)^2]", record))


def zero_is_fixed(activation) -> bool:
  """phi(0) = 0, so that q = 0 is a fixed point of the q-map with zero bias."""
  return float(activations.get(activation).np_fn(np.zeros(1))[0]) == 0.0


@dataclasses.dataclass(frozen=True)
class FixedPoint:
  """A fixed point q = F(q) of the q-map; q = inf stands for growth without bound."""
  q: float
  slope: float   # F'(q); for q = inf the growth factor lim F(q) / q
  stable: bool   # |slope| < 1 (q = inf: attracting when the growth factor is > 1)


def q_fixed_points(activation: ActivationLike, sigma2_w: float,
                   sigma2_b: float = 0.0) -> tuple[FixedPoint, ...]:
  """All fixed points of the q-map, ascending: 0 (zero bias, phi(0) = 0), the roots of
  F(q) = q found on a log grid over [1e-10, 1e10] (refined by brentq), and inf when F(q) > q at
  the top of the grid. A map with F(q) = q everywhere (ReLU at He, zero bias) has none listed."""
  check_variances(sigma2_w, sigma2_b)
  record = activations.get(activation)
  f = lambda q: float(q_map(record, sigma2_w, sigma2_b, q)[0])
  g = q_map(record, sigma2_w, sigma2_b, Q_GRID) - Q_GRID
  if np.all(np.abs(g) <= 1e-12 * Q_GRID):
    return ()
  points = []
  if sigma2_b == 0.0 and zero_is_fixed(record):
    points.append(0.0)
  elif g[0] < 0:          # F(0) > 0 = q: a root below the grid
    points.append(optimize.brentq(lambda q: f(q) - q, 0.0, Q_GRID[0], xtol=1e-300))
  sign = np.sign(g)
  for i in range(len(Q_GRID)):
    if sign[i] == 0:                                   # a root on a grid node
      points.append(float(Q_GRID[i]))
    elif i + 1 < len(Q_GRID) and sign[i] * sign[i + 1] < 0:
      points.append(optimize.brentq(lambda q: f(q) - q, Q_GRID[i], Q_GRID[i + 1], xtol=1e-300,
                                    rtol=1e-13))
  out = [FixedPoint(float(q), float(s), bool(abs(s) < 1.0))
         for q, s in ((q, q_map_slope(record, sigma2_w, q)) for q in points)]
  if g[-1] > 0:
    growth = f(Q_GRID[-1]) / Q_GRID[-1]
    out.append(FixedPoint(math.inf, float(growth), bool(growth > 1.0)))
  return tuple(out)


def _iterate(record, sigma2_w, sigma2_b, q0, points) -> tuple[float, str]:
  """Iterates the (non-monotone) q-map from q0 until it settles on one of `points`."""
  q = q0
  for layer in range(MAX_ITERATIONS):
    q_next = float(q_map(record, sigma2_w, sigma2_b, q)[0])
    if not math.isfinite(q_next) or q_next > 10 * Q_GRID[-1]:
      return math.inf, "the q-map is not monotone; iterated from q^0 it grows without bound"
    if abs(q_next - q) <= 1e-13 * max(q, 1e-300):
      return q_next, f"the q-map is not monotone; iterated from q^0 it settles after {layer} layers"
    q = q_next
  raise ValueError(f"the q-map of activation {record.name!r} at sigma2_w={sigma2_w}, "
                   f"sigma2_b={sigma2_b} does not settle within {MAX_ITERATIONS} layers from "
                   f"q^0 = {q0:g}")


def reached_fixed_point(activation: ActivationLike, sigma2_w: float, sigma2_b: float = 0.0,
                        input_variance: float = 1.0) -> tuple[float, str, tuple[FixedPoint, ...]]:
  """(q*, why, all fixed points): the fixed point the trajectory from q^0 = sigma2_w *
  input_variance + sigma2_b reaches, a one-line reason, and `q_fixed_points`.

  If F is increasing between q^0 and the candidate (every registered activation), q^l moves
  monotonically to the nearest fixed point above q^0 (F(q^0) > q^0) or below it (F(q^0) < q^0);
  inf when none is above. Otherwise the map is iterated. With input_variance = 0 and zero bias
  the trajectory starts at q = 0+: at 0 if 0 is stable, else at the next fixed point above.

  Raises:
    ValueError: saying why, for variances that are not finite or negative, and for a q^0
      beyond the scanned range (above 1e10, e.g. tanh at sigma2_w = 1e30) unless the activation
      is piecewise linear (then every q behaves alike).
  """
  check_variances(sigma2_w, sigma2_b, input_variance)
  record = activations.get(activation)
  q0 = sigma2_w * input_variance + sigma2_b
  given = (f"(sigma2_w={sigma2_w!r}, sigma2_b={sigma2_b!r}, input_variance="
           f"{input_variance!r})")
  if not math.isfinite(q0):
    raise ValueError(f"q^0 = sigma2_w * input_variance + sigma2_b is not finite {given}: the "
                     "variance overflows")
  if q0 > Q_GRID[-1] and record.slopes is None:
    raise ValueError(
        f"q^0 = sigma2_w * input_variance + sigma2_b = {q0:.6g} {given} is beyond q = "
        f"{Q_GRID[-1]:g}, the largest variance at which the mean-field theory of activation "
        f"{record.name!r} resolves its fixed points; it cannot tell where such a network goes")
  points = q_fixed_points(record, sigma2_w, sigma2_b)
  if not points:
    return q0, "F(q) = q for every q: q^l stays at q^0", points
  values = [p.q for p in points]
  g0 = float(q_map(record, sigma2_w, sigma2_b, q0)[0]) - q0
  if q0 == 0.0 and values[0] == 0.0:
    if points[0].stable:
      return 0.0, "q^0 = 0 is a stable fixed point", points
    g0 = 1.0   # an infinitesimal input grows away from the unstable q = 0
  if g0 == 0.0 or q0 in values:
    return q0, "q^0 is a fixed point", points
  if g0 > 0:
    target = next((q for q in values if q > q0), math.inf)
  else:
    target = next((q for q in reversed(values) if q < q0), None)
    if target is None:   # F(q^0) < q^0 with no fixed point below: not for a continuous F
      raise ValueError(f"the q-map of activation {record.name!r} at sigma2_w={sigma2_w!r}, "
                       f"sigma2_b={sigma2_b!r} shrinks q^0 = {q0:.6g} but has no fixed point "
                       "below it in the range the theory resolves")
  lo, hi = sorted((q0, min(target, Q_GRID[-1])))
  grid = np.concatenate([[lo], Q_GRID[(Q_GRID > lo) & (Q_GRID < hi)], [hi]])
  if np.any(np.diff(q_map(record, sigma2_w, sigma2_b, grid)) < -1e-12 * grid[1:]):
    q_star, why = _iterate(record, sigma2_w, sigma2_b, q0, values)
    return q_star, why, points
  unstable = [p.q for p in points if not p.stable and math.isfinite(p.q)]
  side = "grows" if g0 > 0 else "shrinks"
  why = f"from q^0 = {q0:.4g} the variance {side} to q* = {target:.4g}"
  if math.isinf(target):
    why = f"from q^0 = {q0:.4g} the variance grows without bound"
  if unstable:
    why += f" (unstable fixed point{'s' if len(unstable) > 1 else ''} at q = " + ", ".join(
        f"{q:.4g}" for q in unstable) + ")"
  return target, why, points


def fixed_point_q(activation: ActivationLike, sigma2_w: float, sigma2_b: float = 0.0,
                  input_variance: float = 1.0) -> float:
  """q* reached from q^0 = sigma2_w * input_variance + sigma2_b (see `reached_fixed_point`):
  0.0 when the variance contracts to zero, inf when it grows without bound."""
  return reached_fixed_point(activation, sigma2_w, sigma2_b, input_variance)[0]


def chi_1(activation: ActivationLike, sigma2_w: float, sigma2_b: float = 0.0,
          input_variance: float = 1.0) -> float:
  """chi_1 = sigma2_w E[phi'(sqrt(q*) z)^2] at the fixed point reached from the input (q* = inf:
  its large-q limit, evaluated at q = 1e10; q* = 0: the limit q -> 0+)."""
  record = activations.get(activation)
  if record.slopes is not None and sigma2_b == 0.0:
    check_variances(sigma2_w, sigma2_b, input_variance)
    return chi_1_at(record, sigma2_w, 1.0)  # E[a'^2] does not depend on q
  q = fixed_point_q(record, sigma2_w, sigma2_b, input_variance)
  return chi_1_at(record, sigma2_w, min(q, Q_GRID[-1]))
