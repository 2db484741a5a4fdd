"""initjax.measurement.isometry and initjax.probe.jacobian_spectra: Jacobian spectra of many
random networks, against closed forms, jax.jacfwd and the free-probability theory.

Statistical tests: fixed keys; a moment pooled over S networks is compared with 5 standard
errors (the spread of the per-network values / sqrt(S)), plus, for nonlinear networks, an
allowance for the finite width (stated where used).
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initjax import probe
from initjax.measurement import isometry
from initjax.nn import networks
from initjax.theory import spectra


def _spec(**kw):
  base = dict(input_dim=32, width=32, depth=8, activation="identity", batch_size=1)
  return isometry.NetworkSpec(**{**base, **kw})


def test_orthogonal_linear_network_is_an_exact_isometry():
  # Every singular value of a product of orthogonal matrices is 1: float32 rounding only
  # (64 products, about 1e-7 each).
  out = isometry.measure(jax.random.key(0), _spec(depth=64), weight_init="orthogonal",
                         num_seeds=4, svd_layers=[1, 8, 64])
  np.testing.assert_allclose(out["singular_values"], 1.0, atol=2e-5)
  np.testing.assert_allclose(out["log10_m1"], 0.0, atol=2e-5)
  assert list(out["svd_layers"]) == [1, 8, 64]


def test_gaussian_linear_moments_match_the_exact_finite_width_values():
  # E[m_1] = 1 and E[m_2] from Wick's theorem at width 32 (`linear_gaussian_moments`; the
  # infinite-width k + 1 is 1.5% to 15% lower here); 400 networks, 5 standard errors each.
  # Two settings that differ only in values share one compiled program.
  before = isometry.trace_count()
  out = isometry.measure(jax.random.key(1), _spec(), weight_init="lecun_normal",
                         scales=[1.0, 2.0], num_seeds=400, svd_layers=[1, 2, 4, 8])
  assert isometry.trace_count() - before == 1
  exact = spectra.linear_gaussian_moments(32, 8)
  for i, k in enumerate(out["svd_layers"]):
    s = isometry.summarize(out["singular_values"][0, :, :, i], 32)
    assert abs(s["mean_s2"] - 1.0) < 5 * s["mean_s2_se"], (k, s)
    assert abs(s["m2_s2"] - exact[k - 1]) < 5 * s["m2_s2_se"], (k, s, exact[k - 1])
    doubled = isometry.summarize(out["singular_values"][1, :, :, i], 32)
    assert doubled["mean_s2"] == pytest.approx(2.0 ** k * s["mean_s2"], rel=1e-4)  # same draws
  # log10 m_1 at every layer is exact and free: the SVD layers' own moments agree with it.
  s8 = out["singular_values"][0, :, 0, -1]
  np.testing.assert_allclose(np.log10(np.sum(s8 ** 2, -1) / 32), out["log10_m1"][0, :, 0, -1],
                             atol=1e-4)


def test_tanh_orthogonal_spectrum_matches_free_probability():
  # tanh at the critical point with sigma2_b = 0.01 (q* = 0.273), inputs at the fixed point,
  # depth 8, width 64, 64 networks: E[m_2] within 5 standard errors plus L / N = 12.5% of the
  # prediction (finite width: the pooled moment of a width-N network differs from N = inf by
  # O(L / N); a linear Gaussian network of this shape differs by 6%). Gaussian weights would
  # give E[m_2] = 10.2 instead of 2.2.
  sigma2_w, sigma2_b, depth, width = 1.4242052905, 0.01, 8, 64
  v = spectra.fixed_point_input_variance("tanh", sigma2_w, sigma2_b)
  spec = _spec(input_dim=width, width=width, depth=depth, activation="tanh",
               bias_variance=sigma2_b)
  out = isometry.measure(jax.random.key(2), spec, weight_init="orthogonal", scales=[sigma2_w],
                         input_variances=[v], num_seeds=64, svd_layers=[depth])
  s = isometry.summarize(out["singular_values"][0, :, :, 0], width)
  theory = spectra.moments("tanh", sigma2_w, sigma2_b, "orthogonal", depth, input_variance=v)
  m2 = theory.mean[-1] ** 2 * (1 + theory.normalized_var[-1])
  assert m2 == pytest.approx(2.22, abs=0.01)
  assert abs(s["m2_s2"] - m2) < 5 * s["m2_s2_se"] + depth / width * m2, (s, m2)
  assert abs(s["mean_s2"] - 1.0) < 5 * s["mean_s2_se"] + depth / width


@pytest.mark.slow  # 10 s (compiling jax.jacfwd of the scan)
def test_products_equal_jax_jacfwd():
  # The layer-by-layer product J_k = D_k Omega_{k-1} J_{k-1} against autodiff of trace_mlp,
  # with biases and a rectangular first layer (D_in = 12 < D_h = 16: 12 singular values).
  spec = _spec(input_dim=12, width=16, depth=5, activation="tanh", bias_variance=0.1)
  key = jax.random.key(3)
  out = isometry.measure(key, spec, weight_init="xavier_normal", num_seeds=1,
                         svd_layers=[1, 3, 5], input_variances=[2.0])
  params, x = isometry.propagation.network_for_seed(
      jax.random.split(key, 1)[0], spec, isometry.get_initializer("normal"),
      jnp.asarray([isometry.expected_variance("xavier_normal", s)
                   for s in isometry.propagation.kernel_shapes(spec)]), jnp.float32)
  x0 = x[0] * math.sqrt(2.0)
  jac = jax.jit(jax.jacfwd(lambda v: networks.trace_mlp(params, v[None], "tanh")["h"][:, 0]))(x0)
  for i, k in enumerate((1, 3, 5)):
    np.testing.assert_allclose(out["singular_values"][0, 0, 0, i],
                               np.linalg.svd(np.asarray(jac[k - 1], np.float64),
                                             compute_uv=False), rtol=2e-4, atol=1e-6)


@pytest.mark.slow  # 4 s
def test_log_space_is_exact_beyond_float32():
  # ReLU at sigma2_w = 4 (chi_1 = 2): m_1 reaches about 2^200 = 1e60, far beyond float32. The
  # rescaled product against the same network in float64 NumPy, unscaled.
  spec = _spec(input_dim=16, width=16, depth=200, activation="relu")
  key = jax.random.key(4)
  out = isometry.measure(key, spec, weight_init="he_normal", scales=[2.0], num_seeds=1,
                         svd_layers=[200])
  params, x = isometry.propagation.network_for_seed(
      jax.random.split(key, 1)[0], spec, isometry.get_initializer("normal"),
      jnp.full(201, 2.0 * 2.0 / 16), jnp.float32)
  omegas = [np.asarray(params["omega_0"], np.float64)] + list(
      np.asarray(params["omega_hidden"], np.float64))
  h, j = np.asarray(x[0], np.float64), np.eye(16)
  for omega in omegas:
    f = omega @ h
    h, j = np.maximum(f, 0), (f > 0)[:, None] * (omega @ j)
  assert np.log10(np.sum(j ** 2) / 16) > 40
  assert out["log10_m1"][0, 0, 0, -1] == pytest.approx(np.log10(np.sum(j ** 2) / 16), abs=1e-3)
  assert np.all(np.isfinite(out["singular_values"]))


@pytest.mark.slow  # 3 s
def test_overflow_is_flagged_not_measured():
  # Biases take ReLU out of log space; weights 1e6 times too large overflow float32 within a
  # few layers, and those networks are flagged, never summarized as numbers.
  spec = _spec(activation="relu", bias_variance=0.1, depth=12)
  out = isometry.measure(jax.random.key(5), spec, weight_init="he_normal", scales=[1e12],
                         num_seeds=3, svd_layers=[12])
  assert isometry.flag_invalid(out["singular_values"]).all()
  s = isometry.summarize(out["singular_values"][0, :, :, 0], 32)
  assert s["num_flagged"] == 3 and s["num_networks"] == 0 and "mean_s2" not in s


def test_bad_arguments():
  with pytest.raises(ValueError, match=r"svd_layers must be layer indices k in 1..8"):
    isometry.measure(jax.random.key(0), _spec(), svd_layers=[0])
  with pytest.raises(ValueError, match="input_variances: one finite value > 0 per setting"):
    isometry.measure(jax.random.key(0), _spec(), input_variances=[1.0, 2.0])


class _DeltaCNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = x[..., None]
    for _ in range(3):
      h = nn.Conv(8, (3,), padding="CIRCULAR")(h)
    return h


def test_probe_spectra_of_a_delta_orthogonal_linear_cnn_are_one():
  # Any model through the probe (jax.jacfwd): a linear circular CNN whose kernels are
  # delta-orthogonal (Xiao et al. 2018) is an isometry from its input, at every layer.
  x = jax.random.normal(jax.random.key(6), (2, 20))
  out = probe.jacobian_spectra(_DeltaCNN(), x, key=jax.random.key(7), num_seeds=2,
                               weight_init="delta_orthogonal")
  assert out["layers"] == ("Conv_0", "Conv_1", "Conv_2")
  assert out["units"]["Conv_2"] == 160
  for name in out["layers"]:
    assert out["singular_values"][name].shape == (2, 2, 20)
    np.testing.assert_allclose(out["singular_values"][name], 1.0, atol=1e-5)
