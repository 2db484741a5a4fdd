"""initjax.core._jax_internals: the private JAX names it uses must exist (fail loudly when a JAX
upgrade moves them), and the unrolled Threefry lowering must give JAX's bits exactly."""
import jax
import numpy as np

from initjax.core import _jax_internals


def test_private_threefry_rules_are_where_initjax_expects_them():
  assert _jax_internals.internals_available(), (
      "jax._src.random.threefry2x32 lowering rules moved: update initjax/_jax_internals.py "
      "(propagation falls back to JAX's default lowering, a little slower, same results)")


def test_unrolled_lowering_draws_the_same_bits():
  draw = lambda key: jax.random.normal(key, (257, 33))
  plain = np.asarray(jax.jit(draw)(jax.random.key(3)))
  unrolled_fn = jax.jit(lambda key: draw(key) + 0.0)  # a distinct program, lowered in the block
  with _jax_internals.unrolled_threefry_on_cpu():
    unrolled = np.asarray(unrolled_fn(jax.random.key(3)))
  np.testing.assert_array_equal(plain, unrolled)
