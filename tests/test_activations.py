"""Tests for initjax.activations: the registry, callables as activations, their float64 twins,
gains, errors, and callables flowing through the networks, gradients and propagation."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special

from initjax import theory
from initjax.measurement import propagation
from initjax.nn import activations, gradients, networks


@pytest.fixture
def registry(monkeypatch):
  """A private copy of the registry, so that test registrations do not leak into other tests."""
  monkeypatch.setattr(activations, "ACTIVATIONS", dict(activations.ACTIVATIONS))
  return activations.ACTIVATIONS


def _quad(g):
  """E[g(z)], z ~ N(0, 1), by scipy quad on each half-line."""
  f = lambda z: g(z) * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
  return sum(integrate.quad(f, a, b, epsabs=1e-14)[0] for a, b in ((-np.inf, 0), (0, np.inf)))


def test_get_accepts_names_records_and_callables():
  relu = activations.get("relu")
  assert activations.get(relu) is relu
  assert activations.get(jax.nn.relu) is relu        # a registered function: its record
  assert activations.get(jax.nn.swish).name == "silu"  # jax.nn.swish is jax.nn.silu
  fn = lambda f: jnp.tanh(f)
  record = activations.get(fn)
  assert record is activations.get(fn)                # one record per function object
  assert record.name == "<lambda>" and record.slopes is None
  # Records built separately from the same function are equal and hash equal (cache keys,
  # static jit arguments); a different function is a different activation.
  assert activations.from_callable(fn) == record
  assert hash(activations.from_callable(fn)) == hash(record)
  assert activations.get(lambda f: jnp.tanh(f)) != record
  assert activations.check_activation(fn) is fn


@pytest.mark.parametrize("bad,match", [
    ("swish", "Unknown activation 'swish'; valid choices: .*silu"),
    (3, "must be a name, an Activation or a callable"),
    (lambda f: np.tanh(f), "not a JAX-traceable elementwise function"),
    (lambda f: f if f > 0 else 0.0, "not a JAX-traceable elementwise function"),
    (lambda f: jnp.sum(f), "not a JAX-traceable elementwise function.*maps shape"),
    (lambda f: jnp.exp(f * f), "non-finite a\\(f\\) = inf at f = -30"),
    (lambda f: jnp.log(f), "non-finite"),
])
def test_bad_activations_are_one_clear_error(bad, match):
  with pytest.raises(ValueError, match=match) as err:
    activations.get(bad)
  assert "\n" not in str(err.value)


def test_float64_twin_and_autodiff_derivative():
  record = activations.get(lambda f: jnp.tanh(f))
  x = np.concatenate([np.geomspace(1e-12, 20, 300), -np.geomspace(1e-12, 20, 300), [0.0]])
  # float64 evaluation: agrees with NumPy's tanh to rounding (float32 would be off by ~1e-7).
  np.testing.assert_allclose(record.np_fn(x), np.tanh(x), rtol=1e-14, atol=1e-300)
  np.testing.assert_allclose(record.np_derivative(x), 1 - np.tanh(x) ** 2, rtol=1e-13, atol=1e-15)
  assert record.np_fn(x[:600].reshape(3, -1, 1)).shape == (3, 200, 1)   # any shape
  # The network side (JAX) of a callable record is the callable; a' by autodiff.
  f = jnp.linspace(-3, 3, 7)
  np.testing.assert_allclose(record.derivative(f), 1 - jnp.tanh(f) ** 2, rtol=1e-6, atol=1e-7)


def test_gain_of_a_callable_preserves_unit_variance():
  """g = 1 / sqrt(E[a(z)^2]): sqrt 2 for ReLU, 1 for the identity, 1.5925 for tanh (scipy quad)."""
  assert activations.get(lambda f: jnp.maximum(f, 0.0)).init_gain == pytest.approx(math.sqrt(2))
  assert activations.get(lambda f: 1.0 * f).init_gain == pytest.approx(1.0, rel=1e-12)
  g = activations.get(lambda f: jnp.tanh(f)).init_gain
  assert g == pytest.approx(1 / math.sqrt(_quad(lambda z: math.tanh(z) ** 2)), rel=1e-10)
  assert g == pytest.approx(1.5925, abs=1e-4)
  # With that gain and zero bias, q = 1 is a fixed point: sigma2_w = g^2 keeps q^l = 1.
  assert theory.fixed_point_q(lambda f: jnp.tanh(f), g * g) == pytest.approx(1.0, rel=1e-9)
  # SiLU (registered, not in torch's calculate_gain) uses the same rule.
  silu = _quad(lambda z: (z * special.expit(z)) ** 2)
  assert activations.get("silu").init_gain == pytest.approx(1 / math.sqrt(silu), rel=1e-10)


def test_silu_twin_matches_the_network_function():
  grid = np.linspace(-6, 6, 101)
  record = activations.get("silu")
  net = jax.jit(lambda f: (record.fn(f), record.derivative(f)))
  a, da = net(jnp.asarray(grid, jnp.float32))
  np.testing.assert_allclose(a, grid * special.expit(grid), rtol=1e-5, atol=1e-6)
  s = special.expit(grid)
  np.testing.assert_allclose(da, s + grid * s * (1 - s), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(record.np_derivative(grid), s + grid * s * (1 - s), rtol=1e-14)
  m = theory.activation_moments("silu", 2.0)
  assert m["second_moment_h"] == pytest.approx(
      _quad(lambda z: (math.sqrt(2) * z * special.expit(math.sqrt(2) * z)) ** 2), rel=1e-9)


def test_register(registry):
  fn = lambda f: jnp.where(f > 0, f, 0.2 * f)
  record = activations.register("leaky_02", fn, slopes=(1.0, 0.2))
  assert "leaky_02" in activations.activation_names()
  assert activations.get("leaky_02") is record and activations.get(fn) is record
  assert record.positively_homogeneous and record.init_gain == pytest.approx(
      math.sqrt(2 / 1.04))
  assert theory.critical_weight_variance("leaky_02") == pytest.approx(2 / 1.04)
  with pytest.raises(ValueError, match="already registered"):
    activations.register("leaky_02", fn)
  assert activations.register("leaky_02", jnp.tanh, gain=1.0, overwrite=True).gain == 1.0
  with pytest.raises(ValueError, match="identifier"):
    activations.register("my act", fn)
  with pytest.raises(ValueError, match="not a JAX-traceable"):
    activations.register("numpy_tanh", lambda f: np.tanh(f))
  assert "numpy_tanh" not in registry


def test_callables_flow_through_networks_and_gradients():
  """A callable gives the same networks and gradients as its registered twin, also as a static
  argument of jax.jit."""
  rng = np.random.default_rng(0)
  # init_mlp's layout, drawn with NumPy (no random-number program to compile).
  shapes = {"omega_0": (7, 5), "beta_0": (7,), "omega_hidden": (2, 7, 7), "beta_hidden": (2, 7),
            "omega_out": (2, 7), "beta_out": (2,)}
  params = {k: jnp.asarray(0.4 * rng.normal(size=v), jnp.float32) for k, v in shapes.items()}
  ref_shapes = jax.eval_shape(lambda key: networks.init_mlp(key, input_dim=5, width=7, depth=3,
                                                            output_dim=2), jax.random.key(0))
  assert {k: v.shape for k, v in ref_shapes.items()} == shapes
  x = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)
  tanh = lambda f: jnp.tanh(f)
  run = jax.jit(lambda p, x, y, a: (networks.trace_mlp(p, x, a), networks.apply_mlp(p, x, a),
                                    gradients.layer_gradients(p, x, y, a)), static_argnums=3)
  # (trace_mlp, apply_mlp, layer_gradients)
  got, ref = run(params, x, y, tanh), run(params, x, y, "tanh")
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
    np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-7)
  ref_bp = gradients.backprop_reference(params, x, y, tanh)
  np.testing.assert_allclose(ref_bp["dl_dh"], got[2]["dl_dh"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_callables_flow_through_propagation():
  """measure() with a ReLU lambda (no slopes declared: the direct forward pass) equals the
  registered "relu" (the log-space pass) to float32 rounding: 1e-4 decades over 4 layers."""
  kw = dict(input_dim=8, width=8, depth=4, batch_size=4)
  fn = lambda f: jnp.maximum(f, 0.0)
  assert not propagation.uses_log_space(fn, 0.0) and propagation.uses_log_space("relu", 0.0)
  got, ref = (propagation.measure(jax.random.key(1), propagation.NetworkSpec(activation=a, **kw),
                                  weight_init="he_normal", num_seeds=3) for a in (fn, "relu"))
  for q in ("var_f", "var_h", "var_dl_dh", "var_dl_domega"):
    np.testing.assert_allclose(got[q], ref[q], atol=1e-4, err_msg=q)
