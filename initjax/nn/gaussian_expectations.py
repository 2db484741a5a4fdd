"""Expectations over Gaussian pre-activations, by quadrature rules that stay accurate at kinks.

One variable, f ~ N(mean, q):

    E[g(f)] = int_0^inf (g(mean + s z) + g(mean - s z)) phi(z) dz,      s = sqrt(q)

by Gauss-Legendre on [0, 12] (the standard-normal mass beyond 12 is ~1e-33), so a kink of g at
f = mean (ReLU-like activations at 0) sits at the end of the interval, where the rule stays
accurate; plain Gauss-Hermite loses several percent there.

Two correlated variables, (u_a, u_b) with variance q each and correlation c = cos t:

    u_a = sqrt(q) r cos(theta),   u_b = sqrt(q) r cos(theta - t),
    E[g(u_a, u_b)] = (1 / 2 pi) int_0^2pi dtheta int_0^inf r exp(-r^2 / 2) g(u_a, u_b) dr,

in polar coordinates of (z1, z2) with u_b = sqrt(q) (c z1 + sqrt(1 - c^2) z2). A kink of the
activation at 0 is a ray theta = pi/2, 3 pi/2 (u_a = 0) or t +- pi/2 (u_b = 0); the angular rule
is Gauss-Legendre on each arc between those rays, so kinks (and the steep zones of tanh or sigmoid
at large q) sit at the ends of the arcs. The radial rule is Gauss-Legendre on [0, 12].

This module is NumPy only (float64); functions g are vectorized over arrays.
"""
from __future__ import annotations

import functools
import math

import numpy as np

Z_MAX = 12.0  # standard-normal mass beyond 12 sigma is ~1e-33
ORDER = 200
ORDER_RADIAL = 64
ORDER_ARC = 48


@functools.lru_cache(maxsize=None)
def half_line_nodes(order: int = ORDER) -> tuple[np.ndarray, np.ndarray]:
  """Nodes z and weights w on [0, Z_MAX] with sum_i w_i (g(z_i) + g(-z_i)) = E[g(z)], z ~ N(0, 1):
  Gauss-Legendre with the standard-normal density folded into the weights."""
  x, w = np.polynomial.legendre.leggauss(order)
  z = 0.5 * Z_MAX * (x + 1.0)
  return z, 0.5 * Z_MAX * w * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def gaussian_expectation(g, variance: float, mean: float = 0.0, order: int = ORDER) -> float:
  """E[g(f)] for f ~ N(mean, variance) by Gauss-Legendre quadrature on each half-line.

  E[g(f)] = int_0^inf (g(mean + s z) + g(mean - s z)) phi(z) dz, s = sqrt(variance). g is
  vectorized over numpy arrays.
  """
  z, w = half_line_nodes(order)
  # A vanishing (not zero) spread keeps a kink's one-sided derivatives apart at variance 0.
  s = math.sqrt(max(variance, 1e-300))
  return float(np.sum(w * (g(mean + s * z) + g(mean - s * z))))


def gaussian_expectations(g, variances: np.ndarray, order: int = ORDER) -> np.ndarray:
  """E[g(f)] for f ~ N(0, q), one value per q in `variances` (one vectorized call of g)."""
  z, w = half_line_nodes(order)
  s = np.sqrt(np.maximum(np.asarray(variances, np.float64), 1e-300))[:, None]
  u = np.concatenate([s * z, -s * z], axis=1)  # (n_q, 2 order)
  # Plain sums, not BLAS: OpenBLAS threads stall on a busy machine for arrays this small.
  return np.sum(np.asarray(g(u), np.float64) * np.concatenate([w, w]), axis=1)


@functools.lru_cache(maxsize=None)
def _legendre(order: int) -> tuple[np.ndarray, np.ndarray]:
  """Gauss-Legendre nodes and weights on [-1, 1], computed once per order."""
  x, w = np.polynomial.legendre.leggauss(order)
  x.setflags(write=False)
  w.setflags(write=False)
  return x, w


@functools.lru_cache(maxsize=None)
def _radial_nodes(order: int) -> tuple[np.ndarray, np.ndarray]:
  # int_0^inf r exp(-r^2 / 2) g(r) dr (weights sum to 1).
  x, w = _legendre(order)
  r = 0.5 * Z_MAX * (x + 1.0)
  return r, 0.5 * Z_MAX * w * r * np.exp(-0.5 * r * r)


@functools.lru_cache(maxsize=256)
def _angular_nodes(t: float, order: int) -> tuple[np.ndarray, np.ndarray]:
  # Gauss-Legendre on each arc of [0, 2 pi) between the rays where u_a = 0 or u_b = 0; the
  # weights include the 1 / (2 pi) of the uniform angle.
  half = 0.5 * math.pi
  breaks = np.sort(np.mod([half, 3 * half, t + half, t - half], 2 * math.pi))
  breaks = np.concatenate([breaks, [breaks[0] + 2 * math.pi]])
  x, w = _legendre(order)
  thetas, weights = [], []
  for lo, hi in zip(breaks[:-1], breaks[1:]):
    if hi - lo > 1e-12:
      thetas.append(lo + 0.5 * (hi - lo) * (x + 1.0))
      weights.append(0.5 * (hi - lo) * w / (2 * math.pi))
  return np.concatenate(thetas), np.concatenate(weights)


def bivariate_nodes(variance: float, correlation: float, order_radial: int = ORDER_RADIAL,
                    order_arc: int = ORDER_ARC) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(u_a, u_b, weights), flat arrays, with sum w g(u_a, u_b) = E[g(u_a, u_b)] for the centred
  Gaussian pair of variance `variance` and correlation `correlation` (polar rule above)."""
  c = min(max(float(correlation), -1.0), 1.0)
  t = math.acos(c)
  r, w_r = _radial_nodes(order_radial)
  theta, w_t = _angular_nodes(t, order_arc)
  s = math.sqrt(max(variance, 1e-300))
  u_a = s * np.outer(r, np.cos(theta))
  u_b = s * np.outer(r, np.cos(theta - t))
  return u_a.ravel(), u_b.ravel(), np.outer(w_r, w_t).ravel()


def bivariate_expectation(g, variance: float, correlation: float) -> float:
  """E[g(u_a, u_b)] for centred jointly Gaussian u_a, u_b with Var = `variance` each and
  correlation `correlation` (polar quadrature, split at the rays u_a = 0 and u_b = 0)."""
  u_a, u_b, w = bivariate_nodes(variance, correlation)
  return float(np.sum(w * g(u_a, u_b)))


# ------------------------------------------------------------------------------------------------
# Closed forms for activations that are linear on each half-line, slopes (p, n): phi(u) = p u for
# u > 0, n u for u < 0. With c = cos t (Cho & Saul's arc-cosine kernels, degrees 0, 1 and 2, for
# unit variance; J_d(t) = E[u_a^d u_b^d 1{u_a > 0, u_b > 0}]):
#   J_0(t) = (pi - t) / (2 pi)
#   J_1(t) = (sin t + (pi - t) cos t) / (2 pi)
#   J_2(t) = (3 sin t cos t + (pi - t)(1 + 2 cos^2 t)) / (2 pi)
# and flipping the sign of u_b maps t to pi - t, so for phi with slopes (p, n):
#   E[phi(u_a) phi(u_b)]     = q ((p^2 + n^2) J_1(t) - 2 p n J_1(pi - t))
#   E[phi'(u_a) phi'(u_b)]   = (p^2 + n^2) J_0(t) + 2 p n J_0(pi - t)
#   E[phi(u_a)^2 phi(u_b)^2] = q^2 ((p^4 + n^4) J_2(t) + 2 p^2 n^2 J_2(pi - t))

def arc_cosine(degree: int, t: float) -> float:
  """J_degree(t) above, for unit variance (degree 0, 1 or 2)."""
  s, c = math.sin(t), math.cos(t)
  if degree == 0:
    return (math.pi - t) / (2 * math.pi)
  if degree == 1:
    return (s + (math.pi - t) * c) / (2 * math.pi)
  if degree == 2:
    return (3 * s * c + (math.pi - t) * (1 + 2 * c * c)) / (2 * math.pi)
  raise ValueError(f"arc-cosine kernel degree must be 0, 1 or 2; got {degree}")


def piecewise_linear_kernels(slopes: tuple[float, float], variance: float,
                             correlation: float) -> dict[str, float]:
  """Closed-form {"phi_phi", "dphi_dphi", "phi2_phi2"} for the slopes (p, n), as above."""
  p, n = slopes
  t = math.acos(min(max(float(correlation), -1.0), 1.0))
  u = math.pi - t
  return {
      "phi_phi": variance * ((p * p + n * n) * arc_cosine(1, t) - 2 * p * n * arc_cosine(1, u)),
      "dphi_dphi": (p * p + n * n) * arc_cosine(0, t) + 2 * p * n * arc_cosine(0, u),
      "phi2_phi2": variance ** 2 * ((p ** 4 + n ** 4) * arc_cosine(2, t)
                                    + 2 * (p * n) ** 2 * arc_cosine(2, u)),
  }
