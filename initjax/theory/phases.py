"""The correlation map, depth scales, phases and the critical line (Schoenholz et al. 2017).

Equations and conventions are in `initjax.mean_field` (sigma2_w = fan_in Var[W]). Two inputs
whose pre-activations have variance q and correlation c give, one layer on, the correlation

    C_q(c) = (sigma2_w E[phi(u_a) phi(u_b)] + sigma2_b) / F(q),
    F(q) = sigma2_w E[phi(u)^2] + sigma2_b

(at the fixed point F(q*) = q*: the c-map of Poole et al.), with slope
dC/dc = sigma2_w q E[phi'(u_a) phi'(u_b)] / F(q), which is chi_c = sigma2_w E[phi'(u_a) phi'(u_b)]
at (q*, c*). c* is found without cancellation from
(C(c) - c) / (1 - c) = 1 - sigma2_w E[(phi(u_a) - phi(u_b))^2] / (2 F(q) (1 - c)), which tends to
1 - chi_1 as c -> 1. Expectations over (u_a, u_b) are closed form for piecewise-linear
activations (the arc-cosine kernels) and polar quadrature otherwise
(`initjax.gaussian_expectations`).

Phases, for the fixed point reached from the input (`mean_field.reached_fixed_point`):
"ordered" (chi_1 < 1: c* = 1, chi_c = chi_1), "chaotic" (chi_1 > 1: c* < 1), "critical"
(chi_1 = 1 to 1e-9: xi_c = inf), "diverging" (q grows without bound and chi_1 > 1 in the large-q
limit). Schoenholz et al.: a network trains up to a depth of about 6 xi_c.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import optimize

from initjax.nn import activations
from initjax.nn import gaussian_expectations as gauss
from initjax.nn.activations import ActivationLike
from initjax.theory import mean_field

CRITICAL_TOL = 1e-9   # |chi_1 - 1| below this is "critical"
_C_TOP = 1.0 - 1e-10  # c* closer to 1 than this is reported as 1


def pair_moments(activation: ActivationLike, q: float, c: float) -> dict[str, float]:
  """E[phi(u_a) phi(u_b)], E[phi'(u_a) phi'(u_b)], E[(phi(u_a) - phi(u_b))^2] and
  E[phi(u_a)^2 phi(u_b)^2], E[phi(u_a)^2 phi(u_b)] for the pair (u_a, u_b) of variance q and
  correlation c ("phi_phi", "dphi_dphi", "diff2", "phi2_phi2", "phi2_phi"; the last by
  quadrature, the others closed form for piecewise-linear phi)."""
  record = activations.get(activation)
  u_a, u_b, w = gauss.bivariate_nodes(q, c)
  n = u_a.size
  phi = record.np_fn(np.concatenate([u_a, u_b]))
  dphi = record.np_derivative(np.concatenate([u_a, u_b]))
  out = {"phi_phi": float(np.sum(w * phi[:n] * phi[n:])),     # (no BLAS: see
         "dphi_dphi": float(np.sum(w * dphi[:n] * dphi[n:])),  # gaussian_expectations)
         "diff2": float(np.sum(w * (phi[:n] - phi[n:]) ** 2)),
         "phi2_phi2": float(np.sum(w * (phi[:n] * phi[n:]) ** 2)),
         "phi2_phi": float(np.sum(w * phi[:n] ** 2 * phi[n:]))}
  if record.slopes is not None:
    out.update(gauss.piecewise_linear_kernels(record.slopes, q, c))
    out["diff2"] = 2.0 * (float(mean_field.second_moments(record, q)[0]) - out["phi_phi"])
  if not all(math.isfinite(v) for v in out.values()):
    raise ValueError(f"Gaussian pair moments of activation {record.name!r} are not finite at "
                     f"q={q:g}, c={c:g}")
  return out


def c_map(activation: ActivationLike, sigma2_w: float, sigma2_b: float, c: float,
          q: float) -> float:
  """C_q(c) = (sigma2_w E[phi(u_a) phi(u_b)] + sigma2_b) / F(q) for inputs of variance q."""
  mean_field.check_variances(sigma2_w, sigma2_b)
  f_q = float(mean_field.q_map(activation, sigma2_w, sigma2_b, q)[0])
  return (sigma2_w * pair_moments(activation, q, c)["phi_phi"] + sigma2_b) / f_q


def c_map_slope(activation: ActivationLike, sigma2_w: float, sigma2_b: float, c: float,
                q: float) -> float:
  """dC_q/dc = sigma2_w q E[phi'(u_a) phi'(u_b)] / F(q) (= chi_c at q = q*, c = c*)."""
  mean_field.check_variances(sigma2_w, sigma2_b)
  f_q = float(mean_field.q_map(activation, sigma2_w, sigma2_b, q)[0])
  return sigma2_w * q * pair_moments(activation, q, c)["dphi_dphi"] / f_q


def fixed_point_c(activation: ActivationLike, sigma2_w: float, sigma2_b: float, q: float,
                  chi_1: float) -> float:
  """The stable fixed point c* in [0, 1] of C_q at a finite fixed point q > 0 of the q-map.

  chi_1 <= 1: c* = 1 (the convex C lies above the diagonal on [0, 1)). chi_1 > 1: the unique root
  of (C(c) - c) / (1 - c) on [0, 1) (0 when C(0) = 0: odd phi with zero bias).
  """
  if chi_1 <= 1.0:
    return 1.0
  f_q = float(mean_field.q_map(activation, sigma2_w, sigma2_b, q)[0])

  def h(c):
    return 1.0 - sigma2_w * pair_moments(activation, q, c)["diff2"] / (2.0 * f_q * (1.0 - c))

  h0 = h(0.0)
  if h0 <= 1e-13:
    return 0.0
  if h(_C_TOP) >= 0.0:
    return 1.0
  return float(optimize.brentq(h, 0.0, _C_TOP, xtol=1e-15, rtol=1e-14))


def _depth(factor: float) -> float:
  """1 / |ln|factor||: layers per e-fold of a quantity multiplied by `factor` each layer (inf at
  |factor| = 1, to 1e-9)."""
  factor = abs(factor)
  if abs(factor - 1.0) <= CRITICAL_TOL:
    return math.inf
  return 0.0 if factor == 0.0 else 1.0 / abs(math.log(factor))


@dataclasses.dataclass(frozen=True)
class DepthScales:
  """Mean-field depth scales at the fixed point reached from the input (see module docstring).

  xi_q = -1 / ln|F'(q*)| (nan when q grows without bound: no fixed point to approach),
  xi_c = -1 / ln chi_c, xi_grad = 1 / |ln chi_1| (layers over which the gradient variance changes
  by a factor e: shrinking where chi_1 < 1, growing where chi_1 > 1); inf at 1.
  """
  activation: str
  sigma2_w: float
  sigma2_b: float
  input_variance: float
  q_star: float
  c_star: float
  chi_1: float
  chi_c: float
  q_map_slope: float      # F'(q*); at q* = inf the growth factor lim F(q) / q
  xi_q: float
  xi_c: float
  xi_grad: float
  phase: str
  reason: str
  fixed_points: tuple[mean_field.FixedPoint, ...]


def _phase(chi_1: float, q_star: float) -> str:
  if abs(chi_1 - 1.0) <= CRITICAL_TOL:
    return "critical"
  if math.isinf(q_star):
    return "diverging"
  return "ordered" if chi_1 < 1.0 else "chaotic"


def depth_scales(activation: ActivationLike, sigma2_w: float, sigma2_b: float = 0.0, *,
                 input_variance: float = 1.0) -> DepthScales:
  """q*, c*, chi_1, chi_c, xi_q, xi_c and the phase at the fixed point that a network with inputs
  of E[x_j^2] = input_variance reaches (q^0 = sigma2_w input_variance + sigma2_b).

  At q* = 0 or inf the correlation map is that of phi's linearization (c* = 1, chi_c = 1,
  xi_c = inf; `initjax.mean_field`), and `reason` says so.
  """
  record = activations.get(activation)
  q_star, why, points = mean_field.reached_fixed_point(record, sigma2_w, sigma2_b,
                                                       input_variance)
  finite = math.isfinite(q_star) and q_star > 0
  chi1 = mean_field.chi_1_at(record, sigma2_w, min(q_star, mean_field.Q_GRID[-1]))
  if math.isinf(q_star):
    top = mean_field.Q_GRID[-1]
    slope = float(mean_field.q_map(record, sigma2_w, sigma2_b, top)[0]) / top
    xi_q = math.nan
  else:
    slope = mean_field.q_map_slope(record, sigma2_w, q_star)
    xi_q = _depth(slope)
  if finite:
    c_star = fixed_point_c(record, sigma2_w, sigma2_b, q_star, chi1)
    chi_c = c_map_slope(record, sigma2_w, sigma2_b, c_star, q_star)
  else:
    c_star, chi_c = 1.0, 1.0
    why += ("; there correlations follow the c-map of phi's piecewise-linear limit: c* = 1 with "
            "slope 1 (algebraic, not exponential, convergence)")
  return DepthScales(
      activation=record.name, sigma2_w=float(sigma2_w), sigma2_b=float(sigma2_b),
      input_variance=float(input_variance), q_star=float(q_star), c_star=float(c_star),
      chi_1=float(chi1), chi_c=float(chi_c), q_map_slope=float(slope), xi_q=xi_q,
      xi_c=_depth(chi_c) if chi_c <= 1.0 + CRITICAL_TOL else math.nan, xi_grad=_depth(chi1),
      phase=_phase(chi1, q_star), reason=why, fixed_points=points)


# ------------------------------------------------------------------------------------------------
# The critical line.

@dataclasses.dataclass(frozen=True)
class PhaseBoundary:
  """Where chi_1 at the reached fixed point passes 1 as sigma2_w grows, at fixed sigma2_b.

  continuous: chi_1 reaches 1 there from at least one side (an edge of chaos, xi_c -> inf);
  otherwise the reached fixed point jumps (GELU from unit inputs: q* = 0 -> growth) and chi_1
  jumps from chi_1_below to chi_1_above without passing 1.
  """
  sigma2_b: float
  sigma2_w: float
  continuous: bool
  chi_1_below: float
  chi_1_above: float
  q_below: float
  q_above: float


def phase_boundary(activation: ActivationLike, sigma2_b: float = 0.0, *,
                   input_variance: float = 1.0, lo: float = 0.05,
                   hi: float = 1e4) -> PhaseBoundary:
  """The first sigma2_w in [lo, hi] (log grid, then bisection of log sigma2_w to 1e-10) where
  chi_1 - 1 at the fixed point reached from the input changes sign. ValueError if none does."""
  record = activations.get(activation)
  mean_field.check_variances(lo, sigma2_b, input_variance)
  chi = lambda s: mean_field.chi_1(record, s, sigma2_b, input_variance) - 1.0
  grid = np.geomspace(lo, hi, 49)
  values = [chi(float(s)) for s in grid]
  bracket = next((i for i in range(len(grid) - 1) if values[i] * values[i + 1] <= 0), None)
  if bracket is None:
    raise ValueError(f"chi_1 = 1 has no root for {record.name!r} with sigma2_w in [{lo}, {hi}] "
                     f"(sigma2_b={sigma2_b}, input_variance={input_variance})")
  a, b, g_a = math.log(grid[bracket]), math.log(grid[bracket + 1]), values[bracket]
  while b - a > 1e-10:
    m = 0.5 * (a + b)
    g_m = chi(math.exp(m))
    if g_m * g_a > 0:
      a, g_a = m, g_m
    else:
      b = m
  # Each side is looked at 1e-7 away: at a jump the input sits on the unstable fixed point
  # exactly at the boundary.
  s_lo, s_hi = math.exp(a - 1e-7), math.exp(b + 1e-7)
  below, above = chi(s_lo) + 1.0, chi(s_hi) + 1.0
  continuous = abs(below - 1.0) < 1e-3 or abs(above - 1.0) < 1e-3
  if abs(below - 1.0) < 1e-3 and abs(above - 1.0) < 1e-3:
    s = math.exp(0.5 * (a + b))
  elif abs(below - 1.0) < 1e-3:
    s = math.exp(a)   # one-sided: the edge of chaos is where chi_1 reaches 1 continuously
  else:
    s = math.exp(b)
  return PhaseBoundary(
      sigma2_b=float(sigma2_b), sigma2_w=s, continuous=continuous, chi_1_below=below,
      chi_1_above=above,
      q_below=mean_field.fixed_point_q(record, s_lo, sigma2_b, input_variance),
      q_above=mean_field.fixed_point_q(record, s_hi, sigma2_b, input_variance))


def critical_weight_variance(activation: ActivationLike, sigma2_b: float = 0.0, lo: float = 0.05,
                             hi: float = 1e4, *, input_variance: float = 1.0) -> float:
  """The sigma2_w (= fan_in Var[W]) at which chi_1 = 1 at the reached fixed point: the edge of
  chaos. ReLU with zero bias: 2 (He); tanh with zero bias: 1 (LeCun); tanh with
  sigma2_b = 0.05: 1.761.

  Raises ValueError when chi_1 does not reach 1 in [lo, hi], or jumps over 1 (the reached fixed
  point jumps; `phase_boundary` describes the jump).
  """
  record = activations.get(activation)
  if record.slopes is not None and sigma2_b == 0.0:
    mean_field.check_variances(1.0, sigma2_b, input_variance)
    return 1.0 / record.gaussian_moments(1.0)["second_moment_da"]
  boundary = phase_boundary(record, sigma2_b, input_variance=input_variance, lo=lo, hi=hi)
  if not boundary.continuous:
    raise ValueError(
        f"{record.name!r} has no edge of chaos from input_variance={input_variance}: at "
        f"sigma2_w={boundary.sigma2_w:.4f} the reached q* jumps from {boundary.q_below:.3g} to "
        f"{boundary.q_above:.3g} and chi_1 from {boundary.chi_1_below:.3f} to "
        f"{boundary.chi_1_above:.3f}")
  return boundary.sigma2_w


def critical_line(activation: ActivationLike, sigma2_b: Sequence[float], *,
                  input_variance: float = 1.0) -> dict[str, np.ndarray]:
  """The phase boundary sigma2_w(sigma2_b) for each sigma2_b: {"sigma2_b", "sigma2_w",
  "continuous"} (a False marks a jump of the reached fixed point, not an edge of chaos)."""
  rows = [phase_boundary(activation, float(b), input_variance=input_variance) for b in sigma2_b]
  return {"sigma2_b": np.array([r.sigma2_b for r in rows]),
          "sigma2_w": np.array([r.sigma2_w for r in rows]),
          "continuous": np.array([r.continuous for r in rows])}
