"""initjax.layer_statistics: one network's per-layer statistics, exact in log space, against
direct float64 computations; its per-layer pieces checked on their own."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initjax.measurement import layer_statistics, propagation
from initjax.nn import activations, gradients, networks
from initjax.nn.initializers import get_initializer


def test_log10_var_and_inv_rms():
  x = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 7))
  lv = layer_statistics.log10_var(jnp.sum(x), jnp.sum(x ** 2), x.size, 0.5)
  np.testing.assert_allclose(lv, np.log10(np.var(x)) + 1.0, rtol=1e-5)  # scale 10**0.5 squared
  inv, step = layer_statistics.log10_inv_rms(jnp.float32(4.0))
  assert float(inv) == 0.5 and abs(float(step) - np.log10(2.0)) < 1e-7
  inv, step = layer_statistics.log10_inv_rms(jnp.float32(0.0))  # all-zero layer: no rescale
  assert float(inv) == 1.0 and float(step) == 0.0


def test_forward_layer_folds_the_rescaling_into_the_next_weights():
  # One ReLU layer: with the 1/RMS of f_0 folded into Omega_1, f_1 computed from the raw a[f_0]
  # and carried scale equals the direct f_1 (exact for a positively homogeneous activation).
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(9, 5)), jnp.float32)
  w0, w1 = (jnp.asarray(rng.normal(size=s) * 3.0, jnp.float32) for s in ((6, 5), (4, 6)))
  b = jnp.zeros((6,)), jnp.zeros((4,))
  rule = layer_statistics.Rule(activations.get("relu"), log_space=True)
  one, zero = jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)
  carry, (saved, sq_N, u_sig, lvf0, lvh1) = layer_statistics.forward_layer(
      rule, x, jnp.sum(x, axis=0), one, zero, w0, b[0])
  f0 = np.asarray(x @ w0.T)
  np.testing.assert_allclose(lvf0, np.log10(np.var(f0)), rtol=1e-5)
  np.testing.assert_allclose(lvh1, np.log10(np.var(np.maximum(f0, 0))), rtol=1e-5)
  np.testing.assert_array_equal(saved, f0 > 0)
  _, (_, _, _, lvf1, _) = layer_statistics.forward_layer(rule, *carry, w1, b[1])
  f1 = np.maximum(f0, 0) @ np.asarray(w1).T
  np.testing.assert_allclose(lvf1, np.log10(np.var(f1)), rtol=1e-5)


def test_backward_matmul_rescales_exactly():
  rng = np.random.default_rng(2)
  g = jnp.asarray(rng.normal(size=(8, 4)) * 1e3, jnp.float32)
  omega = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
  dl_dh, gam, lv = layer_statistics.backward_matmul(g, jnp.sum(g, axis=0), jnp.sum(g * g),
                                                     jnp.float32(1.0), omega)
  direct = np.asarray(g) @ np.asarray(omega)
  # float32 rounding of the rescaled product, relative to the array's scale (entries near 0 cancel)
  np.testing.assert_allclose(np.asarray(dl_dh) * 10.0 ** (float(gam) - 1.0), direct, rtol=1e-5,
                             atol=1e-5 * np.abs(direct).max())
  np.testing.assert_allclose(lv, np.log10(np.var(direct)) + 2.0, rtol=1e-5)


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_network_statistics_equal_direct_float64_gradients():
  # The log-space path (rescaling each layer, scale kept in log10) is exact: it equals the
  # statistics of jax.grad's gradients computed directly in float64, to rounding.
  with jax.enable_x64(True):
    for act, log_space in (("relu", True), ("relu", False), ("leaky_relu", True),
                           ("tanh", False)):
      p = networks.init_mlp(jax.random.key(0), input_dim=6, width=5, depth=4, output_dim=2,
                            weight_init=get_initializer("normal", variance=0.3),
                            dtype=jnp.float64)
      x = jax.random.normal(jax.random.key(1), (7, 6), jnp.float64)
      g = gradients.layer_gradients(p, x, jnp.zeros((7, 2)), act)
      t = networks.trace_mlp(p, x, act)
      hs = [x] + list(t["h"])
      dfs = list(g["dl_df"]) + [g["dl_df_out"]]
      ref = {
          "var_f": np.log10(np.r_[np.var(t["f"], axis=(1, 2)), np.var(t["f_out"])]),
          "var_h": np.log10(np.var(t["h"], axis=(1, 2))),
          "var_dl_dh": np.log10(np.var(g["dl_dh"], axis=(1, 2))),
          "var_dl_df": np.log10(np.r_[np.var(g["dl_df"], axis=(1, 2)),
                                      np.var(g["dl_df_out"])]),
          "var_dl_domega": np.log10([
              np.mean([np.mean(np.outer(dfs[k][i], hs[k][i]) ** 2) for i in range(7)])
              for k in range(5)]),
      }
      stats = layer_statistics.network_statistics(p, x, act, log_space=log_space)
      for q, r in ref.items():
        np.testing.assert_allclose(np.asarray(stats[q]), r, atol=1e-12, err_msg=f"{act} {q}")


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_log_space_float32_equals_float64_direct_where_float64_does_not_overflow():
  # float64 holds every value of the figure (max ~1e170), so its direct path is a reference.
  # Same draws (float32 networks cast to float64). float32 rounding in the rescaled path
  # accumulates to ~1e-5 decades over 50 layers; we allow 1e-3.
  spec = propagation.NetworkSpec(input_dim=100, width=100, depth=50, batch_size=16)
  init = get_initializer("normal")
  log_space = jax.jit(functools.partial(layer_statistics.network_statistics, activation="relu",
                                        log_space=True))
  direct = jax.jit(functools.partial(layer_statistics.network_statistics, activation="relu",
                                     log_space=False))
  for s2 in (0.001, 1.0):
    for key in jax.random.split(jax.random.key(2), 2):
      params, x = propagation.network_for_seed(key, spec, init, s2, jnp.float32)
      lo = log_space(params, x)
      with jax.enable_x64(True):
        params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        hi = direct(params64, jnp.asarray(x, jnp.float64))
        hi = {q: np.asarray(v) for q, v in hi.items()}
      for q in layer_statistics.QUANTITIES:
        assert np.isfinite(hi[q]).all()
        np.testing.assert_allclose(np.asarray(lo[q]), hi[q], atol=1e-3, err_msg=f"{s2} {q}")
