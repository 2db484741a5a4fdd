"""The spectrum of a deep network's input-output Jacobian, from free probability.

Pennington, Schoenholz & Ganguli 2017 ("Resurrecting the sigmoid in deep learning through
dynamical isometry") and 2018 ("The emergence of spectral universality in deep networks"). For
J = D^L W^L ... D^1 W^1 (`initjax.measurement.isometry`: J_k = dh_k/dx with L = k), square
N x N weights of variance sigma2_w / N (Gaussian) or sigma_w times a Haar orthogonal matrix,
and D^l = diag(phi'(f^{l-1})) with f^{l-1} ~ N(0, q^{l-1}) (the mean-field q-map,
`initjax.theory.mean_field`), the spectrum of J J^T at N -> inf follows from the S-transform
(the D^l and W^l asymptotically free):

    psi_X(z) = int rho_X(t) t z / (1 - t z) dt = sum_k m_k(X) z^k,   chi_X = psi_X^{-1},
    S_X(z) = chi_X(z) (1 + z) / z,        S_{J J^T} = prod_l S_{D_l^2} S_{W_l W_l^T},
    S_{W W^T}(z) = 1 / (sigma2_w (1 + z))   Gaussian (Marchenko-Pastur, ratio 1),
    S_{W W^T}(z) = 1 / sigma2_w             orthogonal (every eigenvalue sigma2_w).

Moments. Inverting psi = m_1 z + m_2 z^2 + ... gives S(z) = (1/m_1) (1 - s z + O(z^2)) with
s = m_2 / m_1^2 - 1, the normalized variance of the eigenvalues. A product of power series
multiplies the constants and adds the z-coefficients exactly, so with
mu_1 = E[phi'(f)^2], mu_2 = E[phi'(f)^4] per layer:

    mean of the eigenvalues of J J^T   m_1 = prod_l sigma2_w mu_1(q^{l-1}) = prod_l chi_1(l)
    normalized variance                s = sum_l (mu_2 / mu_1^2 - 1 + s_W),
                                       s_W = 1 (Gaussian: MP has m_2 = 2 m_1^2), 0 (orthogonal)
    variance                           Var[lambda] = m_1^2 s.

At the fixed point (every q^l = q*) and criticality (chi_1 = sigma2_w mu_1 = 1) the variance
grows linearly in depth, with slope mu_2 / mu_1^2 - 1 + s_W: L (mu_2/mu_1^2) for Gaussian
weights and L (mu_2/mu_1^2 - 1) for orthogonal ones (the paper's sigma^2_{JJ^T} =
L (mu_2/mu_1^2 - 1 - s_1) with its s_1 = -1, 0). Linear networks: L and 0 (every singular value
of an orthogonal linear network is sigma_w^L); ReLU (mu_2/mu_1^2 = 2): 2L and L, so ReLU cannot
reach isometry; tanh with q* -> 0 has mu_2/mu_1^2 -> 1: orthogonal weights give isometry.

Density (`density`): with every layer at q*, set u = chi_{D^2}(w), i.e. psi_{D^2}(u) = w (so
S_{D^2}(w) = u (1 + w) / w), and w = psi_{JJ^T}(z); chi_{JJ^T}(w) = z reads

    Gaussian     (u / (sigma2_w w))^L w / (1 + w) = z
    orthogonal   (u (1 + w) / (sigma2_w w))^L w / (1 + w) = z,      z = 1 / lambda,

one complex equation for u, with psi_{D^2}(u) = E[d u / (1 - d u)], d = phi'(f)^2, by the
Gauss-Legendre rule of `initjax.nn.gaussian_expectations`. It is solved by Newton's method in
L log(...) + log(...) form, continued from lambda far above the spectrum (where w ~ m_1 / lambda)
down a log grid at lambda (1 + i eps), logs followed continuously along the path; then
G(lambda) = (1 + w) / lambda and rho(lambda) = -Im G / pi. Linear Gaussian networks give the
Fuss-Catalan law (L = 1: Marchenko-Pastur).

Finite width (`linear_gaussian_moments`): for N x N Gaussian linear layers, exact E[m_2].
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from initjax.nn import activations
from initjax.nn import gaussian_expectations as gauss
from initjax.nn.activations import ActivationLike
from initjax.theory import mean_field

WEIGHTS = ("gaussian", "orthogonal")
_S_W = {"gaussian": 1.0, "orthogonal": 0.0}


def _check_weights(weights: str) -> None:
  if weights not in WEIGHTS:
    raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}; got {weights!r}")


def derivative_nodes(activation: ActivationLike, q: float) -> tuple[np.ndarray, np.ndarray]:
  """(d_i, c_i) with sum_i c_i g(d_i) = E[g(phi'(f)^2)], f ~ N(0, q): the half-line rule of
  `gaussian_expectations` (two atoms for a piecewise-linear phi: d = p^2, n^2 with mass 1/2)."""
  record = activations.get(activation)
  if record.slopes is not None:
    p, n = record.slopes
    return np.array([p * p, n * n]), np.array([0.5, 0.5])
  z, c = gauss.half_line_nodes()
  s = math.sqrt(max(q, 1e-300))
  d = np.asarray(record.np_derivative(np.concatenate([s * z, -s * z])), np.float64) ** 2
  if not np.all(np.isfinite(d)):
    raise ValueError(f"phi'(f)^2 of activation {record.name!r} is not finite at q = {q:g}")
  return d, np.concatenate([c, c])


def derivative_moments(activation: ActivationLike, q: float) -> tuple[float, float]:
  """(mu_1, mu_2) = (E[phi'(f)^2], E[phi'(f)^4]) for f ~ N(0, q)."""
  d, c = derivative_nodes(activation, q)
  return float(np.sum(c * d)), float(np.sum(c * d * d))


def q_trajectory(activation: ActivationLike, sigma2_w: float, sigma2_b: float, depth: int,
                 input_variance: float) -> np.ndarray:
  """q^0..q^{depth-1}: q^0 = sigma2_w input_variance + sigma2_b, q^l = F(q^{l-1})."""
  mean_field.check_variances(sigma2_w, sigma2_b, input_variance)
  q = np.empty(depth)
  q[0] = sigma2_w * input_variance + sigma2_b
  for l in range(1, depth):
    q[l] = float(mean_field.q_map(activation, sigma2_w, sigma2_b, q[l - 1])[0])
  return q


def fixed_point_input_variance(activation: ActivationLike, sigma2_w: float,
                               sigma2_b: float = 0.0) -> float:
  """The E[x_j^2] whose first layer starts at the fixed point: (q* - sigma2_b) / sigma2_w, with
  q* reached from unit inputs (`mean_field.fixed_point_q`); 1 where q* is 0 or inf or below
  sigma2_b (a linear network, a degenerate fixed point: there any input variance is as good)."""
  q_star = mean_field.fixed_point_q(activation, sigma2_w, sigma2_b, 1.0)
  if not (math.isfinite(q_star) and q_star > sigma2_b):
    return 1.0
  return (q_star - sigma2_b) / sigma2_w


@dataclasses.dataclass(frozen=True)
class JacobianMoments:
  """The free-probability moments of J_k J_k^T for k = 1..depth (arrays over k)."""
  weights: str
  depths: np.ndarray            # k = 1..depth
  q: np.ndarray                 # q^{k-1}, the variance of f feeding D_k
  chi_1: np.ndarray             # sigma2_w mu_1(q^{k-1})
  mean: np.ndarray              # m_1 = prod chi_1
  normalized_var: np.ndarray    # s = sum (mu_2 / mu_1^2 - 1 + s_W)
  variance: np.ndarray          # m_1^2 s
  slope: float                  # d s / dk at the last layer (at q*: the linear growth rate)


def moments(activation: ActivationLike, sigma2_w: float, sigma2_b: float = 0.0,
            weights: str = "gaussian", depth: int = 1,
            input_variance: float = 1.0) -> JacobianMoments:
  """Mean and variance of the eigenvalues of J_k J_k^T, k = 1..depth, along the network's own
  q-trajectory from inputs with E[x_j^2] = input_variance (module docstring; exact at N -> inf
  for square layers)."""
  _check_weights(weights)
  if depth < 1:
    raise ValueError(f"depth must be >= 1; got {depth}")
  q = q_trajectory(activation, sigma2_w, sigma2_b, depth, input_variance)
  mu = np.array([derivative_moments(activation, qq) for qq in q])
  chi = sigma2_w * mu[:, 0]
  step = mu[:, 1] / mu[:, 0] ** 2 - 1.0 + _S_W[weights]
  mean = np.cumprod(chi)
  s = np.cumsum(step)
  return JacobianMoments(weights=weights, depths=np.arange(1, depth + 1), q=q, chi_1=chi,
                         mean=mean, normalized_var=s, variance=mean ** 2 * s,
                         slope=float(step[-1]))


def linear_gaussian_moments(width: int, depth: int, sigma2_w: float = 1.0) -> np.ndarray:
  """Exact E[m_2(k)] = E[(1/N) tr (J_k J_k^T)^2], k = 1..depth, for N x N real Gaussian linear
  layers of variance sigma2_w / N (E[m_1] = sigma2_w^k exactly).

  With A = J_{k-1} J_{k-1}^T, Wick's theorem over W gives (sigma2 = 1/N per entry)
    E tr(W A W^T)^2   = (1/N^2) (N^2 (tr A)^2 + 2 N tr A^2)
    E tr (W A W^T)^2  = (1/N^2) (N (tr A)^2 + (N^2 + N) tr A^2),
  a linear recursion for x_k = E(tr A_k)^2, y_k = E tr A_k^2 from x_0 = N^2, y_0 = N; then
  m_2 = y_k / N (k = 1: 2 + 1/N; N -> inf: k + 1, the Fuss-Catalan moment).
  """
  n = float(width)
  x, y, out = n * n, n, []
  for _ in range(depth):
    x, y = x + 2.0 * y / n, x / n + (1.0 + 1.0 / n) * y
    out.append(y / n)
  return np.array(out) * sigma2_w ** (2 * np.arange(1, depth + 1))


# ------------------------------------------------------------------------------------------------
# The density.

@dataclasses.dataclass(frozen=True)
class Density:
  """rho(lambda) of the eigenvalues of J J^T at `lam` (ascending), all layers at q*.

  point_mass: where the spectrum is one atom (orthogonal weights and phi'^2 constant: every
  eigenvalue equals it); rho is then zero. zero_mass: the atom at lambda = 0 (phi' = 0 on a set of
  positive probability, ReLU: 1/2), not in rho. resolved_from: the smallest lambda solved; rho is
  NaN below it (far below the mean, 1 + psi cancels in float64 and Newton stalls)."""
  lam: np.ndarray
  rho: np.ndarray
  q_star: float
  point_mass: float | None
  zero_mass: float
  resolved_from: float = 0.0


class _Solver:
  """Newton's method for u at one lambda (module docstring), logs continued from a reference."""

  def __init__(self, d, c, sigma2_w, weights, depth):
    self.d, self.c, self.sigma2_w, self.depth = d, c, sigma2_w, depth
    self.orthogonal = weights == "orthogonal"

  def parts(self, u):
    den = 1.0 - self.d * u
    w = np.sum(self.c * self.d * u / den)
    dw = np.sum(self.c * self.d / den ** 2)
    a = u * ((1.0 + w) if self.orthogonal else 1.0) / (self.sigma2_w * w)
    b = w / (1.0 + w)
    da = 1.0 / u - dw / w + (dw / (1.0 + w) if self.orthogonal else 0.0)
    db = dw / w - dw / (1.0 + w)
    return w, a, b, da, db

  def solve(self, lam, u, ref):
    """(u, w, (a, log a, b, log b)) at complex lam from the guess u, or None (no convergence or
    a jump off the followed branch)."""
    a_ref, la_ref, b_ref, lb_ref = ref
    log_lam = np.log(lam)
    for _ in range(60):
      w, a, b, da, db = self.parts(u)
      la = np.log(a / a_ref) + la_ref
      lb = np.log(b / b_ref) + lb_ref
      residual = self.depth * la + lb + log_lam
      step = residual / (self.depth * da + db)
      u = u - step
      if not np.isfinite(u):
        return None
      if abs(step) <= 1e-9 * abs(u) or abs(residual) <= 1e-11:
        w, a, b, _, _ = self.parts(u)
        la, lb = np.log(a / a_ref) + la_ref, np.log(b / b_ref) + lb_ref
        if abs(la - la_ref) > 0.5 or abs(lb - lb_ref) > 0.5:
          return None
        return u, w, (a, la, b, lb)
    return None


def density(activation: ActivationLike, sigma2_w: float, sigma2_b: float = 0.0,
            weights: str = "gaussian", depth: int = 1, lam: Sequence[float] | None = None,
            q_star: float | None = None, eps: float | None = None,
            max_step: float = 0.01) -> Density:
  """The free-probability density of the eigenvalues lambda = s^2 of J J^T after `depth` layers
  at the fixed point q* (reached from unit inputs unless given), on the grid `lam` (default 400
  points log-spaced over 1e-4..1e2 times the mean). See the module docstring for the equation;
  `max_step` is the largest continuation step in decades of lambda (halved where Newton fails).

  eps: the relative imaginary part of lambda, i.e. rho convolved with a Lorentzian of relative
  width eps. Default 1e-7; 1e-4 for orthogonal weights with a smooth activation, where the 400
  quadrature atoms of the phi'^2 distribution would otherwise show as spikes (Gaussian weights
  smear them). At depth 1 with orthogonal weights the spectrum is that of sigma2_w phi'(f)^2
  itself, which the atoms do not resolve.
  """
  _check_weights(weights)
  if depth < 1:
    raise ValueError(f"depth must be >= 1; got {depth}")
  if q_star is None:
    q_star = mean_field.fixed_point_q(activation, sigma2_w, sigma2_b, 1.0)
  q = min(float(q_star), mean_field.Q_GRID[-1])
  d, c = derivative_nodes(activation, q)
  zero_mass = float(np.sum(c[d == 0.0]))
  d, c = d[d > 0], c[d > 0]
  mu1, mu2 = float(np.sum(c * d)), float(np.sum(c * d * d))
  m1 = (sigma2_w * mu1) ** depth
  nv = depth * (mu2 / mu1 ** 2 - 1.0 + _S_W[weights])
  lam = (np.geomspace(1e-4, 1e2, 400) * m1 if lam is None
         else np.sort(np.asarray(lam, np.float64)))
  if np.any(lam <= 0):
    raise ValueError("lam must be > 0")
  point = None
  if weights == "orthogonal" and zero_mass == 0.0 and np.ptp(d) <= 1e-12 * d.max():
    point = float((sigma2_w * d[0]) ** depth)
    return Density(lam, np.zeros_like(lam), float(q_star), point, zero_mass, float(lam[0]))
  if eps is None:
    smooth = activations.get(activation).slopes is None
    eps = 1e-4 if weights == "orthogonal" and smooth else 1e-7
  solver = _Solver(d, c, sigma2_w, weights, depth)
  # Far above the spectrum w ~ m_1 / lambda is real and small, and u ~ w / mu_1 to leading order
  # (psi_D(u) ~ E[d] u): a real Newton start.
  start = max(10.0 * math.e * m1 * (1.0 + nv), 10.0 * lam[-1])
  u = (m1 / start) / mu1 + 0j
  w, a, b, _, _ = solver.parts(u)
  ref = (a, np.log(a), b, np.log(b))
  found = solver.solve(start * (1 + 1j * eps), u, ref)
  if found is None:
    raise ValueError("the S-transform equation has no solution far above the spectrum")
  u, w, ref = found
  rho = np.full_like(lam, np.nan)
  log_at, prev_u, last_h = math.log10(start), None, max_step
  for i in range(len(lam) - 1, -1, -1):
    target = math.log10(lam[i])
    while found is not None and log_at > target + 1e-15:
      h = min(max_step, log_at - target)
      while True:
        guess = u if prev_u is None else u + (u - prev_u) * min(1.0, h / max(last_h, 1e-12))
        found = solver.solve(10.0 ** (log_at - h) * (1 + 1j * eps), guess, ref)
        if found is not None or h < 1e-9:
          break
        h *= 0.5
      if found is None:    # far below the mean 1 + w cancels in float64: lambda unresolved
        break
      prev_u, last_h = u, h
      u, w, ref = found
      log_at -= h
    if found is None:
      break
    rho[i] = -((1.0 + w) / (lam[i] * (1 + 1j * eps))).imag / math.pi
  # Off the spectrum rho is the smoothing's Lorentzian tail, about eps / (pi lambda) (its lambda^2
  # moment would grow with the grid): values within 30 times that are zero.
  rho[rho <= 30.0 * eps / (math.pi * lam)] = 0.0
  resolved = lam[np.isfinite(rho)]
  return Density(lam, rho, float(q_star), point, zero_mass,
                 float(resolved[0]) if resolved.size else math.inf)


def log10_density(dens: Density) -> np.ndarray:
  """The density per unit of log10 lambda: rho(lambda) lambda ln 10."""
  return dens.rho * dens.lam * math.log(10.0)


def bin_masses(dens: Density, edges: np.ndarray) -> np.ndarray:
  """The theory's density per unit log10 lambda averaged over each bin of `edges` (log10
  lambda), by the trapezoid rule on the grid of `dens` (which should resolve the bins); NaN for
  a bin below the grid or its resolved part."""
  t = np.log10(dens.lam)
  f = log10_density(dens)
  out = np.zeros(len(edges) - 1)
  for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
    grid = np.linspace(lo, hi, 33)
    out[i] = np.trapezoid(np.interp(grid, t, f, left=np.nan, right=0.0), grid) / (hi - lo)
  return out
