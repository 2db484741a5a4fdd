"""The mean-field theory of a batch-normalized MLP (`initjax.theory.batchnorm`) against its
closed forms and against the measurement over many random networks (vmapped seeds)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initjax.nn import networks, normalization
from initjax.theory import architectures, batchnorm


def test_large_batch_limits_are_the_closed_forms():
  # Yang et al. 2019: ReLU's gradient grows by pi / (pi - 1) per layer as B -> infinity.
  assert batchnorm.growth_factor("relu") == pytest.approx(math.pi / (math.pi - 1), rel=1e-9)
  assert batchnorm.relu_growth_limit() == pytest.approx(1.4669, abs=1e-4)
  # Layer normalization keeps the ReLU's mean in the normalizer: no growth.
  assert batchnorm.layernorm_growth_factor("relu") == pytest.approx(1.0, abs=1e-9)
  # Linear: BN's factor is 1 (nothing is discarded by the centring: E[z] = 0).
  assert batchnorm.growth_factor("identity") == pytest.approx(1.0, abs=1e-9)
  m = batchnorm.batch_moments("relu", None)
  assert m["var_h"] == pytest.approx(0.5 - 1 / (2 * math.pi), rel=1e-9)


def test_finite_batch_monte_carlo_approaches_the_limit_and_grows_at_small_batches():
  # Standard error of the Monte Carlo estimate: about 1e-3 relative (1e6 sphere values); at
  # B = 1024 the finite-batch corrections are O(1/B) = 0.1%: 0.5% allows both.
  for act in ("relu", "tanh"):
    assert batchnorm.growth_factor(act, 1024, num_samples=1000) == pytest.approx(
        batchnorm.growth_factor(act), rel=5e-3)
  # Smaller batches explode faster (E[1/sigma^2] of a chi-square with few degrees of freedom):
  # the steps between these batch sizes are > 0.03, the Monte Carlo errors (1e6 values) < 0.003.
  g = [batchnorm.growth_factor("relu", b, num_samples=1_000_000 // b) for b in (8, 32, 128)]
  assert g[0] > g[1] > g[2] > batchnorm.growth_factor("relu")
  with pytest.raises(ValueError, match="infinite"):
    batchnorm.growth_factor("relu", 3)
  # The sphere: zero batch mean, batch variance exactly 1.
  z = batchnorm.sphere_batch(8, 1000)
  np.testing.assert_allclose(z.mean(1), 0, atol=1e-12)
  np.testing.assert_allclose(z.var(1), 1, rtol=1e-12)


def _measured_slopes(activation, batch_size, width, depth, num_seeds):
  """Per network: the least-squares slope of log10 Var[dl/dh_k] towards the input over the
  interior layers (2 at each end left out: the top layer's covariance is not yet at the fixed
  point), and the mean log10 Var[h_k]."""
  def one(key):
    k1, k2 = jax.random.split(key)
    p = normalization.init_norm_params(networks.init_mlp(
        k1, input_dim=64, width=width, depth=depth, output_dim=1, weight_init="he_normal"),
        "batchnorm")
    x = jax.random.normal(k2, (batch_size, 64))
    st = normalization.layer_statistics(p, x, jnp.zeros((batch_size, 1)),
                                        lambda f, y: jnp.sum((f - y) ** 2),
                                        activation=activation, norm="batchnorm")
    return jnp.log10(st["var_dl_dh"]), jnp.log10(st["var_h"])
  g, h = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), num_seeds))
  k = np.arange(1, depth + 1)[2:-2]
  slopes = np.array([-np.polyfit(k, gi[2:-2], 1)[0] for gi in np.asarray(g)])
  return slopes, np.asarray(h)


def _check(activation, batch_size, width, depth, num_seeds):
  slopes, log_var_h = _measured_slopes(activation, batch_size, width, depth, num_seeds)
  predicted = math.log10(batchnorm.growth_factor(activation, batch_size))
  # Tolerance: 4 standard errors of the mean over the seeds (measured spread / sqrt(S)), plus
  # 0.04 B / width decades for the finite-width corrections the mean field leaves out: the
  # batch Gram matrix of h fluctuates around its limit by O(B / width) (measured at B = 64,
  # width 256: 0.003 per layer backward, 0.005 in log10 Var[h], i.e. <= 0.02 B / width; twice
  # that allowed).
  finite_width = 0.04 * batch_size / width
  se = slopes.std(ddof=1) / math.sqrt(num_seeds)
  assert abs(slopes.mean() - predicted) < 4 * se + finite_width, (slopes.mean(), predicted, se)
  # Forward: Var[h_k] is the same at every layer, the sphere's.
  var_h = batchnorm.batch_moments(activation, batch_size)["var_h"]
  per_seed = log_var_h.mean(1)
  se_h = per_seed.std(ddof=1) / math.sqrt(num_seeds)
  assert abs(per_seed.mean() - math.log10(var_h)) < 4 * se_h + finite_width, (
      per_seed.mean(), math.log10(var_h), se_h)
  return slopes.mean(), predicted


@pytest.mark.slow  # ~20 s on a loaded 2-core CPU (the compilation of a vmapped gradient)
def test_measured_gradient_growth_matches_the_theory_relu_small_batch():
  mean, predicted = _check("relu", 16, 128, 12, 16)
  # B = 16 is far from the large-batch limit: the finite-batch theory is what matches.
  assert abs(predicted - math.log10(batchnorm.relu_growth_limit())) > 0.03


@pytest.mark.slow  # ~1-2 minutes on a loaded 2-core CPU: 4 cases x 32 networks of width 256
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("batch_size", [8, 64])
def test_measured_gradient_growth_matches_the_theory(activation, batch_size):
  _check(activation, batch_size, 256, 20, 32)


def test_architecture_prediction_is_the_batchnorm_theory():
  arch = architectures.get("mlp")
  pred = architectures.predict_for_init(
      arch, "xavier_normal", input_shape=(100,), width=100, depth=30, output_dim=1,
      options=architectures.ArchOptions(norm="batchnorm"), batch_size=100)
  slope = -np.polyfit(np.arange(1, 31), pred["var_dl_dh"], 1)[0]
  assert slope == pytest.approx(math.log10(batchnorm.growth_factor("relu", 100)), rel=1e-9)
  np.testing.assert_allclose(np.diff(pred["var_h"]), 0)
  ln = architectures.predict_for_init(
      arch, "he_normal", input_shape=(100,), width=100, depth=30, output_dim=1,
      options=architectures.ArchOptions(norm="layernorm"))
  np.testing.assert_allclose(np.diff(ln["var_dl_dh"]), 0, atol=1e-9)   # ReLU + LN: flat
