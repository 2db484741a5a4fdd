"""initjax.nn.kernel_axes and layer_axes: the fans of what a layer contracts, checked against the
libraries' own kernel_init conventions (Flax's DenseGeneral flattening, Equinox's defaults),
draws that agree with them bit for bit, and one clear error per bad declaration."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initjax.nn import initializers as I
from initjax.nn import kernel_axes
from initjax.nn.kernel_axes import KernelAxes


def test_resolve_makes_unnamed_leading_axes_batch_axes():
  axes = KernelAxes(in_axes=(-2,), out_axes=(-1,)).resolve((3, 5, 7))
  assert axes == KernelAxes((1,), (2,), (), (0,))
  assert kernel_axes.fans((3, 5, 7), axes) == (5, 7)
  conv = kernel_axes.flax_layout(3).resolve((3, 5, 7))       # (window, in, out)
  assert kernel_axes.fans((3, 5, 7), conv) == (15, 21)
  torch = kernel_axes.torch_layout(3).resolve((7, 5, 3))     # (out, in, window)
  assert kernel_axes.fans((7, 5, 3), torch) == (15, 21)


@pytest.mark.parametrize("axes, match", [
    (KernelAxes((3,), (1,)), r"in_axes=\(3,\) is out of range for a kernel of shape \(4, 5\)"),
    (KernelAxes((0,), (0,)), "names an axis twice"),
    (KernelAxes((), (1,)), "at least one in axis"),
])
def test_bad_axes_are_one_line(axes, match):
  with pytest.raises(ValueError, match=match) as e:
    axes.resolve((4, 5))
  assert "\n" not in str(e.value)


def test_parse_layouts_and_pairs():
  assert kernel_axes.parse("torch", 2) == KernelAxes((1,), (0,))
  assert kernel_axes.parse(((0, 1), 2), 3).resolve((2, 3, 4)) == KernelAxes((0, 1), (2,))
  with pytest.raises(ValueError, match="unknown kernel layout 'jax'"):
    kernel_axes.parse("jax", 2)


def test_canonical_draw_is_the_initializer_itself():
  # A kernel in (in, out) layout without batch axes: exactly init(key, shape).
  key, init = jax.random.key(3), I.he_normal()
  axes = KernelAxes((0,), (1,)).resolve((6, 4))
  np.testing.assert_array_equal(kernel_axes.draw(init, key, (6, 4), jnp.float32, axes),
                                init(key, (6, 4), jnp.float32))


def test_dense_general_draw_equals_flax_kernel_init_bit_for_bit():
  # Flax's DenseGeneral calls kernel_init with (prod(in), prod(out)) and reshapes; so does
  # kernel_axes.draw: the same numbers for the same key, and so the same fans.
  init = I.he_normal()
  layer = nn.DenseGeneral(features=(4, 16), axis=-1, kernel_init=init)
  x = jnp.ones((2, 64))
  key = jax.random.key(7)
  flax_kernel = layer.init(key, x)["params"]["kernel"]
  axes = KernelAxes((0,), (1, 2)).resolve((64, 4, 16))
  ours = kernel_axes.draw(init, _flax_param_key(layer, key, x), (64, 4, 16), jnp.float32, axes)
  np.testing.assert_array_equal(ours, flax_kernel)


def _flax_param_key(layer, key, x):
  """The key Flax hands to the layer's kernel_init (captured by an initializer that records)."""
  seen = []

  def spy(k, shape, dtype):
    seen.append(k)
    return jnp.zeros(shape, dtype)

  layer.clone(kernel_init=spy).init(key, x)
  return seen[0]


def test_batch_axes_are_independent_kernels():
  # Two batch entries of a (2, in, out) kernel are two draws with their own keys, each with the
  # fans of one (in, out) kernel: orthogonal per entry.
  axes = KernelAxes((1,), (2,), (), (0,)).resolve((2, 8, 8))
  w = kernel_axes.draw(I.orthogonal(), jax.random.key(0), (2, 8, 8), jnp.float32, axes)
  for b in range(2):
    np.testing.assert_allclose(w[b].T @ w[b], np.eye(8), atol=1e-5)
  assert not np.allclose(w[0], w[1])


def test_transposed_layout_moves_axes_back():
  # A PyTorch-layout (out, in) kernel drawn orthogonal between in and out: W W^T = I for a wide
  # (out < in) matrix means its rows are orthonormal.
  axes = kernel_axes.torch_layout(2).resolve((3, 8))
  w = kernel_axes.draw(I.orthogonal(), jax.random.key(1), (3, 8), jnp.float32, axes)
  np.testing.assert_allclose(w @ w.T, np.eye(3), atol=1e-5)


@pytest.mark.parametrize("equation, shape, fans", [
    ("bnd,ndk->bnk", (4, 16, 8), (16, 8)),         # heads n are batch: fan_in d, fan_out k
    ("btd,dhk->bthk", (64, 4, 16), (64, 64)),      # a query projection written as an einsum
    ("bthk,hkd->btd", (4, 16, 64), (64, 64)),      # the output projection
])
def test_einsum_axes(equation, shape, fans):
  axes = kernel_axes.einsum_axes(equation).resolve(shape)
  assert kernel_axes.fans(shape, axes) == fans
