"""Tests for the mean-field theory: Gaussian pair expectations, the q-map and the fixed point
reached from the input, the correlation map, depth scales, phases and the critical line.

Independent numbers: scipy's adaptive quadrature (nested `quad`, split where the integrand jumps
or kinks), closed forms (arc-cosine kernels, tanh'' and the like), and the reference numbers of
REFERENCES.md ("Signal propagation beyond the plain MLP"). Deterministic, no Monte Carlo except
the GELU measurement, whose tolerance is derived in its docstring.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize

from initjax import theory
from initjax.measurement import propagation
from initjax.nn import gaussian_expectations
from initjax.theory import finite_width, mean_field, phases

SELU_A, SELU_S = 1.6732632423543772, 1.0507009873554805
# Scalar float64 references, written from the definitions (not from initjax).
SCALAR = {
    "tanh": (math.tanh, lambda u: 1.0 - math.tanh(u) ** 2),
    "selu": (lambda u: SELU_S * (u if u > 0 else SELU_A * math.expm1(u)),
             lambda u: SELU_S * (1.0 if u > 0 else SELU_A * math.exp(u))),
    "relu": (lambda u: max(u, 0.0), lambda u: 1.0 if u > 0 else 0.0),
    "gelu": (lambda u: 0.5 * u * (1.0 + math.erf(u / math.sqrt(2.0))),
             lambda u: (0.5 * (1.0 + math.erf(u / math.sqrt(2.0)))
                        + u * math.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi))),
}


def _quad(g, q):
  """E[g(sqrt(q) z)] by scipy.integrate.quad on each half-line (split at the kink at 0)."""
  f = lambda z: g(math.sqrt(q) * z) * math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
  return sum(integrate.quad(f, a, b, epsabs=1e-14, epsrel=1e-12, limit=200)[0]
             for a, b in ((-np.inf, 0.0), (0.0, np.inf)))


def _pair_quad(g, q, c):
  """E[g(u_a, u_b)], u_a = sqrt(q) z1, u_b = sqrt(q)(c z1 + sqrt(1 - c^2) z2), by nested
  adaptive quadrature split at z1 = 0 and at u_b = 0 (where ReLU/SELU jump or kink)."""
  s, r, lim = math.sqrt(1 - c * c), math.sqrt(q), 10.0

  def inner(z1):
    f = lambda z2: g(r * z1, r * (c * z1 + s * z2)) * math.exp(-0.5 * z2 * z2)
    k = -c * z1 / s
    pts = [-lim] + ([k] if -lim < k < lim else []) + [lim]
    return sum(integrate.quad(f, a, b, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
               for a, b in zip(pts[:-1], pts[1:]))

  outer = lambda z1: inner(z1) * math.exp(-0.5 * z1 * z1) / (2 * math.pi)
  return sum(integrate.quad(outer, a, b, epsabs=1e-12, epsrel=1e-11, limit=200)[0]
             for a, b in ((-lim, 0.0), (0.0, lim)))


# ------------------------------------------------------------------------------------------------
# Gaussian pair expectations.


@pytest.mark.parametrize("activation", ["tanh", "selu", "relu"])
@pytest.mark.parametrize("q,c", [(0.7, 0.3), (2.5, -0.6), (1.2, 0.95)])
def test_pair_moments_match_nested_adaptive_quadrature(activation, q, c):
  # The polar rule (split at the rays u_a = 0, u_b = 0) against scipy's nested quad: both are
  # accurate to ~1e-12 here, so 1e-9 relative leaves room only for a wrong rule.
  a, da = SCALAR[activation]
  m = phases.pair_moments(activation, q, c)
  assert m["phi_phi"] == pytest.approx(_pair_quad(lambda x, y: a(x) * a(y), q, c), rel=1e-9)
  assert m["dphi_dphi"] == pytest.approx(_pair_quad(lambda x, y: da(x) * da(y), q, c), rel=1e-9)
  assert m["phi2_phi2"] == pytest.approx(
      _pair_quad(lambda x, y: (a(x) * a(y)) ** 2, q, c), rel=1e-9)


@pytest.mark.parametrize("c", [-0.9, 0.0, 0.4, 1.0])
def test_arc_cosine_closed_forms(c):
  q = 1.7
  t = math.acos(c)
  relu = gaussian_expectations.piecewise_linear_kernels((1.0, 0.0), q, c)
  # E[relu(u) relu(v)] = q/2pi (sin t + (pi - t) cos t); E[I I] = (pi - t)/2pi (the brief).
  assert relu["phi_phi"] == pytest.approx(q / (2 * math.pi) * (math.sin(t) + (math.pi - t) * c))
  assert relu["dphi_dphi"] == pytest.approx((math.pi - t) / (2 * math.pi))
  # Identity: E[u v] = q c, E[1] = 1, E[u^2 v^2] = q^2 (1 + 2 c^2) (Isserlis).
  ident = gaussian_expectations.piecewise_linear_kernels((1.0, 1.0), q, c)
  assert ident["phi_phi"] == pytest.approx(q * c, abs=1e-14)
  assert ident["dphi_dphi"] == pytest.approx(1.0)
  assert ident["phi2_phi2"] == pytest.approx(q * q * (1 + 2 * c * c))
  # Leaky ReLU against the polar quadrature of its NumPy twin (the closed form switched off).
  slope = 0.2
  leaky = gaussian_expectations.piecewise_linear_kernels((1.0, slope), q, c)
  fn = lambda u: np.where(u > 0, u, slope * u)
  dfn = lambda u: np.where(u > 0, 1.0, slope)
  assert leaky["phi_phi"] == pytest.approx(
      gaussian_expectations.bivariate_expectation(lambda x, y: fn(x) * fn(y), q, c), rel=1e-12)
  assert leaky["dphi_dphi"] == pytest.approx(
      gaussian_expectations.bivariate_expectation(lambda x, y: dfn(x) * dfn(y), q, c), rel=1e-12)
  assert leaky["phi2_phi2"] == pytest.approx(gaussian_expectations.bivariate_expectation(
      lambda x, y: (fn(x) * fn(y)) ** 2, q, c), rel=1e-12)


# ------------------------------------------------------------------------------------------------
# The q-map.


@pytest.mark.parametrize("activation,sigma2_w,q", [("tanh", 1.7, 0.6), ("gelu", 3.0, 0.25),
                                                   ("selu", 1.0, 2.0)])
def test_q_map_slope_three_ways(activation, sigma2_w, q):
  """F'(q) by Stein's lemma (initjax) = chi_1 + sigma2_w E[phi phi''] (closed-form phi'') =
  a central finite difference of F computed by scipy quad."""
  a, _ = SCALAR[activation]
  slope = mean_field.q_map_slope(activation, sigma2_w, q)
  h = 1e-4 * q   # central difference: error ~ h^2 F''' ~ 1e-8 relative
  fd = sigma2_w * (_quad(lambda u: a(u) ** 2, q + h) - _quad(lambda u: a(u) ** 2, q - h)) / (2 * h)
  assert slope == pytest.approx(fd, rel=1e-6)
  if activation == "tanh":   # tanh'' = -2 tanh (1 - tanh^2)
    second = _quad(lambda u: math.tanh(u) * -2 * math.tanh(u) * (1 - math.tanh(u) ** 2), q)
    chi = mean_field.chi_1_at("tanh", sigma2_w, q)
    assert slope == pytest.approx(chi + sigma2_w * second, rel=1e-10)


def _gelu_roots(sigma2_w):
  """Roots of sigma2_w E[gelu(sqrt(q) z)^2] = q on [1e-4, 1e3], by scipy quad + brentq."""
  a, _ = SCALAR["gelu"]
  g = lambda q: sigma2_w * _quad(lambda u: a(u) ** 2, q) - q
  grid = np.geomspace(1e-4, 1e3, 40)
  v = [g(q) for q in grid]
  return [optimize.brentq(g, grid[i], grid[i + 1], xtol=1e-14)
          for i in range(len(grid) - 1) if v[i] * v[i + 1] < 0]


@pytest.mark.parametrize("sigma2_w,reference", [(2.3, 1.18), (3.0, 0.25), (3.9, 0.014)])
def test_gelu_unstable_fixed_point(sigma2_w, reference):
  # REFERENCES.md: q_u about 1.18 at 2.3, 0.25 at 3.0, 0.014 at 3.9 (two significant figures).
  points = theory.q_fixed_points("gelu", sigma2_w)
  assert [p.q for p in points][0] == 0.0 and points[0].stable
  assert points[0].slope == pytest.approx(sigma2_w / 4)        # F'(0) = sigma2_w gelu'(0)^2
  unstable = [p for p in points if not p.stable]
  assert len(unstable) == 1
  assert unstable[0].q == pytest.approx(reference, rel=0.02)
  (root,) = _gelu_roots(sigma2_w)   # independent: scipy quad + brentq
  assert unstable[0].q == pytest.approx(root, rel=1e-9)
  assert math.isinf(points[-1].q) and points[-1].slope == pytest.approx(sigma2_w / 2, rel=1e-4)


def test_gelu_fixed_point_follows_the_input():
  """The issue: chi_1("gelu", 3.0) was 0.75 at q = 0 ("ordered") although from unit-variance
  inputs the network grows. From q^0 = 3 > q_u = 0.247 the variance grows (chi_1 -> 3/2 in the
  large-q limit, GELU ~ ReLU there); from q^0 = 3 * 0.05 = 0.15 < q_u it decays to 0."""
  assert math.isinf(theory.fixed_point_q("gelu", 3.0))
  assert theory.chi_1("gelu", 3.0) == pytest.approx(1.5, rel=1e-4)
  d = theory.depth_scales("gelu", 3.0)
  assert d.phase == "diverging"
  assert "grows without bound" in d.reason and "0.2471" in d.reason
  small = theory.depth_scales("gelu", 3.0, input_variance=0.05)
  assert small.q_star == 0.0 and small.phase == "ordered"
  assert small.chi_1 == pytest.approx(0.75, rel=1e-9)
  assert small.xi_q == pytest.approx(-1 / math.log(0.75), rel=1e-9)
  # SiLU shares the structure (REFERENCES.md): silu'(0) = 1/2, q = 0 stable below 4.
  silu = theory.q_fixed_points("silu", 3.0)
  assert silu[0].q == 0.0 and silu[0].slope == pytest.approx(0.75)
  assert any(not p.stable and math.isfinite(p.q) for p in silu)


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_gelu_growth_matches_measurement():
  """REFERENCES.md: from unit-variance inputs GELU at sigma2_w = 3 grows, +0.17 decades per
  layer at width 64. The mean-field rate is log10 F(q^l)/q^l (0.173 averaged over 20 layers from
  q^0 = 3; log10 1.5 = 0.176 in the limit); one finite-width network's log-variance drifts below
  it by about Var[ln Y] / 2 per layer (`finite_width`), giving 0.161 at width 64.

  Measured: 64 networks (width 64, 32 inputs each), slope of log10 Var[h_k] over k = 1..20 per
  network. The tolerance is 4 standard errors of the mean of the 64 slopes (SE = sd / 8) plus
  0.01 decades per layer for the O(1/width) error of mean-field moments of a non-homogeneous
  activation (their pre-activations are not exactly Gaussian).
  """
  assert theory.decades_per_layer("gelu", 64, 3.0 / 64, depth=20)["forward"] == pytest.approx(
      0.17, abs=0.005)
  spec = propagation.NetworkSpec(input_dim=64, width=64, depth=20, batch_size=32,
                                 activation="gelu")
  stats = propagation.measure(jax.random.key(0), spec, weight_init="normal", scales=(3.0 / 64,),
                              num_seeds=64)
  layers = np.arange(1, 21)
  slopes = np.polyfit(layers, stats["var_h"][0].T, 1)[0]     # one slope per network
  spread = finite_width.log_variance_spread(input_dim=64, width=64, depth=20,
                                            sigma2_omega=3.0 / 64, activation="gelu",
                                            batch_size=32, quantity="var_h")
  predicted = np.polyfit(layers, spread.mean_ln / math.log(10), 1)[0]
  assert predicted == pytest.approx(0.161, abs=0.003)
  se = np.std(slopes, ddof=1) / math.sqrt(slopes.size)
  assert 4 * se < 0.03   # the test keeps its power
  assert abs(np.mean(slopes) - predicted) < 4 * se + 0.01, (np.mean(slopes), predicted, se)
  assert np.all(slopes > 0)   # every one of the 64 networks grows; none is "ordered"


def test_non_monotone_q_map_is_iterated():
  """phi(u) = u exp(-u^2/2): E[phi(sqrt(q) z)^2] = q (1 + 2q)^(-3/2) rises then falls, so the
  trajectory is found by iterating the map. sigma2_w = 8: q* = (8^(2/3) - 1) / 2 = 1.5 and
  F'(q*) = 1 - 3 q* / (1 + 2 q*) = -1/8 (convergence with alternating sign)."""
  fn = lambda f: f * jnp.exp(-0.5 * f * f)
  assert theory.fixed_point_q(fn, 8.0) == pytest.approx(1.5, rel=1e-10)
  d = theory.depth_scales(fn, 8.0)
  assert d.q_map_slope == pytest.approx(-0.125, rel=1e-8)
  assert d.xi_q == pytest.approx(1 / math.log(8.0), rel=1e-8)
  assert "not monotone" in d.reason


# ------------------------------------------------------------------------------------------------
# Correlations and depth scales.


def test_tanh_critical_point_reference():
  """REFERENCES.md: tanh, sigma2_b = 0.05: critical sigma2_w = 1.761 (q* = 0.5695). Independent:
  chi_1(q*(s), s) = 1 solved with scipy quad. q* = 0.5695 is the value at sigma2_w = 1.760; at
  the critical point itself q* = 0.5700 (both checked against quad)."""
  s = theory.critical_weight_variance("tanh", 0.05)
  assert s == pytest.approx(1.761, abs=5e-4)
  a, da = SCALAR["tanh"]

  def q_star(sw):
    return optimize.brentq(lambda q: sw * _quad(lambda u: a(u) ** 2, q) + 0.05 - q, 1e-3, 10,
                           xtol=1e-14)
  ref = optimize.brentq(lambda sw: sw * _quad(lambda u: da(u) ** 2, q_star(sw)) - 1, 1.5, 2.0,
                        xtol=1e-12)
  assert s == pytest.approx(ref, rel=1e-8)
  assert theory.fixed_point_q("tanh", s, 0.05) == pytest.approx(q_star(ref), rel=1e-9)
  assert theory.fixed_point_q("tanh", 1.760, 0.05) == pytest.approx(0.5695, abs=1e-4)
  assert theory.fixed_point_q("tanh", s, 0.05) == pytest.approx(0.5700, abs=1e-4)
  assert theory.depth_scales("tanh", s, 0.05).phase == "critical"


SIX_XI_C = [(0.5, 7), (1.0, 22), (1.5, 95), (2.0, 151), (2.5, 71), (3.0, 54), (4.0, 42)]


@pytest.mark.parametrize("sigma2_w,reference", SIX_XI_C)
def test_six_xi_c_reference_table(sigma2_w, reference):
  # REFERENCES.md, tanh with sigma2_b = 0.05: 6 xi_c given to the nearest integer.
  d = theory.depth_scales("tanh", sigma2_w, 0.05)
  assert round(6 * d.xi_c) == reference
  assert d.phase == ("ordered" if sigma2_w < 1.761 else "chaotic")
  assert (d.c_star == 1.0) == (sigma2_w < 1.761)


@pytest.mark.parametrize("activation,sigma2_w,sigma2_b", [
    ("tanh", 1.0, 0.05), ("tanh", 1.5, 0.3), ("gelu", 1.5, 0.1), ("sigmoid", 3.0, 0.0)])
def test_ordered_phase_chi_c_equals_chi_1(activation, sigma2_w, sigma2_b):
  # c* = 1, and chi_c from the 2-D rule at c = 1 equals chi_1 from the 1-D rule.
  d = theory.depth_scales(activation, sigma2_w, sigma2_b)
  assert d.phase == "ordered" and d.c_star == 1.0 and 0 < d.q_star < math.inf
  assert d.chi_c == pytest.approx(d.chi_1, rel=1e-10)
  assert d.xi_c == pytest.approx(-1 / math.log(d.chi_1), rel=1e-8)


@pytest.mark.parametrize("sigma2_w", [2.0, 3.0])
def test_chaotic_fixed_point_against_adaptive_quadrature(sigma2_w):
  """At initjax's (q*, c*) the c-map computed by scipy's nested quad returns c*, and its slope
  there (chi_c) agrees: both to 1e-8."""
  d = theory.depth_scales("tanh", sigma2_w, 0.05)
  assert d.phase == "chaotic" and 0 < d.c_star < 1
  a, da = SCALAR["tanh"]
  c_next = (sigma2_w * _pair_quad(lambda x, y: a(x) * a(y), d.q_star, d.c_star) + 0.05) / d.q_star
  assert c_next == pytest.approx(d.c_star, abs=1e-8)
  chi_c = sigma2_w * _pair_quad(lambda x, y: da(x) * da(y), d.q_star, d.c_star)
  assert d.chi_c == pytest.approx(chi_c, rel=1e-8)
  # Odd phi with zero bias: C(0) = 0, so c* = 0 and chi_c = sigma2_w E[phi'(u)]^2.
  z = theory.depth_scales("tanh", sigma2_w, 0.0)
  assert z.c_star == 0.0
  assert z.chi_c == pytest.approx(sigma2_w * _quad(da, z.q_star) ** 2, rel=1e-9)


def test_depth_scales_diverge_at_the_critical_line():
  """xi_c ~ 1 / |chi_c - 1| ~ 1 / |sigma2_w - s_c| on both sides of s_c; xi_q stays finite
  (Schoenholz et al.: only xi_c diverges)."""
  s_c = theory.critical_weight_variance("tanh", 0.05)
  for side in (-1, 1):
    xi = [theory.depth_scales("tanh", s_c * (1 + side * e), 0.05).xi_c for e in (1e-2, 1e-3,
                                                                                  1e-4)]
    assert xi[0] < xi[1] < xi[2]
    assert xi[2] > 1e3
    # 1/eps scaling: ten times closer, about ten times deeper (chaotic side: c* moves too).
    assert 5 < xi[2] / xi[1] < 20 and 5 < xi[1] / xi[0] < 20
  at = theory.depth_scales("tanh", s_c, 0.05)
  assert at.xi_c > 1e6 and at.xi_q < 10
  # ReLU at He with zero bias: F(q) = q for every q, chi_1 = 1: both scales infinite.
  he = theory.depth_scales("relu", 2.0)
  assert he.phase == "critical" and math.isinf(he.xi_c) and math.isinf(he.xi_q)
  assert he.q_star == 2.0   # q stays at q^0 = sigma2_w * 1


def test_zero_bias_relu_is_degenerate_not_exponential():
  """Zero-bias ReLU below He: q -> 0 geometrically (xi_q = xi_grad = 1 / ln 2 at sigma2_w = 1),
  while correlations follow the sigma2_w-free arc-cosine map, whose slope at c = 1 is exactly 1:
  xi_c = inf, not chi_1's 1.44 (c-map check below)."""
  d = theory.depth_scales("relu", 1.0)
  assert d.q_star == 0.0 and d.phase == "ordered"
  assert d.xi_q == pytest.approx(1 / math.log(2)) and d.xi_grad == pytest.approx(1 / math.log(2))
  assert math.isinf(d.xi_c) and d.c_star == 1.0 and "algebraic" in d.reason
  for q in (1e-6, 1.0, 1e6):   # the normalized c-map does not depend on q or sigma2_w
    assert phases.c_map_slope("relu", 1.0, 0.0, 1.0, q) == pytest.approx(1.0)
    assert phases.c_map("relu", 1.0, 0.0, 0.0, q) == pytest.approx(1 / math.pi)


def test_phase_boundary_of_gelu_is_a_jump_from_unit_inputs():
  """From unit-variance inputs (q^0 = sigma2_w) GELU has no edge of chaos: at the boundary q^0
  meets the unstable fixed point q_u (F(q^0) = q^0, checked with scipy quad) and the reached
  fixed point jumps from 0 to growth."""
  b = theory.phase_boundary("gelu")
  assert not b.continuous
  assert b.q_below == 0.0 and math.isinf(b.q_above)
  assert b.chi_1_below == pytest.approx(b.sigma2_w / 4, rel=1e-6)
  assert b.chi_1_above == pytest.approx(b.sigma2_w / 2, rel=1e-4)
  a, _ = SCALAR["gelu"]
  assert b.sigma2_w * _quad(lambda u: a(u) ** 2, b.sigma2_w) == pytest.approx(b.sigma2_w,
                                                                            rel=1e-7)
  with pytest.raises(ValueError, match="no edge of chaos"):
    theory.critical_weight_variance("gelu")


def test_critical_line():
  line = theory.critical_line("tanh", [0.0, 0.05])
  np.testing.assert_allclose(line["sigma2_w"], [1.0, 1.7609546], rtol=1e-6)
  assert line["continuous"].all()
  # ReLU with a bias: chi_1 = sigma2_w / 2 whatever q*, so the line is sigma2_w = 2.
  relu = theory.critical_line("relu", [0.0, 0.1])
  np.testing.assert_allclose(relu["sigma2_w"], [2.0, 2.0], rtol=1e-8)


# ------------------------------------------------------------------------------------------------
# Callables and bad input.


def test_callable_equals_named_twin():
  tanh = lambda f: jnp.tanh(f)
  for s2w, s2b in ((1.5, 0.05), (2.5, 0.05), (0.8, 0.0)):
    a, b = theory.depth_scales(tanh, s2w, s2b), theory.depth_scales("tanh", s2w, s2b)
    for name in ("q_star", "c_star", "chi_1", "chi_c", "xi_q", "xi_c"):
      assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-12), name
    assert a.phase == b.phase
  # A ReLU lambda runs through the quadrature (no slopes declared); ReLU has closed forms.
  relu = lambda f: jnp.maximum(f, 0.0)
  assert theory.critical_weight_variance(relu) == pytest.approx(2.0, rel=1e-8)
  assert theory.chi_1(relu, 1.3, 0.2) == pytest.approx(0.65, rel=1e-10)
  assert theory.fixed_point_q(relu, 1.0, 0.5) == pytest.approx(1.0, rel=1e-10)  # 0.5/(1 - 1/2)
  p, r = (theory.predict_mlp(input_dim=10, width=20, depth=4, sigma2_omega=0.1, activation=x)
          for x in (relu, "relu"))
  for x, y in zip(p.as_dict().values(), r.as_dict().values()):
    np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)
  # jax.nn.silu is the registered "silu": same numbers as a hand-written swish.
  swish = lambda f: f * jax.nn.sigmoid(f)
  assert theory.chi_1(swish, 1.7, 0.1) == pytest.approx(theory.chi_1(jax.nn.silu, 1.7, 0.1),
                                                          rel=1e-12)


@pytest.mark.parametrize("call", [
    lambda: theory.depth_scales("tanh", 0.0), lambda: theory.depth_scales("tanh", -1.0),
    lambda: theory.depth_scales("tanh", 1.0, -0.1), lambda: theory.chi_1("tanh", math.nan),
    lambda: theory.fixed_point_q("gelu", 2.0, -1e-3),
    lambda: theory.fixed_point_q("gelu", 2.0, input_variance=-1.0),
    lambda: theory.critical_weight_variance("tanh", -0.05),
    lambda: theory.q_fixed_points("tanh", float("inf")),
    lambda: theory.depth_scales("swish_typo", 1.0),
    lambda: theory.depth_scales(lambda f: float(f), 1.0),
    lambda: theory.depth_scales(lambda f: jnp.exp(f * f), 1.0),
])
def test_bad_input_is_one_clear_error(call):
  with pytest.raises(ValueError) as err:
    call()
  assert "\n" not in str(err.value) and len(str(err.value)) < 300
