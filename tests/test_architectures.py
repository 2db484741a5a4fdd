"""The residual MLP and the 1-D CNN: exact layer gradients, convolution against lax.conv, the
mean-field theory against many random networks, and training through the generic loop.

Monte Carlo tolerances: the across-seed mean of each network's pooled variance has a standard
error SE = sd / sqrt(S); we allow 5 SE (converted to decades: SE / mean / ln 10), plus, where
the mean-field formula is not exact at finite width, a stated allowance.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initjax import theory, training
from initjax.measurement import propagation
from initjax.nn import convolutional, residual
from initjax.theory import architectures
from initjax.training import batch_training

SEEDS, WIDTH, DEPTH, N = 96, 32, 8, 32


def _mean_and_tolerance(log10_values_SxL):
  v = 10.0 ** np.asarray(log10_values_SxL)
  mean = v.mean(axis=0)
  se_decades = v.std(axis=0, ddof=1) / math.sqrt(v.shape[0]) / mean / math.log(10)
  return np.log10(mean), 5.0 * se_decades


@pytest.mark.parametrize("padding", convolutional.PADDINGS)
def test_conv1d_equals_lax_conv(padding):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 11, 4)).astype(np.float32)
  kernel = rng.normal(size=(5, 4, 6)).astype(np.float32)
  ours = convolutional.conv1d(jnp.asarray(x), jnp.asarray(kernel), padding)
  if padding == "circular":   # wrap by hand, then a 'VALID' convolution
    x = np.concatenate([x[:, -2:], x, x[:, :2]], axis=1)
  ref = jax.lax.conv_general_dilated(x, kernel, (1,), "VALID" if padding == "circular" else
                                     "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
@pytest.mark.parametrize("name", ["resmlp", "cnn"])
def test_layer_gradients_are_exact(name, x64):
  # dl/dh_k from zero offsets equals a central finite difference of the loss along a random
  # direction added to h_k (float64: the difference is accurate to ~1e-7).
  arch = architectures.get(name)
  model = arch.model("tanh", architectures.ArchOptions(branch_scale="invsqrt"))
  params = arch.init(jax.random.key(0), input_shape=(9,), width=6, depth=3, output_dim=2,
                     weight_init="he_normal", bias_init="normal")
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
  x = jax.random.normal(jax.random.key(1), (5, 9), jnp.float64)
  y = jax.random.normal(jax.random.key(2), (5, 2), jnp.float64)
  loss_fn = lambda f, y: jnp.sum((f - y) ** 2)
  trace = (residual.trace_resmlp if name == "resmlp" else convolutional.trace_cnn)
  kw = ({"activation": "tanh", "scale": "invsqrt"} if name == "resmlp"
        else {"activation": "tanh", "padding": "circular"})
  zero = jax.tree.map(jnp.zeros_like, {k: v for k, v in trace(params, x, **kw).items()
                                       if k in ("f", "h", "f_out")})
  grads = jax.grad(lambda o: loss_fn(trace(params, x, offsets=o, **kw)["f_out"], y))(zero)
  direction = jax.random.normal(jax.random.key(3), zero["h"][1].shape, jnp.float64)
  def loss_along(t):
    o = dict(zero, h=zero["h"].at[1].set(t * direction))
    return loss_fn(trace(params, x, offsets=o, **kw)["f_out"], y)
  numeric = (loss_along(1e-6) - loss_along(-1e-6)) / 2e-6
  np.testing.assert_allclose(jnp.sum(grads["h"][1] * direction), numeric, rtol=1e-6)
  stats = model.layer_statistics(params, x, y, loss_fn)
  np.testing.assert_allclose(stats["var_dl_dh"], jnp.var(grads["h"], axis=tuple(
      range(1, grads["h"].ndim))), rtol=1e-10)


@pytest.mark.parametrize("scale,decades_per_block", [
    ("one", math.log10(2.0)), ("invsqrt", math.log10(1.0 + 1.0 / DEPTH)), ("skipinit", 0.0)])
def test_resmlp_theory_and_measurement(scale, decades_per_block):
  """He ReLU branch: the variance grows by (1 + alpha^2) per block (REFERENCES.md: +0.30 decades
  at alpha = 1). Measured forward means agree within 5 SE plus 0.03 decades (h_k is not exactly
  symmetric at finite width, so E[relu(h)^2] = E[h^2]/2 holds only in the mean-field limit)."""
  pred = architectures.predict_for_init(architectures.get("resmlp"), "he_normal",
                                        input_shape=(WIDTH,), width=WIDTH, depth=DEPTH,
                                        output_dim=1,
                                        options=architectures.ArchOptions(branch_scale=scale))
  np.testing.assert_allclose(np.diff(pred["var_h"]), decades_per_block, atol=1e-12)
  out = propagation.measure_architecture(
      jax.random.key(0), "resmlp", options=architectures.ArchOptions(branch_scale=scale),
      input_shape=(WIDTH,), width=WIDTH, depth=DEPTH, batch_size=N, weight_init="he_normal",
      num_seeds=SEEDS)
  mean, tol = _mean_and_tolerance(out["var_h"][0])
  # Keeps the power to tell 2x per block from, e.g., 1.5x (1 decade apart after 8 blocks).
  assert np.all(tol < 0.2), tol
  np.testing.assert_array_less(np.abs(mean - pred["var_h"]), tol + 0.03)
  # Backward: the median's slope (robust to the heavy tail that the single output's y = 0
  # loss creates, see tests/test_theory.py) within 0.03 decades per block of the theory's.
  layers = np.arange(DEPTH + 1)
  med = np.median(out["var_dl_dh"][0], axis=0)
  assert abs(np.polyfit(layers, med, 1)[0] - np.polyfit(layers, pred["var_dl_dh"], 1)[0]) < 0.03


@pytest.mark.parametrize("padding", convolutional.PADDINGS)
@pytest.mark.parametrize("init", ["he_normal", "xavier_normal"])
def test_cnn_theory_and_measurement(padding, init):
  """Var[f_k] given the layer below is exactly the mean-field value (f is Gaussian given h), for
  both paddings, so only sampling error is allowed (5 SE). He stays flat, Xavier shrinks by
  about 2 per layer (its per-fan-in variance is 1 on the square hidden layers)."""
  options = architectures.ArchOptions(padding=padding, kernel_size=5)
  pred = architectures.predict_for_init(architectures.get("cnn"), init, input_shape=(40,),
                                        width=WIDTH, depth=DEPTH, output_dim=1, options=options)
  out = propagation.measure_architecture(jax.random.key(1), "cnn", options=options,
                                         input_shape=(40,), width=WIDTH, depth=DEPTH,
                                         batch_size=N, weight_init=init, num_seeds=SEEDS)
  mean, tol = _mean_and_tolerance(out["var_f"][0])
  np.testing.assert_array_less(np.abs(mean - pred["var_f"]), tol)
  slope = np.polyfit(np.arange(1, DEPTH), pred["var_f"][1:], 1)[0]
  if init == "he_normal":
    assert abs(slope) < (0.01 if padding == "circular" else 0.02)  # zero padding: edge loss
  else:
    assert abs(slope + math.log10(2.0)) < 0.01


def test_zero_padding_loses_signal_at_the_edges():
  circular = theory.predict_cnn(length=40, channels=8, depth=20, sigma2_w=2.0,
                                padding="circular")
  zero = theory.predict_cnn(length=40, channels=8, depth=20, sigma2_w=2.0, padding="zero")
  np.testing.assert_allclose(circular["var_f"], circular["var_f"][0], atol=1e-12)
  assert np.all(np.diff(zero["var_f"]) < 0) and zero["var_f"][-1] < circular["var_f"][-1] - 0.05


@pytest.mark.slow  # end to end, several seconds: runs in the slow pass
def test_cnn_trains_vmapped_and_equals_one_network():
  arch = architectures.get("cnn")
  model = arch.model("relu", architectures.ArchOptions())
  k = jax.random.split(jax.random.key(0), 4)
  data = {"x_train": jax.random.normal(k[0], (64, 12)),
          "y_train": jax.random.randint(k[1], (64,), 0, 3),
          "x_test": jax.random.normal(k[2], (32, 12)),
          "y_test": jax.random.randint(k[3], (32,), 0, 3)}
  params = architectures.init_networks(arch, jax.random.split(jax.random.key(1), 3), "he_normal",
                                       input_shape=(12,), width=4, depth=3, output_dim=3)
  keys = jax.random.split(jax.random.key(2), 3)
  lrs = jnp.array([0.01, 0.05, 0.02])
  spec = training.TrainSpec(optimizer="adam", steps=20, batch_size=16, eval_every=10,
                            stats_every=10, stats_batch_size=16)
  out = batch_training.run_networks(model, params, keys, lrs, data, spec)
  assert out["var_h"].shape == (3, 3, 3) and out["channel_var"].shape == (3, 3, 3)
  assert np.all(out["train_loss"][:, -5:].mean(axis=1) < out["train_loss"][:, :5].mean(axis=1))
  alone = training.train_network_jit(model, jax.tree.map(lambda a: a[1], params), keys[1],
                                     lrs[1], data, spec)
  for name in ("train_loss", "test_accuracy", "var_dl_dh"):
    np.testing.assert_allclose(out[name][1], alone[name], rtol=2e-4, atol=1e-6, err_msg=name)
