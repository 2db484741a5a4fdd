"""JAX's own initializer tests, ported to initjax's counterparts.

Source: tests/nn_test.py of github.com/jax-ml/jax at commit
cec06d116c05f0d52adfceee3d3b730fdbcb0ce5 (class NNInitializersTest, INITIALIZER_RECS,
ALL_SHAPES), Apache License 2.0, Copyright 2019 The JAX Authors.

What changed in the port:
  * Each JAX initializer is replaced by the initjax one the docs name as its counterpart:
    he_normal -> he_truncated_normal (same draws) and he_normal (plain normal); glorot_* ->
    xavier_*; lecun_* -> lecun_*; he_uniform, orthogonal, variance_scaling -> same names;
    normal(stddev) -> initjax's normal(variance) (same protocol, variance instead of std).
  * JAX runs a random sample of its (initializer x shape x dtype) product
    (jtu.sample_product_testcases, 10 cases each). Here every case is checked, with x64
    (float32, float64, complex64, complex128) and without (float32, complex64), as JAX's CI
    runs both: every shape through `jax.eval_shape` (the same Python code, and the shape and
    dtype the call returns) and, to keep the CPU compile time to seconds, one shape per
    (initializer, dtype) executed, (2, 3), plus the rank-0/1 shapes. The orthogonal zero-size
    test runs all 16 (rows, cols) in float32 and four of them in float64 (JAX: 10 of 32).
  * The three "variance_scaling_fan_in" records get distinct names (test ids).
  * jtu.JaxTestCase assertions become plain asserts and np.testing with JAX's default
    tolerances (float32 1e-6, float64 1e-15); random.PRNGKey stays (the legacy uint32 keys).
  * delta_orthogonal -> delta_orthogonal (JAX's record: 4-D shapes, floating dtypes).
Not ported (initjax has no counterpart): uniform(scale), truncated_normal(stddev), and in
testAccidentalUpcasting the uniform/truncated_normal factories.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import random

from initjax.nn import initializers as I

ALL_SHAPES = [(), (2,), (2, 2), (2, 3), (3, 2), (2, 3, 4), (4, 3, 2), (2, 3, 4, 5)]

FLOATING = [np.float32, np.float64]
COMPLEX = [np.complex64, np.complex128]
INEXACT = FLOATING + COMPLEX


def _record(name, initializer, dtypes, min_dims=2, max_dims=4):
  shapes = [shape for shape in ALL_SHAPES if min_dims <= len(shape) <= max_dims]
  return name, initializer, shapes, dtypes


INITIALIZER_RECS = [
    _record("normal", I.normal, INEXACT, 1),
    _record("he_normal (truncated)", I.he_truncated_normal, INEXACT),
    _record("he_normal (plain)", I.he_normal, INEXACT),
    _record("he_uniform", I.he_uniform, INEXACT),
    _record("glorot_normal", I.xavier_normal, INEXACT),
    _record("glorot_uniform", I.xavier_uniform, INEXACT),
    _record("lecun_normal", I.lecun_normal, INEXACT),
    _record("lecun_uniform", I.lecun_uniform, INEXACT),
    _record("orthogonal", I.orthogonal, FLOATING, 2, 2),
    _record("delta_orthogonal", I.delta_orthogonal, FLOATING, 4, 4),
    _record("variance_scaling_fan_geo_avg",
            lambda **kw: I.variance_scaling(1, "fan_geo_avg", "normal", **kw), FLOATING),
    _record("variance_scaling_fan_in_in0",
            lambda **kw: I.variance_scaling(1, "fan_in", "normal", in_axis=[0], out_axis=[],
                                            **kw), FLOATING, min_dims=1),
    _record("variance_scaling_fan_in_out0",
            lambda **kw: I.variance_scaling(1, "fan_in", "normal", in_axis=[], out_axis=[0],
                                            **kw), FLOATING, min_dims=1),
    _record("variance_scaling_fan_in_noaxes",
            lambda **kw: I.variance_scaling(1, "fan_in", "normal", in_axis=[], out_axis=[],
                                            **kw), FLOATING, min_dims=0),
]


WIDE = (np.dtype(np.float64), np.dtype(np.complex128))

# One executed shape per case (see the module docstring): the same for every record, so the
# draws' compiled programs are shared between records; the rank-0/1 records also run theirs.
EXECUTED = [(2, 3)]


def _executed(shapes, dtype, x64):
  # float32/complex64 execute without x64, float64/complex128 with it.
  if x64 != (np.dtype(dtype) in WIDE):
    return []
  return [s for s in shapes if s in EXECUTED or len(s) < 2]


# Without x64, JAX's dtype lists (jtu.dtypes) hold float32 and complex64 only.
REC_CASES = [
    pytest.param(init, shapes, dtype, x64,
                 id=f"{'x64' if x64 else 'x32'}-{name}-{np.dtype(dtype).name}")
    for x64 in (True, False)
    for name, init, shapes, dtypes in INITIALIZER_RECS
    for dtype in dtypes if x64 or np.dtype(dtype) not in WIDE]


@pytest.mark.parametrize("initializer, shapes, dtype, x64", REC_CASES)
def test_initializer(initializer, shapes, dtype, x64):  # JAX: testInitializer
  rng = random.PRNGKey(0)
  with jax.enable_x64(x64):
    for shape in shapes:
      val = jax.eval_shape(lambda k, shape=shape: initializer()(k, shape, dtype), rng)
      assert shape == jnp.shape(val)
      assert jax.dtypes.canonicalize_dtype(dtype) == val.dtype
    for shape in _executed(shapes, dtype, x64):
      val = initializer()(rng, shape, dtype)
      assert shape == jnp.shape(val)
      assert jax.dtypes.canonicalize_dtype(dtype) == val.dtype
      assert np.all(np.isfinite(np.asarray(val)))


@pytest.mark.parametrize("initializer, shapes, dtype, x64", REC_CASES)
def test_initializer_provider(initializer, shapes, dtype, x64):  # testInitializerProvider
  rng = random.PRNGKey(0)
  with jax.enable_x64(x64):
    for shape in shapes:
      val = jax.eval_shape(lambda k, shape=shape: initializer(dtype=dtype)(k, shape), rng)
      assert shape == jnp.shape(val)
      assert jax.dtypes.canonicalize_dtype(dtype) == val.dtype
    for shape in _executed(shapes, dtype, x64):
      val = initializer(dtype=dtype)(rng, shape)
      assert shape == jnp.shape(val)
      assert jax.dtypes.canonicalize_dtype(dtype) == val.dtype


ORTHOGONAL_CASES = (
    [(rows, cols, np.float32, False) for rows in range(4) for cols in range(4)]
    + [(rows, cols, np.float64, True) for rows, cols in ((0, 2), (2, 3), (3, 2), (3, 3))])


@pytest.mark.parametrize("rows, cols, dtype, x64", ORTHOGONAL_CASES)
def test_initializer_orthogonal_zero_size(rows, cols, dtype, x64):
  # JAX: testInitializerOrthogonalZeroSize; its CPU tolerances (atol = rtol = JAX's default).
  with jax.enable_x64(x64):
    _orthogonal_zero_size(rows, cols, dtype)


def _orthogonal_zero_size(rows, cols, dtype):
  rng = random.PRNGKey(0)
  initializer = I.orthogonal()
  val = initializer(rng, (rows, cols), dtype)
  assert val.shape == (rows, cols)
  assert val.dtype == dtype
  tol = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-15}[np.dtype(dtype)]
  if rows <= cols:
    m = val @ val.T
    np.testing.assert_allclose(m, np.eye(rows, dtype=dtype), atol=tol, rtol=tol)
  if cols <= rows:
    m = val.T @ val
    np.testing.assert_allclose(m, np.eye(cols, dtype=dtype), atol=tol, rtol=tol)


def test_variance_scaling_multi_axis():  # JAX: testVarianceScalingMultiAxis
  rng = random.PRNGKey(0)
  shape = (2, 3, 4, 5)
  initializer = I.variance_scaling(
      scale=1.0, mode="fan_avg", distribution="truncated_normal",
      in_axis=(0, 1), out_axis=(-2, -1))
  val = initializer(rng, shape)
  assert shape == jnp.shape(val)


def test_variance_scaling_batch_axis():  # JAX: testVarianceScalingBatchAxis
  rng = random.PRNGKey(0)
  shape = (2, 3, 4, 5)
  initializer = I.variance_scaling(
      scale=1.0, mode="fan_avg", distribution="truncated_normal",
      in_axis=0, out_axis=(2, 3), batch_axis=1)
  val = initializer(rng, shape)
  assert shape == jnp.shape(val)


def test_variance_scaling_error():  # JAX: testVarianceScalingError
  rng = random.PRNGKey(0)
  shape = (5,)
  initializer = I.variance_scaling(
      scale=1.0, mode="fan_avg", distribution="truncated_normal")
  with pytest.raises(
      ValueError,
      match="Can't compute input and output sizes of a 1-dimensional"
      " weights tensor with default in_axis. Must be at least 2D or specify"
      " in_axis explicitly."):
    initializer(rng, shape)


def test_accidental_upcasting():  # JAX: testAccidentalUpcasting (initjax's normal only)
  rng = random.PRNGKey(0)
  shape = (4, 4)
  scalar_param = jnp.array(1.0, dtype=jnp.float32)
  for init_fn in (I.normal(scalar_param, jnp.bfloat16),):
    sub_rng, rng = random.split(rng)
    val = init_fn(sub_rng, shape)
    assert val.dtype == jnp.bfloat16
