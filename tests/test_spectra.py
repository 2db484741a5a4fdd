"""initjax.theory.spectra: the free-probability spectrum of J J^T against closed forms.

Everything here is NumPy (no compile): the Marchenko-Pastur law, the Fuss-Catalan moments of
products of Gaussian matrices, the linear and ReLU moments, a series expansion for tanh at small
q*, and the two routes of the theory (moments from the S-transform's first coefficient; the
density from solving the S-transform equation) against each other.
"""
import math

import numpy as np
import pytest

from initjax.theory import spectra

TANH_CRITICAL = (1.4242052905, 0.01)   # critical_weight_variance("tanh", 0.01), q* = 0.273


def _moment(dens, k):
  ok = np.isfinite(dens.rho)
  return float(np.trapezoid(dens.rho[ok] * dens.lam[ok] ** k, dens.lam[ok]))


def test_depth_one_gaussian_linear_is_marchenko_pastur():
  lam = np.linspace(0.01, 3.99, 60)
  dens = spectra.density("identity", 1.0, 0.0, "gaussian", 1, lam=lam)
  mp = np.sqrt((4 - lam) * lam) / (2 * np.pi * lam)
  np.testing.assert_allclose(dens.rho, mp, atol=1e-9)


@pytest.mark.parametrize("depth", [4, 16])
def test_gaussian_linear_products_have_fuss_catalan_moments(depth):
  # m_k = binom((L + 1) k, k) / (L k + 1) (Fuss-Catalan): m_2 = L + 1, m_3 = binom(3L+3, 3)/(3L+1).
  # The trapezoid rule on 4000 log-spaced points and the eps-smoothing cost < 0.5% here.
  lam = np.geomspace(1e-12, 1e4, 4000)
  dens = spectra.density("identity", 1.0, 0.0, "gaussian", depth, lam=lam)
  for k in (1, 2, 3):
    exact = math.comb((depth + 1) * k, k) / (depth * k + 1)
    assert _moment(dens, k) == pytest.approx(exact, rel=5e-3), k


@pytest.mark.parametrize("activation, sigma2_w, weights, slope", [
    ("identity", 1.0, "gaussian", 1.0), ("identity", 1.0, "orthogonal", 0.0),
    ("relu", 2.0, "gaussian", 2.0), ("relu", 2.0, "orthogonal", 1.0)])
def test_moments_closed_forms(activation, sigma2_w, weights, slope):
  # Linear: mu_2 / mu_1^2 = 1; ReLU: phi'^2 is Bernoulli(1/2), mu_2 / mu_1^2 = 2; plus s_W = 1
  # for Gaussian (Marchenko-Pastur) and 0 for orthogonal weights. At criticality m_1 = 1.
  m = spectra.moments(activation, sigma2_w, 0.0, weights, depth=32)
  np.testing.assert_allclose(m.mean, 1.0, atol=1e-12)
  np.testing.assert_allclose(m.normalized_var, slope * np.arange(1, 33), atol=1e-9)
  assert m.slope == pytest.approx(slope)


def test_mean_is_chi_1_to_the_depth_off_criticality():
  m = spectra.moments("relu", 3.0, 0.0, "gaussian", depth=10)
  np.testing.assert_allclose(m.mean, 1.5 ** np.arange(1, 11), rtol=1e-12)


def test_tanh_near_zero_q_approaches_isometry_as_8_q_squared():
  # sech^4 h = 1 - 2h^2 + (5/3)h^4, sech^8 h = 1 - 4h^2 + (22/3)h^4 + ...: with E h^4 = 3q^2,
  # mu_1 = 1 - 2q + 5q^2, mu_2 = 1 - 4q + 22q^2, so mu_2 / mu_1^2 - 1 = 8 q^2 + O(q^3).
  for q in (1e-3, 1e-2):
    mu1, mu2 = spectra.derivative_moments("tanh", q)
    assert mu2 / mu1 ** 2 - 1 == pytest.approx(8 * q * q, rel=30 * q)


@pytest.mark.parametrize("weights", spectra.WEIGHTS)
def test_density_and_moments_agree_for_tanh(weights):
  # Two routes through the theory: the density solves the full S-transform equation, the
  # moments use only its first coefficient. Their m_1 and variance agree to the quadrature's
  # accuracy (0.5%).
  sigma2_w, sigma2_b = TANH_CRITICAL
  depth = 16
  lam = np.geomspace(1e-12, 1e4, 4000)
  dens = spectra.density("tanh", sigma2_w, sigma2_b, weights, depth, lam=lam)
  mom = spectra.moments("tanh", sigma2_w, sigma2_b, weights, depth,
                        input_variance=spectra.fixed_point_input_variance("tanh", *TANH_CRITICAL))
  m1, m2 = _moment(dens, 1), _moment(dens, 2)
  assert m1 == pytest.approx(mom.mean[-1], rel=5e-3)
  assert m2 - m1 ** 2 == pytest.approx(mom.variance[-1], rel=5e-3)
  assert np.all(dens.rho[np.isfinite(dens.rho)] >= 0) and dens.resolved_from < 1e-8


def test_relu_keeps_half_its_eigenvalues_at_zero():
  lam = np.geomspace(1e-12, 1e4, 3000)
  dens = spectra.density("relu", 2.0, 0.0, "gaussian", 4, lam=lam)
  assert dens.zero_mass == 0.5
  assert _moment(dens, 0) == pytest.approx(0.5, abs=5e-3)
  assert _moment(dens, 1) == pytest.approx(1.0, rel=5e-3)


def test_orthogonal_linear_spectrum_is_one_atom():
  dens = spectra.density("identity", 1.5, 0.0, "orthogonal", 7)
  assert dens.point_mass == pytest.approx(1.5 ** 7)
  assert not dens.rho.any()


def test_finite_width_linear_gaussian_moments():
  assert spectra.linear_gaussian_moments(10, 1)[0] == pytest.approx(2.1)   # 2 + 1/N
  wide = spectra.linear_gaussian_moments(10 ** 7, 8)
  np.testing.assert_allclose(wide, np.arange(2, 10), rtol=1e-5)            # k + 1
  assert spectra.linear_gaussian_moments(32, 3, sigma2_w=2.0)[2] == pytest.approx(
      2.0 ** 6 * spectra.linear_gaussian_moments(32, 3)[2])


def test_bad_arguments():
  with pytest.raises(ValueError, match="weights must be one of gaussian, orthogonal"):
    spectra.moments("tanh", 1.0, weights="haar")
  with pytest.raises(ValueError, match="depth must be >= 1"):
    spectra.density("tanh", 1.0, depth=0)
  with pytest.raises(ValueError, match="sigma2_w must be finite"):
    spectra.moments("tanh", -1.0)
