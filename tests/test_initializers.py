"""Tests for initjax.initializers: moments, distribution shapes, JAX equality, fans, gains."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from initjax.nn import initializers as I

DENSE = (300, 400)  # 120,000 draws
CONV = (3, 3, 64, 192)  # 110,592 draws
SHAPES = [DENSE, CONV]

# Kurtosis E[x^4] / E[x^2]^2 of each distribution family (for the tolerances below).
NORMAL_KURT = 3.0
UNIFORM_KURT = 1.8
TRUNC_KURT = float(stats.truncnorm(-2, 2).stats(moments="k")) + 3.0  # 2.3655...

# Every registry entry must be classified here (see test_every_name_is_classified), so a
# new initializer gets the distribution-shape checks too.
FAMILY = {
    "he_normal": "normal", "kaiming_normal": "normal", "xavier_normal": "normal",
    "glorot_normal": "normal", "lecun_normal": "normal", "normal": "normal",
    "he_uniform": "uniform", "kaiming_uniform": "uniform", "xavier_uniform": "uniform",
    "glorot_uniform": "uniform", "lecun_uniform": "uniform",
    "he_truncated_normal": "truncated_normal",
    "orthogonal": "orthogonal", "delta_orthogonal": "orthogonal",
    "zeros": "constant", "constant": "constant", "identity": "identity",
}
KURT = {"normal": NORMAL_KURT, "uniform": UNIFORM_KURT, "truncated_normal": TRUNC_KURT,
        "orthogonal": NORMAL_KURT}  # orthogonal entries are ~normal for large n


def _sample(name, shape, seed=0, **kwargs):
  init = I.get_initializer(name, **kwargs)
  return np.asarray(init(jax.random.key(seed), shape, jnp.float32), dtype=np.float64)


def _names(family):
  return [n for n in I.initializer_names() if FAMILY.get(n) == family]


def test_every_name_is_classified():
  assert set(I.initializer_names()) == set(FAMILY)
  assert I.initializer_names() == sorted(I.INITIALIZERS)


@pytest.mark.parametrize("shape", SHAPES, ids=["dense", "conv"])
@pytest.mark.parametrize("name", I.initializer_names())
def test_mean_and_variance(name, shape):
  x = _sample(name, shape)
  var = I.expected_variance(name, shape)
  assert x.shape == shape
  if FAMILY[name] == "constant":
    np.testing.assert_array_equal(x, 0.0)
    assert var == 0.0
    return
  if FAMILY[name] == "identity":   # deterministic: I (first min(rows, cols) diagonal entries)
    np.testing.assert_array_equal(x.reshape(-1, shape[-1]), np.eye(x.size // shape[-1],
                                                                    shape[-1]))
    assert np.mean(x ** 2) == pytest.approx(var)
    return
  n = x.size
  # Mean: standard error sqrt(var / n); allow 5 SE.
  assert abs(x.mean()) < 5 * math.sqrt(var / n)
  # Variance (second moment about the true mean 0): SE of the sample second moment is
  # var * sqrt((kurtosis - 1) / n); allow 5 SE (~2% relative for n ~ 1.1e5, normal).
  tol = 5 * var * math.sqrt((KURT[FAMILY[name]] - 1) / n)
  assert abs(np.mean(x**2) - var) < tol, (np.mean(x**2), var, tol)


@pytest.mark.parametrize("shape", SHAPES, ids=["dense", "conv"])
def test_expected_variance_formulas(shape):
  fan_in, fan_out = I.compute_fans(shape)
  ev = I.expected_variance
  assert ev("he_normal", shape) == pytest.approx(2 / fan_in)
  assert ev("he_uniform", shape, mode="fan_out") == pytest.approx(2 / fan_out)
  assert ev("he_normal", shape, negative_slope=0.2) == pytest.approx(2 / (1.04 * fan_in))
  assert ev("kaiming_normal", shape, gain=3.0) == pytest.approx(9 / fan_in)
  assert ev("xavier_uniform", shape) == pytest.approx(2 / (fan_in + fan_out))
  assert ev("glorot_normal", shape, gain=2.0) == pytest.approx(8 / (fan_in + fan_out))
  assert ev("lecun_uniform", shape) == pytest.approx(1 / fan_in)
  assert ev("normal", shape, variance=0.01) == 0.01
  assert ev("constant", shape, value=3.0) == 0.0
  n_cols = shape[-1]
  assert ev("orthogonal", shape, gain=2.0) == pytest.approx(4 / max(n_cols, math.prod(shape) // n_cols))


def test_he_negative_slope_and_fan_out_sampled():
  # Leaky-ReLU He with a = 0.5: var 2 / (1.25 fan_in); normal kurtosis, 5 SE.
  x = _sample("he_normal", DENSE, negative_slope=0.5)
  var = 2 / (1.25 * 300)
  assert abs(np.mean(x**2) - var) < 5 * var * math.sqrt(2 / x.size)
  x = _sample("he_normal", DENSE, mode="fan_out", seed=1)
  var = 2 / 400
  assert abs(np.mean(x**2) - var) < 5 * var * math.sqrt(2 / x.size)


@pytest.mark.parametrize("name", _names("uniform"))
def test_uniform_support(name):
  x = _sample(name, DENSE)
  bound = math.sqrt(3 * I.expected_variance(name, DENSE))
  assert np.abs(x).max() <= bound * (1 + 1e-6)
  # Fills the interval: P(max |x| < 0.999 b) = 0.999^n ~ e^-120.
  assert x.max() > 0.999 * bound and x.min() < -0.999 * bound
  # Flat: each of 10 equal bins holds 10%; binomial SE sqrt(0.09 / n), 5 SE.
  counts, _ = np.histogram(x, bins=10, range=(-bound, bound))
  assert np.all(np.abs(counts / x.size - 0.1) < 5 * math.sqrt(0.09 / x.size))


@pytest.mark.parametrize("name", _names("truncated_normal"))
def test_truncated_support(name):
  x = _sample(name, DENSE)
  std = math.sqrt(I.expected_variance(name, DENSE))
  cut = 2 * std / I.TRUNCATED_NORMAL_STD  # 2 std of the untruncated normal
  assert np.abs(x).max() <= cut * (1 + 1e-6)
  assert np.abs(x).max() > 0.99 * cut
  # Kurtosis of TN(-2, 2); SE of sample kurtosis < sqrt(24 / n) (normal's), 5 SE.
  kurt = np.mean(x**4) / np.mean(x**2) ** 2
  assert abs(kurt - TRUNC_KURT) < 5 * math.sqrt(24 / x.size)


@pytest.mark.parametrize("name", _names("normal"))
def test_plain_normal_tails(name):
  x = _sample(name, DENSE)
  std = math.sqrt(I.expected_variance(name, DENSE))
  # Kurtosis 3; SE of the sample kurtosis of a normal is sqrt(24 / n); 5 SE.
  kurt = np.mean(x**4) / np.mean(x**2) ** 2
  assert abs(kurt - 3.0) < 5 * math.sqrt(24 / x.size)
  # P(|z| > 2) = 4.55%; binomial SE sqrt(p (1 - p) / n); 5 SE. A truncated one has 0%
  # beyond its cut, which is 2.27 std.
  p = 2 * stats.norm.sf(2)
  frac = np.mean(np.abs(x) > 2 * std)
  assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / x.size)
  assert np.mean(np.abs(x) > 2 * std / I.TRUNCATED_NORMAL_STD) > 0.01


@pytest.mark.parametrize("gain", [1.0, 2.5])
@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (3, 3, 8, 16), (4, 100)])
def test_orthogonal(shape, gain):
  w = np.asarray(I.get_initializer("orthogonal", gain=gain)(jax.random.key(3), shape),
                 np.float64)
  q = w.reshape(-1, shape[-1])
  small = min(q.shape)
  gram = q.T @ q if q.shape[0] >= q.shape[1] else q @ q.T
  np.testing.assert_allclose(gram, gain**2 * np.eye(small), atol=1e-5 * gain**2)
  np.testing.assert_allclose(np.mean(w**2), I.expected_variance("orthogonal", shape, gain=gain),
                             rtol=1e-5)


# delta_orthogonal: JAX's draws where JAX accepts the shape (rank 3-5, c_in <= c_out).
DELTA_JAX_CASES = [((3, 4, 5), -1), ((3, 3, 4, 6), -2), ((2, 3, 4, 5), -1),
                   ((3, 3, 3, 2, 2), -1)]


@pytest.mark.parametrize("shape, column_axis", DELTA_JAX_CASES)
def test_delta_orthogonal_matches_jax(shape, column_axis):
  key = jax.random.key(11)
  ours = I.delta_orthogonal(1.7, column_axis)(key, shape, jnp.float32)
  theirs = jax.nn.initializers.delta_orthogonal(1.7, column_axis)(key, shape, jnp.float32)
  np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("shape, gain", [((3, 16, 32), 1.0), ((4, 16, 16), 2.5),
                                         ((3, 5, 12, 8), 2.5), ((24, 12), 1.0)])
def test_delta_orthogonal_is_an_orthogonal_center_and_zero_elsewhere(shape, gain):
  # Xiao et al. 2018: W[center] = gain * Q, Q orthogonal (rows when c_in <= c_out, columns
  # otherwise); every other tap exactly zero. Even kernel sizes take JAX's (k - 1) // 2.
  w = np.asarray(I.get_initializer("delta_orthogonal", gain=gain)(jax.random.key(5), shape),
                 np.float64)
  center = tuple((k - 1) // 2 for k in shape[:-2])
  q = w[center]
  c_in, c_out = shape[-2:]
  gram = q @ q.T if c_in <= c_out else q.T @ q
  np.testing.assert_allclose(gram, gain**2 * np.eye(min(c_in, c_out)), atol=1e-5 * gain**2)
  rest = w.copy()
  rest[center] = 0.0
  assert not rest.any()
  np.testing.assert_allclose(np.mean(w**2), I.expected_variance("delta_orthogonal", shape,
                                                                gain=gain), rtol=1e-5)


def test_delta_orthogonal_convolution_is_an_isometry():
  # A circular 1-D convolution with a delta-orthogonal kernel maps every input to one of the
  # same norm times gain (c_in <= c_out): the operator's singular values all equal gain.
  kernel = I.delta_orthogonal(gain=1.5)(jax.random.key(2), (5, 8, 12))
  x = jax.random.normal(jax.random.key(3), (1, 32, 8))
  y = jax.lax.conv_general_dilated(jnp.pad(x, ((0, 0), (2, 2), (0, 0)), mode="wrap"), kernel,
                                   (1,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"))
  np.testing.assert_allclose(float(jnp.linalg.norm(y)), 1.5 * float(jnp.linalg.norm(x)),
                             rtol=1e-5)


@pytest.mark.parametrize("shape", [(5, 7), CONV], ids=["dense", "conv"])
@pytest.mark.parametrize("ours, theirs", [
    (I.he_truncated_normal(), jax.nn.initializers.he_normal()),
    (I.xavier_uniform(), jax.nn.initializers.glorot_uniform()),
    (I.he_normal(), jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")),
    (I.he_uniform(), jax.nn.initializers.he_uniform()),
    (I.xavier_normal(), jax.nn.initializers.variance_scaling(1.0, "fan_avg", "normal")),
    (I.lecun_normal(), jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal")),
    (I.lecun_uniform(), jax.nn.initializers.lecun_uniform()),
    (I.orthogonal(), jax.nn.initializers.orthogonal()),
    (I.orthogonal(gain=2.0, column_axis=0), jax.nn.initializers.orthogonal(2.0, 0)),
    (I.variance_scaling(0.5, "fan_geo_avg", "truncated_normal", in_axis=0, out_axis=1),
     jax.nn.initializers.variance_scaling(0.5, "fan_geo_avg", "truncated_normal", 0, 1)),
], ids=["he_trunc", "glorot_u", "he_n", "he_u", "xavier_n", "lecun_n", "lecun_u", "orth",
        "orth_col0", "vs_geo"])
def test_matches_jax(ours, theirs, shape):
  key = jax.random.key(7)
  np.testing.assert_array_equal(ours(key, shape, jnp.float32), theirs(key, shape, jnp.float32))


def test_he_normal_differs_from_jax_truncated():
  key = jax.random.key(0)
  x = I.he_normal()(key, DENSE)
  assert not np.array_equal(x, jax.nn.initializers.he_normal()(key, DENSE))


@pytest.mark.parametrize("shape, kwargs, fans", [
    ((300, 400), {}, (300, 400)),
    ((3, 3, 32, 64), {}, (288, 576)),
    ((5, 16, 8), {}, (80, 40)),  # Conv1D (width, c_in, c_out)
    ((10, 20, 3), {"in_axis": 0, "out_axis": 1}, (30, 60)),
    ((4, 10, 20), {"batch_axis": 0}, (10, 20)),
    ((2, 3, 4, 5), {"in_axis": (0, 1), "out_axis": -1}, (24, 20)),
    ((2, 3, 4, 5), {"in_axis": -1, "out_axis": -2, "batch_axis": 0}, (15, 12)),
])
def test_compute_fans(shape, kwargs, fans):
  assert I.compute_fans(shape, **kwargs) == fans


@pytest.mark.parametrize("shape", [(), (7,)])
def test_compute_fans_rank_error(shape):
  with pytest.raises(ValueError, match="rank >= 2"):
    I.compute_fans(shape)
  with pytest.raises(ValueError, match="rank >= 2"):
    I.he_normal()(jax.random.key(0), shape)


def test_compute_fans_bad_axes():
  with pytest.raises(ValueError, match="out of range"):
    I.compute_fans((3, 4), in_axis=2)
  with pytest.raises(ValueError, match="distinct"):
    I.compute_fans((3, 4), in_axis=0, out_axis=0)


def test_gain_matches_torch():
  # torch.nn.init.calculate_gain values.
  assert I.gain("relu") == pytest.approx(math.sqrt(2))
  assert I.gain("tanh") == pytest.approx(5 / 3)
  assert I.gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01**2)))
  assert I.gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
  assert I.gain("selu") == 0.75
  for name in ["sigmoid", "linear", "identity", "conv1d", "conv2d", "conv3d",
               "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "softsign"]:
    assert I.gain(name) == 1.0
  assert I.gain("gelu") == pytest.approx(math.sqrt(2))


def test_gain_covers_initjax_activations():
  from initjax.nn import activations
  for name in activations.activation_names():
    assert I.gain(name) > 0


def test_gain_bad_name():
  with pytest.raises(ValueError, match="valid choices: .*relu.*tanh"):
    I.gain("swish")


def test_flax_linen_dense():
  import flax.linen as nn
  model = nn.Dense(16, kernel_init=I.get_initializer("he_normal"),
                   bias_init=I.get_initializer("zeros"))
  x = jnp.ones((4, 8))
  params = model.init(jax.random.key(0), x)
  assert params["params"]["kernel"].shape == (8, 16)
  assert model.apply(params, x).shape == (4, 16)
  np.testing.assert_array_equal(params["params"]["bias"], 0.0)


def test_flax_nnx_linear():
  from flax import nnx
  layer = nnx.Linear(256, 512, kernel_init=I.get_initializer("he_normal"),
                     bias_init=I.get_initializer("normal", variance=0.01), rngs=nnx.Rngs(0))
  assert layer(jnp.ones((2, 256))).shape == (2, 512)
  k = np.asarray(layer.kernel[...])
  assert k.shape == (256, 512)
  assert abs(np.var(k) / (2 / 256) - 1) < 0.05  # loose: ~5 SE is 2.8% here
  assert nnx.Linear(8, 16, kernel_init=I.get_initializer("xavier_uniform"),
                    rngs=nnx.Rngs(0)).kernel[...].shape == (8, 16)


def test_normal_any_shape_and_dtype():
  init = I.normal(variance=0.1)
  assert init(jax.random.key(0), ()).shape == ()
  b = init(jax.random.key(0), (100_000,))
  assert abs(float(jnp.var(b)) - 0.1) < 5 * 0.1 * math.sqrt(2 / 1e5)
  assert init(jax.random.key(0), (3,), jnp.bfloat16).dtype == jnp.bfloat16
  assert I.he_normal(dtype=jnp.bfloat16)(jax.random.key(0), (3, 4)).dtype == jnp.bfloat16
  np.testing.assert_array_equal(I.constant(0.5)(jax.random.key(0), (3, 2)), 0.5)
  np.testing.assert_array_equal(I.get_initializer("constant", value=-2.0)(None, (4,)), -2.0)


def test_deterministic_and_jittable():
  init = I.get_initializer("he_uniform")
  a = init(jax.random.key(1), (20, 30))
  np.testing.assert_array_equal(a, init(jax.random.key(1), (20, 30)))
  assert not np.array_equal(a, init(jax.random.key(2), (20, 30)))
  jitted = jax.jit(init, static_argnums=(1, 2))
  np.testing.assert_allclose(jitted(jax.random.key(1), (20, 30), jnp.float32), a, rtol=1e-6)


def test_unknown_initializer():
  with pytest.raises(ValueError) as e:
    I.get_initializer("nope")
  msg = str(e.value)
  assert "Unknown initializer 'nope'" in msg
  assert "valid choices: " + ", ".join(I.initializer_names()) in msg
  with pytest.raises(ValueError, match="Unknown initializer"):
    I.expected_variance("nope", (3, 4))


def test_unknown_keyword():
  with pytest.raises(ValueError, match=r"'variance'.*'he_normal'.*negative_slope"):
    I.get_initializer("he_normal", variance=1.0)
  with pytest.raises(ValueError, match=r"'gain'.*valid keywords"):
    I.expected_variance("lecun_normal", (3, 4), gain=2.0)


@pytest.mark.parametrize("call, match", [
    (lambda: I.normal(variance=-1), "variance must be a positive"),
    (lambda: I.get_initializer("normal", variance=0.0), "variance must be a positive"),
    (lambda: I.get_initializer("he_normal", mode="fan_sum"), "fan_in, fan_out, fan_avg"),
    (lambda: I.variance_scaling(1.0, "bad", "normal"), "valid choices: fan_in"),
    (lambda: I.variance_scaling(1.0, "fan_in", "cauchy"), "normal, truncated_normal, uniform"),
    (lambda: I.variance_scaling(0.0, "fan_in", "normal"), "scale must be a positive"),
    (lambda: I.get_initializer("xavier_normal", gain=-1.0), "gain must be a positive"),
    (lambda: I.get_initializer("orthogonal", gain=0), "gain must be a positive"),
    (lambda: I.constant(float("nan")), "value must be a finite"),
    (lambda: I.orthogonal()(jax.random.key(0), (5,)), "rank >= 2"),
    (lambda: I.delta_orthogonal()(jax.random.key(0), (5,)), "rank >= 2"),
    (lambda: I.get_initializer("delta_orthogonal", gain=-1.0), "gain must be a positive"),
])
def test_bad_values(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_registry_defaults_are_valid_and_match_signatures():
  import inspect
  for name, (factory, defaults) in I.INITIALIZERS.items():
    params = inspect.signature(factory).parameters
    for k, v in defaults.items():
      assert k in params, (name, k)
      if params[k].default is not inspect.Parameter.empty:
        assert params[k].default == v, (name, k)


# ------------------------------------------------------------------------------------------------
# Drop-in behaviour as jax.nn.initializers: default dtype, complex dtypes, rank 0/1 with explicit
# axes, array-valued and traced scales. (JAX's own tests, ported: tests/test_initializers_jax.py.)

@pytest.mark.parametrize("name", I.initializer_names())
def test_default_dtype_follows_x64(name):
  shape = (3, 4)
  init = I.get_initializer(name)
  out = jax.eval_shape(lambda k: init(k, shape), jax.random.key(0))
  assert out.dtype == jnp.float32
  with jax.enable_x64(True):
    out = jax.eval_shape(lambda k: init(k, shape), jax.random.key(0))
    assert out.dtype == jnp.float64, name
    # An explicit dtype still wins, and the protocol's out_sharding is accepted.
    out = jax.eval_shape(lambda k: init(k, shape, jnp.float32, out_sharding=None),
                         jax.random.key(0))
    assert out.dtype == jnp.float32


@pytest.mark.parametrize("ours, theirs, shape", [
    (I.he_truncated_normal(), jax.nn.initializers.he_normal(), (5, 7)),
    (I.xavier_uniform(), jax.nn.initializers.glorot_uniform(), (5, 7)),
    (I.he_uniform(), jax.nn.initializers.he_uniform(), (5, 7)),
    (I.he_normal(), jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal"), (5, 7)),
    (I.variance_scaling(1.0, "fan_in", "uniform", in_axis=[0], out_axis=[]),
     jax.nn.initializers.variance_scaling(1.0, "fan_in", "uniform", in_axis=[0], out_axis=[]),
     (7,)),
    (I.variance_scaling(3.0, "fan_avg", "truncated_normal", in_axis=[], out_axis=[]),
     jax.nn.initializers.variance_scaling(3.0, "fan_avg", "truncated_normal", in_axis=[],
                                          out_axis=[]), ()),
], ids=["he_trunc", "glorot_u", "he_u", "he_n", "rank1_u", "rank0_tn"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64])
def test_matches_jax_complex_and_low_rank(ours, theirs, shape, dtype):
  key = jax.random.key(7)
  np.testing.assert_array_equal(ours(key, shape, dtype), theirs(key, shape, dtype))


def test_low_rank_fans():
  assert I.compute_fans((7,), in_axis=[0], out_axis=[]) == (7, 1)
  assert I.compute_fans((7,), in_axis=[], out_axis=0) == (1, 7)
  assert I.compute_fans((), in_axis=[], out_axis=[]) == (1, 1)
  assert I.expected_variance("he_normal", (7,), in_axis=[0], out_axis=[]) == pytest.approx(2 / 7)


# E|r^2| of a unit-mean exponential truncated to r^2 < 4 (a unit-variance complex normal whose
# modulus is cut at 2), over JAX's rescaling constant squared: JAX's complex truncated normal
# (and so initjax's, the same draws) has E|z|^2 = 1.0187 var, not var.
COMPLEX_TRUNCATED_EXCESS = ((1 - 4 * math.exp(-4) / (1 - math.exp(-4)))
                            / I.COMPLEX_TRUNCATED_NORMAL_STD ** 2)


@pytest.mark.parametrize("name, excess, kurt_ratio", [
    ("he_normal", 1.0, 2.0), ("he_truncated_normal", COMPLEX_TRUNCATED_EXCESS, 2.0),
    ("he_uniform", 1.0, 4 / 3)])
def test_complex_moments(name, excess, kurt_ratio):
  # E|z|^2 = var (times `excess`). For a complex normal |z|^2 = var * Exp(1), so
  # E|z|^4 / (E|z|^2)^2 = 2 (truncation lowers it; the disk's is 4/3): the SE of mean |z|^2 is
  # var * sqrt((ratio - 1) / n); 5 SE (0.6% here, the truncated excess is 1.9%). Real and
  # imaginary parts carry half each (a normal's Re^2 has SE var/2 sqrt(2 / n)).
  z = np.asarray(I.get_initializer(name)(jax.random.key(0), DENSE, jnp.complex64),
                 np.complex128)
  n, var = z.size, I.expected_variance(name, DENSE) * excess
  assert abs(np.mean(np.abs(z) ** 2) - var) < 5 * var * math.sqrt((kurt_ratio - 1) / n)
  assert abs(np.mean(z.real ** 2) - var / 2) < 5 * var / 2 * math.sqrt(2 / n)
  assert abs(np.mean(z)) < 5 * math.sqrt(var / n)


def test_traced_scales_share_one_program():
  key, shape = jax.random.key(3), (20, 30)
  traces = []

  @jax.jit
  def draw(scale, gain):
    traces.append(1)  # runs once per trace
    return (I.variance_scaling(scale, "fan_avg", "uniform")(key, shape),
            I.he_normal(gain=gain)(key, shape), I.xavier_normal(gain=gain)(key, shape),
            I.orthogonal(gain=gain)(key, shape), I.normal(scale)(key, shape))

  for scale, gain in [(0.5, 1.0), (2.0, 3.0)]:
    got = draw(jnp.float32(scale), jnp.float32(gain))
    want = (I.variance_scaling(scale, "fan_avg", "uniform")(key, shape),
            I.he_normal(gain=gain)(key, shape), I.xavier_normal(gain=gain)(key, shape),
            I.orthogonal(gain=gain)(key, shape), I.normal(scale)(key, shape))
    for g, w in zip(got, want):
      np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)
  assert len(traces) == 1
  # vmapped over gains, as a sweep does.
  gains = jnp.array([1.0, 2.0])
  stacked = jax.vmap(lambda g: I.he_uniform(gain=g)(key, shape))(gains)
  np.testing.assert_allclose(stacked[1], 2 * stacked[0], rtol=1e-6)


def test_array_scales_are_checked_when_concrete():
  init = I.variance_scaling(np.float32(2.0), "fan_in", "normal")
  np.testing.assert_allclose(init(jax.random.key(0), (3, 4)),
                             I.variance_scaling(2.0, "fan_in", "normal")(jax.random.key(0), (3, 4)),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="scale must be a positive"):
    I.variance_scaling(jnp.array(-1.0), "fan_in", "normal")
  with pytest.raises(ValueError, match="gain must be a positive.*real scalar.*shape \\(2,\\)"):
    I.he_normal(gain=jnp.ones(2))
  with pytest.raises(ValueError, match="variance must be a positive"):
    I.normal(np.array(float("inf")))
  with pytest.raises(ValueError, match="value must be a finite"):
    I.constant(jnp.array(float("nan")))
  with pytest.raises(ValueError, match="gain must be a positive"):
    I.orthogonal(gain=np.bool_(True))
