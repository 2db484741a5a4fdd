"""Tests for initjax.theory: the slides' expectation rules, the He derivation, Gauss-Hermite
moments, whole-network predictions against Monte Carlo, and the initialization conditions.

Monte Carlo tolerances: the standard error (SE) of a sample mean of n independent draws is
sd / sqrt(n), with sd the sample standard deviation; we allow 5 SE (two-sided p ~ 6e-7 for a
normal estimate, so a correct formula practically never fails; with fixed keys the draws are
deterministic anyway).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from initjax import theory
from initjax.measurement import propagation
from initjax.nn import activations, gradients, initializers, networks
from initjax.nn.initializers import get_initializer
from initjax.theory import finite_width

N_MC = 1_000_000
Z_SE = 5.0  # tolerance in standard errors


def _se(samples):
  """Standard error of the mean of `samples`: sd / sqrt(n)."""
  return float(np.std(samples, ddof=1) / math.sqrt(samples.size))


def _assert_mc(samples, expected, what=""):
  """|mean(samples) - expected| <= 5 SE."""
  mean, se = float(np.mean(samples)), _se(samples)
  assert abs(mean - expected) <= Z_SE * se, (what, mean, expected, se)


@pytest.fixture(scope="module")
def z():
  """2 x 1e6 independent standard normals (float64 copies of fixed-key float32 draws)."""
  return np.asarray(jax.random.normal(jax.random.key(0), (2, N_MC)), np.float64)


# ------------------------------------------------------------------------------------------------
# Rules of expectation (slides "Rules for manipulating expectation", rules 1-4).


def test_expectation_rules_1_to_3_hold_exactly_on_a_sample(z):
  x = z[0]
  g = lambda v: np.exp(-v ** 2) + v  # any function
  f = lambda v: v ** 3 - 2.0 * v
  k = 3.7
  # Rule 1: E[k] = k. Rule 2: E[k g(x)] = k E[g(x)]. Rule 3: E[f(x) + g(x)] = E[f(x)] + E[g(x)].
  # The sample mean is linear, so these hold on any sample up to float64 rounding.
  np.testing.assert_allclose(np.mean(np.full_like(x, k)), k, rtol=1e-12)
  np.testing.assert_allclose(np.mean(k * g(x)), k * np.mean(g(x)), rtol=1e-12)
  np.testing.assert_allclose(np.mean(f(x) + g(x)), np.mean(f(x)) + np.mean(g(x)), rtol=1e-10,
                             atol=1e-12)


def test_rule_4_product_of_independent_variables(z):
  x, y = z[0], z[1]
  f, g = x + 1.0, y ** 2  # E[f(x)] = 1, E[g(y)] = 1
  # E[f(x) g(y)] = E[f(x)] E[g(y)] = 1.
  _assert_mc(f * g, 1.0, "E[f(x) g(y)]")
  # The sample covariance mean(fg) - mean(f) mean(g) has SE sd(f) sd(g) / sqrt(n) when x, y are
  # independent (Var[(f - Ef)(g - Eg)] = Var f Var g).
  cov = np.mean(f * g) - np.mean(f) * np.mean(g)
  assert abs(cov) <= Z_SE * np.std(f) * np.std(g) / math.sqrt(N_MC)


def test_rule_4_fails_for_dependent_variables(z):
  x = z[0]
  y = x  # fully dependent
  # E[x y] = E[x^2] = 1, but E[x] E[y] = 0.
  _assert_mc(x * y, 1.0, "E[x x]")
  assert abs(np.mean(x) * np.mean(y)) < 1e-4  # E[x]^2 = 0; SE^2 = 1e-6
  assert np.mean(x * y) - np.mean(x) * np.mean(y) > 0.99


def test_variance_identity(z):
  x = 3.0 + 2.0 * z[0]  # mu = 3, sigma^2 = 4
  mu = np.mean(x)
  # On the sample, with mu the sample mean, E[(x - mu)^2] = E[x^2] - E[x]^2 is exact algebra;
  # float64 rounding of E[x^2] ~ 13 leaves ~1e-15 * 13 / 4 relative.
  np.testing.assert_allclose(np.mean((x - mu) ** 2), np.mean(x ** 2) - mu ** 2, rtol=1e-10)
  # And with the population mean it estimates sigma^2 = 4: SE of a sample variance of n normal
  # draws is sigma^2 sqrt(2 / n).
  assert abs(np.mean((x - 3.0) ** 2) - 4.0) <= Z_SE * 4.0 * math.sqrt(2.0 / N_MC)


# ------------------------------------------------------------------------------------------------
# The He derivation, one step at a time.


@pytest.mark.parametrize("v", [0.3, 2.5])
def test_relu_second_moment_is_half_the_variance(z, v):
  f = math.sqrt(v) * z[0]
  h = np.maximum(f, 0.0)
  _assert_mc(h ** 2, v / 2.0, "E[ReLU(f)^2]")
  m = theory.activation_moments("relu", v)
  assert m["second_moment_h"] == pytest.approx(v / 2.0, rel=1e-15)
  assert m["mean_h"] == pytest.approx(math.sqrt(v / (2.0 * math.pi)), rel=1e-15)
  assert m["var_h"] == pytest.approx(v / 2.0 - v / (2.0 * math.pi), rel=1e-14)
  assert m["second_moment_da"] == 0.5
  _assert_mc(h, m["mean_h"], "E[ReLU(f)]")
  _assert_mc((f > 0).astype(float), m["second_moment_da"], "E[I[f > 0]^2]")


@pytest.fixture(scope="module")
def layer_draws():
  """3 x 20000 x 64 standard normals: many draws of one layer of width D_h = 64."""
  return np.asarray(jax.random.normal(jax.random.key(1), (3, 20_000, 64)), np.float64)


def test_one_layer_mean_and_variance_with_fixed_h(layer_draws):
  """f' = beta + Omega h for a fixed non-Gaussian h and many draws of Omega, beta."""
  m_draws, d_h = layer_draws.shape[1:]
  sigma2_omega, sigma2_beta = 0.05, 0.1
  h = np.maximum(layer_draws[2, 0], 0.0) + 0.5  # fixed h = ReLU(z) + 0.5: nonzero mean
  omega = math.sqrt(sigma2_omega) * layer_draws[0]  # (M, D_h): one row of Omega per draw
  beta = math.sqrt(sigma2_beta) * layer_draws[1, :, 0]
  f_next = beta + omega @ h  # (M,)
  # E[f'] = E[beta] + sum_j E[Omega_ij] E[h_j] = 0.
  assert theory.preactivation_mean() == 0.0
  _assert_mc(f_next, theory.preactivation_mean(), "E[f']")
  # sigma2_f' = sigma2_beta + sigma2_Omega sum_j h_j^2 (here E[h_j^2] = h_j^2, h is fixed).
  expected = sigma2_beta + sigma2_omega * np.sum(h ** 2)
  assert theory.preactivation_variance(sigma2_omega, h ** 2, sigma2_beta=sigma2_beta) == (
      pytest.approx(expected, rel=1e-14))
  assert theory.preactivation_variance(sigma2_omega, h ** 2) == pytest.approx(
      sigma2_omega * np.sum(h ** 2), rel=1e-14)  # the slides' zero-bias case
  # f' given h is exactly normal: the SE of its sample variance is var sqrt(2 / (M - 1)).
  assert abs(np.var(f_next, ddof=1) - expected) <= Z_SE * expected * math.sqrt(2.0 / (m_draws - 1))
  # The form with one shared second moment: sum_j E[h_j^2] = fan_in E[h^2].
  assert theory.preactivation_variance(0.05, 0.7, fan_in=d_h) == pytest.approx(0.05 * 0.7 * d_h)
  with pytest.raises(ValueError):
    theory.preactivation_variance(0.05, 0.7)


def test_relu_next_variance(layer_draws):
  d_h, sigma2_omega, sigma2_f = 64, 0.05, 1.7
  assert theory.relu_next_variance(sigma2_f, d_h, sigma2_omega) == pytest.approx(
      d_h * sigma2_omega * sigma2_f / 2.0, rel=1e-15)
  # The two steps of the slides compose to it: sigma2_Omega sum_j E[ReLU(f_j)^2].
  m2 = theory.activation_moments("relu", sigma2_f)["second_moment_h"]
  assert theory.preactivation_variance(sigma2_omega, m2, fan_in=d_h) == pytest.approx(
      theory.relu_next_variance(sigma2_f, d_h, sigma2_omega), rel=1e-14)
  # He: sigma2_Omega = 2 / D_h keeps the variance.
  assert theory.relu_next_variance(sigma2_f, d_h, 2.0 / d_h) == pytest.approx(sigma2_f)
  # Monte Carlo with f and Omega both random: f' = sum_j Omega_j ReLU(f_j) is not normal, so
  # the SE of E[f'^2] is taken from the sample.
  f = math.sqrt(sigma2_f) * layer_draws[0]
  omega = math.sqrt(sigma2_omega) * layer_draws[1]
  f_next = np.sum(omega * np.maximum(f, 0.0), axis=1)
  _assert_mc(f_next ** 2, theory.relu_next_variance(sigma2_f, d_h, sigma2_omega), "E[f'^2]")


# ------------------------------------------------------------------------------------------------
# Gauss-Hermite expectations.


@pytest.mark.parametrize("v", [0.01, 1.0, 7.5])
def test_gaussian_expectation_closed_forms(v):
  assert theory.gaussian_expectation(lambda f: np.ones_like(f), v) == pytest.approx(1.0, rel=1e-12)
  assert theory.gaussian_expectation(lambda f: f, v) == pytest.approx(0.0, abs=1e-12)
  assert theory.gaussian_expectation(lambda f: f ** 2, v) == pytest.approx(v, rel=1e-12)
  assert theory.gaussian_expectation(lambda f: f ** 4, v) == pytest.approx(3 * v ** 2, rel=1e-12)
  assert theory.gaussian_expectation(lambda f: f, v, mean=0.4) == pytest.approx(0.4, rel=1e-12)
  assert theory.gaussian_expectation(lambda f: f ** 2, v, mean=0.4) == pytest.approx(
      v + 0.16, rel=1e-12)
  # E[exp(f)] = exp(v / 2): smooth but not a polynomial.
  assert theory.gaussian_expectation(np.exp, v) == pytest.approx(math.exp(v / 2), rel=1e-10)


@pytest.mark.parametrize("v", [0.5, 2.0])
def test_gaussian_expectation_tanh_derivative_vs_monte_carlo(z, v):
  dtanh2 = lambda f: (1.0 - np.tanh(f) ** 2) ** 2
  _assert_mc(dtanh2(math.sqrt(v) * z[0]), theory.gaussian_expectation(dtanh2, v), "E[tanh'^2]")


# Independent numpy references for the activations and their derivatives.
NP_ACT = {
    "tanh": (np.tanh, lambda f: 1.0 - np.tanh(f) ** 2),
    "sigmoid": (special.expit, lambda f: special.expit(f) * (1.0 - special.expit(f))),
    "gelu": (lambda f: f * special.ndtr(f),
             lambda f: special.ndtr(f) + f * np.exp(-0.5 * f * f) / math.sqrt(2 * math.pi)),
    "softsign": (lambda f: f / (1 + np.abs(f)), lambda f: 1.0 / (1 + np.abs(f)) ** 2),
    "selu": (lambda f: SELU_SCALE * np.where(f > 0, f, SELU_ALPHA * np.expm1(np.minimum(f, 0))),
             lambda f: SELU_SCALE * np.where(f > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(f, 0)))),
    "relu": (lambda f: np.maximum(f, 0.0), lambda f: (f > 0).astype(float)),
    "leaky_relu": (lambda f: np.where(f > 0, f, activations.LEAKY_RELU_SLOPE * f),
                   lambda f: np.where(f > 0, 1.0, activations.LEAKY_RELU_SLOPE)),
    "identity": (lambda f: f, np.ones_like),
}
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def _moments_by_adaptive_quadrature(activation, v):
  """E[a(f)], E[a(f)^2], E[a'(f)^2] for f ~ N(0, v) by scipy's adaptive quadrature, split at the
  kink f = 0 (accurate to ~1e-10 whether or not a is smooth there)."""
  from scipy import integrate  # pylint: disable=import-outside-toplevel
  a, da = NP_ACT[activation]
  pdf = lambda f: math.exp(-f * f / (2 * v)) / math.sqrt(2 * math.pi * v)
  def e(g):
    one = lambda f: float(g(np.array(f))) * pdf(f)
    return (integrate.quad(one, -np.inf, 0, epsabs=1e-13)[0]
            + integrate.quad(one, 0, np.inf, epsabs=1e-13)[0])
  return {"mean_h": e(a), "second_moment_h": e(lambda f: a(f) ** 2),
          "second_moment_da": e(lambda f: da(f) ** 2)}


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu"])
@pytest.mark.parametrize("v", [0.5, 3.0])
def test_activation_moments_vs_monte_carlo(z, activation, v):
  a, da = NP_ACT[activation]
  f = math.sqrt(v) * z[0]  # 1e6 draws: 5 SE is ~0.1-0.5% of each moment here
  m = theory.activation_moments(activation, v)
  _assert_mc(a(f), m["mean_h"], "E[a(f)]")
  _assert_mc(a(f) ** 2, m["second_moment_h"], "E[a(f)^2]")
  _assert_mc(da(f) ** 2, m["second_moment_da"], "E[a'(f)^2]")
  assert m["var_h"] == pytest.approx(m["second_moment_h"] - m["mean_h"] ** 2, rel=1e-12)
  # Smooth activations: Gauss-Hermite with 200 nodes is essentially exact.
  ref = _moments_by_adaptive_quadrature(activation, v)
  for name, value in ref.items():
    assert m[name] == pytest.approx(value, rel=1e-6, abs=1e-12), name


_GRID = np.linspace(-4, 4, 100)  # even count: 0 is not a node, so the kinks do not matter


@pytest.fixture(scope="module")
def library_activations():
  """a(f) and a'(f) of initjax.activations on _GRID for every activation, in one jit."""
  fn = jax.jit(lambda f: {name: (activations.get_activation(name)(f),
                                 activations.get_activation_derivative(name)(f))
                          for name in NP_ACT})
  return jax.device_get(fn(jnp.asarray(_GRID, jnp.float32)))


@pytest.mark.parametrize("activation", sorted(NP_ACT))
def test_numpy_references_are_the_network_activations(library_activations, activation):
  a, da = NP_ACT[activation]
  lib_a, lib_da = library_activations[activation]
  np.testing.assert_allclose(lib_a, a(_GRID), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(lib_da, da(_GRID), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "identity"])
@pytest.mark.parametrize("v", [0.2, 5.0])
def test_closed_form_moments_agree_with_quadrature(activation, v):
  m = theory.activation_moments(activation, v)
  for name, value in _moments_by_adaptive_quadrature(activation, v).items():
    assert m[name] == pytest.approx(value, rel=1e-8, abs=1e-12), name


# Quadrature splits at the kink at f = 0 (Gauss-Legendre on each half-line).
@pytest.mark.parametrize("activation,v", [("softsign", 0.5), ("softsign", 3.0), ("selu", 0.5),
                                          ("selu", 3.0)])
def test_activation_moments_accurate_for_kinked_activations(activation, v):
  m = theory.activation_moments(activation, v)
  # 1e-3 relative: 50 layers of such an error stay within ~0.02 decades.
  for name, value in _moments_by_adaptive_quadrature(activation, v).items():
    assert m[name] == pytest.approx(value, rel=1e-3, abs=1e-12), name


# ------------------------------------------------------------------------------------------------
# Whole networks: theory vs Monte Carlo over many random networks.

MC_SEEDS, MC_WIDTH, MC_DEPTH, MC_BATCH = 400, 100, 8, 32


@pytest.fixture(scope="module")
def mc_networks():
  """400 width-100 depth-8 networks with N(0, 1) weights and zero biases, and for each a batch of
  32 standard-normal inputs.

  The weights of all 400 networks come from one call of the registry's `normal` initializer (one
  compiled draw instead of a vmapped init_mlp, which costs several seconds to compile on 2 cores),
  laid out as init_mlp's parameter dict (checked with eval_shape). A test with weight variance
  sigma2 multiplies them by sqrt(sigma2), which is exactly what `normal(variance=sigma2)` draws
  for the same key (checked below).
  """
  s, w, k = MC_SEEDS, MC_WIDTH, MC_DEPTH
  init = get_initializer("normal", variance=1.0)
  n_w = (k * w + 1) * w  # Omega_0 (w x w), K - 1 hidden (w x w), Omega_K (1 x w)
  draws = init(jax.random.key(0), (s, n_w + MC_BATCH * w))
  params = {"omega_0": draws[:, :w * w].reshape(s, w, w),
            "omega_hidden": draws[:, w * w:k * w * w].reshape(s, k - 1, w, w),
            "omega_out": draws[:, k * w * w:n_w].reshape(s, 1, w),
            "beta_0": jnp.zeros((s, w)), "beta_hidden": jnp.zeros((s, k - 1, w)),
            "beta_out": jnp.zeros((s, 1))}
  x = draws[:, n_w:].reshape(s, MC_BATCH, w)
  ref = jax.eval_shape(lambda key: networks.init_mlp(key, input_dim=w, width=w, depth=k),
                       jax.random.key(0))
  assert {n: (s, *v.shape) for n, v in ref.items()} == {n: v.shape for n, v in params.items()}
  key, shape = jax.random.key(5), (3, 4)
  for sigma2 in (0.01, 0.02, 0.05, 0.03):
    np.testing.assert_array_equal(
        np.asarray(get_initializer("normal", variance=sigma2)(key, shape)),
        np.asarray(init(key, shape) * jnp.float32(math.sqrt(sigma2))))
  return params, x


def _network_stats(params, x, std, activation):
  """Per-network pooled statistics (over examples and units) of one network."""
  params = {k: v * std for k, v in params.items()}  # N(0, 1) -> N(0, std^2); biases stay zero
  tr = networks.trace_mlp(params, x, activation)
  g = gradients.layer_gradients(params, x, jnp.zeros((x.shape[0], 1), x.dtype), activation)
  ms = lambda a: jnp.mean(a ** 2, axis=(-2, -1))
  return {
      "var_f": jnp.concatenate([ms(tr["f"]), ms(tr["f_out"])[None]]),  # f_0..f_K, mean zero
      "var_h": jnp.var(tr["h"], axis=(1, 2)),                          # h_1..h_K
      "var_dl_dh": ms(g["dl_dh"]),                                      # h_1..h_K
      "var_dl_df": jnp.concatenate([ms(g["dl_df"]), ms(g["dl_df_out"])[None]]),  # f_0..f_K
  }


_STATS = jax.jit(jax.vmap(_network_stats, in_axes=(0, 0, None, None)), static_argnums=3)
_STATS_CACHE = {}


def _mc_stats(mc_networks, activation, sigma2):
  if (activation, sigma2) not in _STATS_CACHE:
    params, x = mc_networks
    out = _STATS(params, x, jnp.float32(math.sqrt(sigma2)), activation)
    _STATS_CACHE[(activation, sigma2)] = {k: np.asarray(v, np.float64) for k, v in out.items()}
  return _STATS_CACHE[(activation, sigma2)]


def _predict(activation, sigma2):
  return theory.predict_mlp(input_dim=MC_WIDTH, width=MC_WIDTH, depth=MC_DEPTH,
                            sigma2_omega=sigma2, activation=activation)


MC_CASES = [("relu", 0.01), ("relu", 0.02), ("relu", 0.05), ("tanh", 0.01), ("tanh", 0.03)]


@pytest.mark.parametrize("activation,sigma2", MC_CASES)
def test_forward_variances_match_theory(mc_networks, activation, sigma2):
  """log10 of the across-seed mean of each network's pooled Var[f_k], Var[h_k] vs predict_mlp.

  For ReLU with zero bias and Gaussian weights the prediction is the exact mean at any width
  (E[f_k^2] = sigma2 ||h_k||^2 conditionally), so only sampling error is allowed: 5 SE of the
  mean over the 400 networks, converted to decades (SE / mean / ln 10). For tanh the mean-field
  formula assumes Gaussian pre-activations, exact only as width -> infinity; the O(1/D_h) bias
  (~1% at D_h = 100) is allowed as 0.01 decades extra. (The pooled Var[h_k] subtracts each
  network's own mean of h, which lowers it by the variance of that mean: well inside 5 SE.)
  """
  stats = _mc_stats(mc_networks, activation, sigma2)
  pred = _predict(activation, sigma2)
  bias_allowance = 0.0 if activation == "relu" else 0.01
  for name, theory_log10 in (("var_f", pred.log10_var_f), ("var_h", pred.log10_var_h)):
    v = stats[name]  # (seeds, layers)
    mean = v.mean(axis=0)
    tol = Z_SE * v.std(axis=0, ddof=1) / math.sqrt(v.shape[0]) / mean / math.log(10)
    assert np.all(tol < 0.2), (name, tol)  # the test keeps its power
    np.testing.assert_array_less(np.abs(np.log10(mean) - theory_log10), tol + bias_allowance,
                                 err_msg=f"{name} {activation} {sigma2}")


@pytest.mark.parametrize("activation,sigma2", MC_CASES)
def test_backward_slopes_match_theory(mc_networks, activation, sigma2):
  """Decades per layer of the backward variances E[(dl/dh_k)^2], E[(dl/df_k)^2] vs predict_mlp.

  The theory assumes the backward signal is independent of the forward weights. With a single
  output, dl/df_K = 2 f_K is correlated with the backward Jacobian, and the across-seed MEAN
  exceeds the independence theory by about exp(5 L / D_h) after L layers for ReLU (the
  fourth-moment effect of Hanin & Rolnick 2018): ~0.17 decades after 8 layers of width 100.
  The across-seed MEDIAN is robust to that heavy tail, but sits a constant ~0.3 decades below
  the theory at every layer (one output: each network's E[f_K^2] over 32 correlated examples
  behaves like a chi-square with ~1 degree of freedom, whose median is 0.45 of its mean). A
  constant offset does not change the slope, so we fit a line to log10(median) against k and
  compare its slope with the slope of the theory: 0.03 decades/layer allows the finite-width drift
  of the median (~2.5 / D_h per layer in ln, i.e. ~0.011 decades) plus sampling noise; a wrong
  factor D_h sigma2 / 2 per layer (e.g. 2 instead of 1/2) would be off by 0.6 decades/layer.
  """
  stats = _mc_stats(mc_networks, activation, sigma2)
  pred = _predict(activation, sigma2)
  for name, theory_log10 in (("var_dl_dh", pred.log10_var_dl_dh),
                             ("var_dl_df", pred.log10_var_dl_df)):
    layers = np.arange(theory_log10.size)
    mc_slope = np.polyfit(layers, np.log10(np.median(stats[name], axis=0)), 1)[0]
    theory_slope = np.polyfit(layers, theory_log10, 1)[0]
    assert abs(mc_slope - theory_slope) < 0.03, (name, mc_slope, theory_slope)


@pytest.mark.parametrize("activation,sigma2", MC_CASES)
def test_backward_levels_match_theory_with_finite_width_correction(mc_networks, activation,
                                                                   sigma2):
  """Levels of the backward variances: the across-seed mean may exceed the independence theory
  by the finite-width factor exp(5 L / D_h) (L = weight layers traversed from the output, see
  test_backward_slopes_match_theory), and must otherwise agree within 5 SE. The output layer has
  no such effect: E[(dl/df_K)^2] = 4 E[f_K^2] exactly, per network.
  """
  stats = _mc_stats(mc_networks, activation, sigma2)
  pred = _predict(activation, sigma2)
  np.testing.assert_allclose(stats["var_dl_df"][:, -1], 4.0 * stats["var_f"][:, -1], rtol=1e-5)
  assert pred.log10_var_dl_df[-1] == pytest.approx(math.log10(4.0) + pred.log10_var_f[-1])
  for name, theory_log10, n_layers in (
      ("var_dl_dh", pred.log10_var_dl_dh, MC_DEPTH + 1 - np.arange(1, MC_DEPTH + 1)),
      ("var_dl_df", pred.log10_var_dl_df, MC_DEPTH - np.arange(0, MC_DEPTH + 1))):
    v = stats[name]
    mean = v.mean(axis=0)
    se_decades = v.std(axis=0, ddof=1) / math.sqrt(v.shape[0]) / mean / math.log(10)
    excess = 5.0 * n_layers / MC_WIDTH / math.log(10)  # log10 exp(5 L / D_h)
    dev = np.log10(mean) - theory_log10
    assert np.all(Z_SE * se_decades < 0.3), (name, se_decades)
    np.testing.assert_array_less(dev, excess + Z_SE * se_decades, err_msg=name)
    np.testing.assert_array_less(-Z_SE * se_decades, dev, err_msg=name)


# ------------------------------------------------------------------------------------------------
# Initialization conditions.


def test_he_conditions():
  assert theory.he_forward_variance(100) == pytest.approx(0.02, rel=1e-15)
  assert theory.he_backward_variance(50) == pytest.approx(0.04, rel=1e-15)
  a = 0.2
  assert theory.he_forward_variance(100, a) == pytest.approx(2.0 / ((1 + a * a) * 100), rel=1e-15)
  assert theory.he_backward_variance(30, a) == pytest.approx(2.0 / ((1 + a * a) * 30), rel=1e-15)
  # Same numbers as the initializers: the kernel (fan_in, fan_out) = (100, 50).
  assert initializers.expected_variance("he_normal", (100, 50)) == pytest.approx(
      theory.he_forward_variance(100))
  assert initializers.expected_variance("he_normal", (100, 50), mode="fan_out") == pytest.approx(
      theory.he_backward_variance(50))
  assert initializers.expected_variance("he_normal", (100, 50), negative_slope=a) == (
      pytest.approx(theory.he_forward_variance(100, a)))
  # He keeps the ReLU forward variance: D_h sigma2 / 2 = 1, also for leaky ReLU with its slope.
  assert theory.relu_next_variance(3.0, 100, theory.he_forward_variance(100)) == pytest.approx(3.0)
  slope = activations.LEAKY_RELU_SLOPE
  d = theory.decades_per_layer("leaky_relu", 100, theory.he_forward_variance(100, slope))
  assert d["forward"] == pytest.approx(0.0, abs=1e-12)
  assert d["backward"] == pytest.approx(0.0, abs=1e-12)


def test_xavier_conditions():
  assert theory.xavier_variance(100, 50) == pytest.approx(2.0 / 150, rel=1e-15)
  assert theory.xavier_variance(100, 100) == pytest.approx(0.01, rel=1e-15)
  assert theory.xavier_forward_variance(100) == pytest.approx(0.01, rel=1e-15)
  assert initializers.expected_variance("xavier_normal", (100, 50)) == pytest.approx(
      theory.xavier_variance(100, 50))
  assert initializers.expected_variance("lecun_normal", (100, 50)) == pytest.approx(
      theory.xavier_forward_variance(100))
  # Xavier under ReLU halves the variance per layer: -log10(2) decades.
  d = theory.decades_per_layer("relu", 100, theory.xavier_forward_variance(100))
  assert d["forward"] == pytest.approx(-math.log10(2.0), abs=1e-12)


@pytest.mark.parametrize("sigma2,expected", [(1.0, math.log10(50.0)), (0.001, -1.30103),
                                             (0.02, 0.0), (0.1, math.log10(5.0))])
def test_decades_per_layer_relu(sigma2, expected):
  # REFERENCES.md: log10(D_h sigma2 / 2) decades per layer: +1.70 for 1.0, -1.30 for 0.001.
  d = theory.decades_per_layer("relu", 100, sigma2)
  assert d["forward"] == pytest.approx(expected, abs=1e-5)
  assert d["backward"] == pytest.approx(expected, abs=1e-5)
  assert d["forward"] == pytest.approx(math.log10(100 * sigma2 / 2), abs=1e-12)


def test_decades_per_layer_relu_reference_numbers():
  assert round(theory.decades_per_layer("relu", 100, 1.0)["forward"], 3) == 1.699
  assert round(theory.decades_per_layer("relu", 100, 0.001)["forward"], 3) == -1.301


def test_chi_1_and_critical_variance_closed_forms():
  assert theory.chi_1("relu", 2.0) == 1.0
  assert theory.chi_1("relu", 1.0) == 0.5
  assert theory.critical_weight_variance("relu") == 2.0
  slope = activations.LEAKY_RELU_SLOPE
  assert theory.critical_weight_variance("leaky_relu") == pytest.approx(2.0 / (1 + slope ** 2),
                                                                        rel=1e-15)
  assert theory.chi_1("leaky_relu", 2.0 / (1 + slope ** 2)) == pytest.approx(1.0, rel=1e-15)
  assert theory.critical_weight_variance("identity") == 1.0
  with pytest.raises(ValueError):
    theory.critical_weight_variance("not_an_activation")


def test_critical_variance_tanh():
  # tanh with zero bias: q* = 0 and tanh'(0) = 1, so chi_1 = sigma2_w: critical at 1 (Xavier).
  # The fixed point is found by bracketing + brentq, so the root is exact to bisection accuracy.
  s = theory.critical_weight_variance("tanh")
  assert s == pytest.approx(1.0, rel=1e-5)
  assert theory.chi_1("tanh", s) == pytest.approx(1.0, rel=1e-6)


# GELU with zero bias: chi_1 = sigma2_w / 4 while q* = 0; at sigma2_w = 4 it reaches 1 and q*
# jumps to infinity. The edge of chaos is that one-sided limit.
# Adjusted when the theory started following the fixed point reached from the input (the issue:
# "criticality must be stated for the fixed point the network actually reaches"): the one-sided
# limit 4 belongs to the q* = 0 branch, which the trajectory reaches from an infinitesimal input
# (input_variance = 0; q = 0 is stable below 4). From unit-variance inputs GELU leaves that branch
# at sigma2_w = 2.155, where q^0 = sigma2_w meets the unstable fixed point q_u, and chi_1 jumps
# over 1 (0.54 -> 1.08): it has no edge of chaos there (tests/test_mean_field.py checks that).
def test_critical_variance_gelu_is_a_root():
  s = theory.critical_weight_variance("gelu", input_variance=0.0)
  assert s == pytest.approx(4.0, rel=1e-6)
  assert theory.chi_1("gelu", s, input_variance=0.0) == pytest.approx(1.0, rel=1e-6)


# ------------------------------------------------------------------------------------------------
# predict_mlp.


def test_predict_mlp_depth_50_does_not_overflow():
  """The book's figure with sigma2 = 1: variances far beyond float32 (REFERENCES.md)."""
  k_layers, d_h = 50, 100
  p = theory.predict_mlp(input_dim=d_h, width=d_h, depth=k_layers, sigma2_omega=1.0)
  for name, arr in p.as_dict().items():
    assert np.all(np.isfinite(arr)), name
  assert p.log10_var_h[-1] == pytest.approx(85.0, abs=1.0)  # forward, layer 50: ~1e85
  assert p.log10_var_dl_df[0] == pytest.approx(170.0, abs=1.5)  # backward, layer 0: ~1e170
  assert p.log10_var_dl_dh[0] == pytest.approx(170.0, abs=1.5)
  assert np.all(np.isfinite(10.0 ** p.log10_var_dl_df))  # inside float64
  # Exact: Var[f_k] = D_in sigma2 (D_h sigma2 / 2)^k; E[(dl/df_K)^2] = 4 Var[f_K]; then
  # dl/dh_K gains D_out sigma2 = 1 and every layer back a factor D_h sigma2 / 2.
  per_layer = math.log10(d_h * 1.0 / 2)
  np.testing.assert_allclose(p.log10_var_f, 2.0 + per_layer * np.arange(k_layers + 1), rtol=1e-12)
  # dl/df_K (4 Var[f_K]) -> dl/dh_K (x D_out sigma2 = 1) -> dl/df_{K-1} (x 1/2) -> ... each
  # further layer back x D_h sigma2 / 2.
  top = math.log10(4) + p.log10_var_f[-1]
  np.testing.assert_allclose(p.log10_var_dl_df[-1], top, rtol=1e-12)
  np.testing.assert_allclose(
      p.log10_var_dl_df[:-1],
      top + math.log10(0.5) + per_layer * (k_layers - 1 - np.arange(k_layers)), rtol=1e-12)
  np.testing.assert_allclose(p.log10_var_dl_dh, p.log10_var_dl_df[:-1] + math.log10(2),
                             rtol=1e-12)
  np.testing.assert_allclose(p.log10_second_moment_h, p.log10_var_f[:-1] - math.log10(2),
                             rtol=1e-12)
  np.testing.assert_allclose(p.log10_var_h,
                             p.log10_var_f[:-1] + math.log10(0.5 - 1 / (2 * math.pi)), rtol=1e-12)


def test_predict_mlp_per_layer_sigma2():
  depth, d_h = 6, 100
  s2 = [0.01, 0.02, 0.04, 0.005, 0.02, 0.1, 0.3]  # Omega_0..Omega_K
  p = theory.predict_mlp(input_dim=30, width=d_h, depth=depth, sigma2_omega=s2)
  assert p.log10_var_f[0] == pytest.approx(math.log10(30 * s2[0]))
  np.testing.assert_allclose(np.diff(p.log10_var_f), np.log10(d_h * np.array(s2[1:]) / 2),
                             rtol=1e-12)
  # Backward: dl/dh_k = Omega_k^T dl/df_k gains D_{f_k} sigma2_k; D_f = D_h except the output.
  fan_out = np.array([d_h] * (depth - 1) + [1])
  np.testing.assert_allclose(p.log10_var_dl_dh - p.log10_var_dl_df[1:],
                             np.log10(fan_out * np.array(s2[1:])), rtol=1e-12)
  np.testing.assert_allclose(p.log10_var_dl_df[:-1] - p.log10_var_dl_dh, math.log10(0.5),
                             rtol=1e-12)
  # A list of equal values is the same as the scalar.
  a = theory.predict_mlp(input_dim=30, width=d_h, depth=depth, sigma2_omega=[0.02] * (depth + 1))
  b = theory.predict_mlp(input_dim=30, width=d_h, depth=depth, sigma2_omega=0.02)
  for x, y in zip(a.as_dict().values(), b.as_dict().values()):
    np.testing.assert_array_equal(x, y)


def test_predict_mlp_homogeneous_and_general_paths_agree():
  # A negligible bias switches to the general (moment-by-moment) path; the values must agree.
  kw = {"input_dim": 20, "width": 100, "depth": 10, "sigma2_omega": 0.03}
  for act in ("relu", "leaky_relu", "identity"):
    a = theory.predict_mlp(activation=act, **kw)
    b = theory.predict_mlp(activation=act, sigma2_beta=1e-30, **kw)
    for x, y in zip(a.as_dict().values(), b.as_dict().values()):
      np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-9)


def test_predict_mlp_tanh_iterates_the_moments():
  p = theory.predict_mlp(input_dim=100, width=100, depth=5, sigma2_omega=0.015, activation="tanh")
  var_f = 0.015 * 100
  assert p.log10_var_f[0] == pytest.approx(math.log10(var_f))
  for k in range(1, 6):
    m = theory.activation_moments("tanh", var_f)
    assert p.log10_var_h[k - 1] == pytest.approx(math.log10(m["var_h"]), rel=1e-12)
    var_f = 0.015 * 100 * m["second_moment_h"]
    assert p.log10_var_f[k] == pytest.approx(math.log10(var_f), rel=1e-12)


@pytest.mark.parametrize("bad", [
    {"depth": 0}, {"width": 0}, {"input_dim": 0}, {"output_dim": 0},
    {"sigma2_omega": -0.1}, {"sigma2_omega": [0.02, 0.02]}, {"sigma2_beta": -1.0},
    {"activation": "swish_typo"},
])
def test_predict_mlp_invalid_args_raise(bad):
  kwargs = {"input_dim": 10, "width": 10, "depth": 3, "sigma2_omega": 0.02, **bad}
  with pytest.raises(ValueError):
    theory.predict_mlp(**kwargs)


# ------------------------------------------------------------------------------------------------
# Finite width: the spread of one network around the theory (initjax.finite_width).

def test_log_variance_spread_linear_single_input_is_exact():
  """A linear network with Gaussian weights and one input: |f_k|^2 is |x|^2 times independent
  chi2_n / n factors (rotation invariance), and the pooled variance over the n units subtracts
  their mean (chi2_{n-1}). So, exactly, Var[ln V_k] = psi'(D/2) + k psi'(n/2) + psi'((n'-1)/2)
  and E[ln V_k] = ln q_k + sum of the matching psi(s) - ln s terms (n' = units of f_k)."""
  n, d, depth = 16, 10, 6
  p = finite_width.log_variance_spread(input_dim=d, width=n, depth=depth, output_dim=3,
                                       sigma2_omega=1.0 / n, activation="identity", batch_size=1)
  k = np.arange(depth + 1)
  units = np.array([n] * depth + [3])
  e = lambda s: special.digamma(s) - np.log(s)
  var = special.polygamma(1, d / 2) + k * special.polygamma(1, n / 2) + special.polygamma(
      1, (units - 1) / 2)
  mean = (np.log(d / n) + e(d / 2) + k * e(n / 2) + np.log((units - 1) / units)
          + e((units - 1) / 2))
  np.testing.assert_allclose(p.var_ln, var, rtol=1e-12)
  np.testing.assert_allclose(p.mean_ln, mean, rtol=1e-12)
  # REFERENCES.md: about 2/n per layer for a linear network.
  assert np.diff(p.var_ln)[1:-1] * n == pytest.approx(2.0, rel=0.1)


@pytest.mark.parametrize("n", [64, 100])
def test_log_variance_spread_relu_per_layer_growth(n):
  """ReLU, one input: each layer multiplies |h|^2 by (2/n) chi2_B, B ~ Binomial(n, 1/2), so
  Var[ln] per layer = E_B psi'(B/2) + Var_B psi(B/2) (computed here from scipy.stats; B = 0 has
  probability 2^-n). initjax takes the factor as a Gamma of the same mean and variance 5/n,
  exact to O(1/n^2): 3% here. REFERENCES.md: about 5/n per layer (Hanin & Rolnick 2018)."""
  b = np.arange(1, n + 1)
  w = stats.binom.pmf(b, n, 0.5) / stats.binom.pmf(b, n, 0.5).sum()
  exact_var = (np.sum(w * special.polygamma(1, b / 2)) + np.sum(w * special.digamma(b / 2) ** 2)
               - np.sum(w * special.digamma(b / 2)) ** 2)
  exact_mean = np.sum(w * special.digamma(b / 2)) + math.log(4.0 / n)
  p = finite_width.log_variance_spread(input_dim=n, width=n, depth=10, sigma2_omega=2.0 / n,
                                       batch_size=1)
  assert np.diff(p.var_ln)[2:-1] == pytest.approx(exact_var, rel=0.03)
  assert np.diff(p.mean_ln)[2:-1] == pytest.approx(exact_mean, rel=0.03)
  assert np.diff(p.var_ln)[2:-1] * n == pytest.approx(5.0, rel=0.05)


FW_WIDTH, FW_DEPTH, FW_BATCH, FW_SEEDS = 64, 30, 16, 800


@pytest.mark.parametrize("quantity,layers", [("var_h", (10, 20, 30)), ("var_f", (10, 20, 29))])
def test_log_variance_spread_matches_measured_band(quantity, layers):
  """The predicted 5%, 50% and 95% quantiles and the spread of log10 Var over 800 He-initialized
  ReLU networks (width 64, depth 30, 16 inputs each) against `propagation.measure`.

  Tolerance: the standard error of a sample p-quantile of S draws is
  sd sqrt(p (1 - p) / S) / pdf(z_p) (normal density), of a sample sd it is sd / sqrt(2 (S - 1));
  we allow 4 SE (about 0.09 decades for the 5%/95% quantiles at layer 30) plus 0.02 decades for
  the O(1/n^2) error of the Gamma steps (test_log_variance_spread_relu_per_layer_growth). A
  theory without the drift (median = mean field) is off by 0.4 decades at layer 30, one with
  linear-network steps (2/n instead of 5/n) by 0.2 decades in sd. (The output layer, one unit,
  is left out: see initjax.finite_width's caveat.)
  """
  spec = propagation.NetworkSpec(input_dim=FW_WIDTH, width=FW_WIDTH, depth=FW_DEPTH,
                                 batch_size=FW_BATCH)
  key = "finite_width_relu"   # one measurement for both quantities
  if key not in _STATS_CACHE:
    _STATS_CACHE[key] = propagation.measure(jax.random.key(0), spec, weight_init="he_normal",
                                            num_seeds=FW_SEEDS)
  pred = finite_width.log_variance_spread(
      input_dim=FW_WIDTH, width=FW_WIDTH, depth=FW_DEPTH, sigma2_omega=2.0 / FW_WIDTH,
      batch_size=FW_BATCH, quantity=quantity)
  idx = [int(np.flatnonzero(pred.layers == k)[0]) for k in layers]
  values = _STATS_CACHE[key][quantity][0][:, idx]   # (seeds, layers), log10
  assert np.all(np.isfinite(values))
  sd = values.std(axis=0, ddof=1)
  for p in (0.05, 0.5, 0.95):
    se = sd * math.sqrt(p * (1 - p) / FW_SEEDS) / stats.norm.pdf(stats.norm.ppf(p))
    dev = np.quantile(values, p, axis=0) - pred.log10_quantile(p)[idx]
    np.testing.assert_array_less(np.abs(dev), 4 * se + 0.02, err_msg=f"{quantity} q{p}")
  np.testing.assert_array_less(np.abs(sd - pred.sd_log10[idx]),
                               4 * sd / math.sqrt(2 * (FW_SEEDS - 1)) + 0.02 * sd)
  # The median drifts below the mean-field value: 0.4 decades by layer 30.
  drift = pred.log10_mean_field[idx] - pred.log10_median[idx]
  assert drift[-1] == pytest.approx(0.41, abs=0.01)
  assert np.all(np.diff(drift) > 0)


@pytest.mark.slow
def test_log_variance_spread_book_figure_band():
  """REFERENCES.md: a single He network at width 100 and depth 50 spreads over about 2.5
  decades (5-95%) of its forward variance. Measured here over 400 networks with 100 inputs each
  (the figure's setting): about 2.1 decades for Var[h_50]; the prediction within 4 SE of each
  quantile (see test_log_variance_spread_matches_measured_band)."""
  spec = propagation.NetworkSpec(input_dim=100, width=100, depth=50, batch_size=100)
  values = propagation.measure(jax.random.key(2), spec, weight_init="he_normal",
                               num_seeds=400)["var_h"][0][:, -1]
  pred = finite_width.log_variance_spread(input_dim=100, width=100, depth=50,
                                          sigma2_omega=0.02, batch_size=100, quantity="var_h")
  sd = values.std(ddof=1)
  for p in (0.05, 0.95):
    se = sd * math.sqrt(p * (1 - p) / values.size) / stats.norm.pdf(stats.norm.ppf(p))
    assert abs(np.quantile(values, p) - pred.log10_quantile(p)[-1]) < 4 * se + 0.02
  band = pred.log10_quantile(0.95)[-1] - pred.log10_quantile(0.05)[-1]
  assert band == pytest.approx(2.1, abs=0.1)


def test_deep_quantiles_interpolate_the_root_search(monkeypatch):
  """Past `EXACT_QUANTILE_LAYERS` the quantiles are root-searched at that many layers and the
  offset from the log-normal approximation is interpolated in between. Made to interpolate at
  300 layers (exact at 60 of them, so 2-3 layers apart), they stay within 1e-6 decades of a
  root search at every layer (measured: 1.4e-7; at the real threshold, 2000 exact layers of
  20000, 1e-11); q05/q95 together equal them one at a time, bit for bit."""
  pred = finite_width.log_variance_spread(input_dim=100, width=100, depth=300, sigma2_omega=0.02,
                                          batch_size=100, quantity="var_h")
  exact = pred.log10_quantiles((0.05, 0.95))
  np.testing.assert_array_equal(exact[0], pred.log10_quantile(0.05))
  monkeypatch.setattr(finite_width, "EXACT_QUANTILE_LAYERS", 60)
  interpolated = pred.log10_quantiles((0.05, 0.95))
  for got, want in zip(interpolated, exact):
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  # The log-normal approximation alone is visibly off: the interpolation does the work.
  naive = (pred.mean_ln + stats.norm.ppf(0.05) * np.sqrt(pred.var_ln)) / math.log(10)
  assert np.max(np.abs(naive - exact[0])) > 1e-4


@pytest.mark.parametrize("bad", [{"quantity": "var_x"}, {"width": 0}, {"batch_size": 1.5},
                                 {"input_correlation": 1.5}, {"sigma2_omega": -1.0},
                                 {"activation": "swish_typo"}])
def test_log_variance_spread_bad_args(bad):
  kw = {"input_dim": 4, "width": 4, "depth": 2, "sigma2_omega": 0.5, **bad}
  with pytest.raises(ValueError):
    finite_width.log_variance_spread(**kw)
