"""What a layer contracts: the fan axes of a kernel, and draws that respect them.

He and Xavier set Var[W] from fan_in (how many inputs each output sums) and fan_out. A kernel's
raw shape does not say which axes those are: Flax's attention kernels are (d_model, heads,
head_dim) and (heads, head_dim, d_model), Equinox and PyTorch store (out, in), a layer stacked
by a scan over depth has a leading layer axis. `KernelAxes` names every axis of a kernel:

  in_axes      contracted with the layer's input            fan_in  = prod(in) prod(window)
  out_axes     indexing the layer's output                  fan_out = prod(out) prod(window)
  window_axes  a convolution's receptive field (in both fans, as jax.nn.initializers)
  batch_axes   independent kernels (an Einsum's batch letters, layers stacked by a scan, Flax's
               DenseGeneral batch_dims): drawn one by one and counted in neither fan

`draw(init, key, shape, dtype, axes)` calls the initializer with the canonical shape
(*window, prod(in), prod(out)), the one whose fans every jax.nn / initjax initializer reads
correctly (in_axis=-2, out_axis=-1, the window as receptive field), once per batch entry, then
moves the axes back. This is what Flax's DenseGeneral and nnx's LinearGeneral do for their own
`kernel_init` (they flatten to (prod(in), prod(out))), except for batch axes: Flax multiplies
them into fan_in, initjax draws each batch entry as its own kernel. An orthogonal initializer is
then orthogonal between the flattened in and out axes.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

Axes = tuple[int, ...]


def _tuple(axes: int | Sequence[int]) -> Axes:
  return (int(axes),) if isinstance(axes, int) else tuple(int(a) for a in axes)


@dataclasses.dataclass(frozen=True)
class KernelAxes:
  """The role of every axis of a kernel (negative axes count from the end)."""
  in_axes: Axes
  out_axes: Axes
  window_axes: Axes = ()
  batch_axes: Axes = ()

  def __post_init__(self):
    for field in dataclasses.fields(self):
      object.__setattr__(self, field.name, _tuple(getattr(self, field.name)))

  def resolve(self, shape: Sequence[int]) -> "KernelAxes":
    """These axes for a kernel of `shape`: non-negative, checked, and every axis that no role
    names (the leading axes a scan or vmap over layers adds) made a batch axis.

    ValueError (one line) for an axis out of range, an axis named twice, or no in/out axis.
    """
    ndim = len(shape)
    resolved = {}
    for field in dataclasses.fields(self):
      values = []
      for a in getattr(self, field.name):
        if not -ndim <= a < ndim:
          raise ValueError(f"{field.name}={getattr(self, field.name)} is out of range for a "
                           f"kernel of shape {tuple(shape)}")
        values.append(a % ndim)
      resolved[field.name] = tuple(values)
    named = [a for v in resolved.values() for a in v]
    if len(set(named)) != len(named):
      raise ValueError(f"{self} names an axis twice for a kernel of shape {tuple(shape)}")
    if not resolved["in_axes"] or not resolved["out_axes"]:
      raise ValueError(f"a kernel needs at least one in axis and one out axis; got {self} for "
                       f"shape {tuple(shape)}")
    rest = tuple(a for a in range(ndim) if a not in named)
    resolved["batch_axes"] = tuple(sorted(resolved["batch_axes"] + rest))
    return KernelAxes(**resolved)


def flax_layout(ndim: int) -> KernelAxes:
  """jax.nn.initializers' reading of a raw shape: (..., in, out), the rest a receptive field."""
  return KernelAxes(in_axes=(ndim - 2,), out_axes=(ndim - 1,), window_axes=tuple(range(ndim - 2)))


def torch_layout(ndim: int) -> KernelAxes:
  """PyTorch's and Equinox's (out, in, *window) layout."""
  return KernelAxes(in_axes=(1,), out_axes=(0,), window_axes=tuple(range(2, ndim)))


LAYOUTS = {"flax": flax_layout, "torch": torch_layout}


def parse(spec: Any, ndim: int) -> KernelAxes:
  """A `KernelAxes`, a layout name in `LAYOUTS` ("flax": (..., in, out); "torch": (out, in,
  ...)) or a pair (in_axes, out_axes) with the other axes a receptive field."""
  if isinstance(spec, KernelAxes):
    return spec
  if isinstance(spec, str):
    if spec not in LAYOUTS:
      raise ValueError(f"unknown kernel layout {spec!r}; valid: {', '.join(LAYOUTS)}, a "
                       "KernelAxes or a pair (in_axes, out_axes)")
    return LAYOUTS[spec](ndim)
  if isinstance(spec, (tuple, list)) and len(spec) == 2:
    ins, outs = _tuple(spec[0]), _tuple(spec[1])
    named = {a % ndim if -ndim <= a < ndim else a for a in ins + outs}
    return KernelAxes(ins, outs, tuple(a for a in range(ndim) if a not in named))
  raise ValueError(f"fan axes must be a KernelAxes, a layout name ({', '.join(LAYOUTS)}) or a "
                   f"pair (in_axes, out_axes); got {spec!r}")


def fans(shape: Sequence[int], axes: KernelAxes) -> tuple[int, int]:
  """(fan_in, fan_out) of one kernel of `shape` with `axes`."""
  axes = axes.resolve(shape)
  window = math.prod(shape[a] for a in axes.window_axes)
  return (math.prod(shape[a] for a in axes.in_axes) * window,
          math.prod(shape[a] for a in axes.out_axes) * window)


def canonical_shape(shape: Sequence[int], axes: KernelAxes) -> tuple[int, ...]:
  """The shape one batch entry is drawn with: (*window, prod(in), prod(out))."""
  axes = axes.resolve(shape)
  return (tuple(shape[a] for a in axes.window_axes)
          + (math.prod(shape[a] for a in axes.in_axes),
             math.prod(shape[a] for a in axes.out_axes)))


def draw(init: Callable, key: jax.Array, shape: Sequence[int], dtype: Any,
         axes: KernelAxes) -> jax.Array:
  """`init` drawn for a kernel of `shape` whose axes have the roles `axes` (module docstring).

  Without batch axes the kernel is `init(key, canonical shape, dtype)` reshaped and transposed
  (a Flax DenseGeneral kernel: the same numbers Flax draws with the same key); a kernel already
  in the canonical layout is exactly `init(key, shape, dtype)`."""
  shape = tuple(int(d) for d in shape)
  axes = axes.resolve(shape)
  order = axes.batch_axes + axes.window_axes + axes.in_axes + axes.out_axes
  canonical = canonical_shape(shape, axes)
  if not axes.batch_axes and order == tuple(range(len(shape))) and canonical == shape:
    return init(key, shape, dtype)
  if axes.batch_axes:
    keys = jax.random.split(key, math.prod(shape[a] for a in axes.batch_axes))
    flat = jax.vmap(lambda k: init(k, canonical, dtype))(keys)
  else:
    flat = init(key, canonical, dtype)
  full = flat.reshape(tuple(shape[a] for a in order))
  return jnp.transpose(full, [order.index(a) for a in range(len(shape))])


def einsum_axes(equation: str, kernel_operand: int = 1) -> KernelAxes:
  """The kernel's axes in an einsum "inputs,kernel->output" (Flax's Einsum, nnx.Einsum):
  letters of the kernel shared with the input but not the output are contracted (in), those
  shared with the output only are out, those in all three are batch."""
  eq = equation.replace(" ", "")
  if "->" not in eq or eq.count(",") != 1:
    raise ValueError(f"einsum equation {equation!r} must read 'input,kernel->output'")
  lhs, out = eq.split("->")
  operands = lhs.split(",")
  kernel = operands[kernel_operand].replace("...", "")
  other = operands[1 - kernel_operand]
  ins, outs, batch = [], [], []
  for i, letter in enumerate(kernel):
    if letter in other and letter in out:
      batch.append(i)
    elif letter in out:
      outs.append(i)
    else:
      ins.append(i)
  return KernelAxes(tuple(ins), tuple(outs), (), tuple(batch))
