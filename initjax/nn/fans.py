"""Fans of a weight tensor, as ``jax.nn.initializers`` computes them (the denominators of every
variance-scaling initializer in `initjax.initializers`).

Axes other than in/out/batch form the receptive field: a conv kernel (h, w, c_in, c_out) has
fan_in = h*w*c_in and fan_out = h*w*c_out; kernels are in Flax's layout, (..., in, out).
"""
from __future__ import annotations

import math
from typing import Sequence

Axes = int | Sequence[int]

MODES = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")


def _axes(axis: Axes, ndim: int, what: str) -> tuple[int, ...]:
  axes = (axis,) if isinstance(axis, int) else tuple(axis)
  for a in axes:
    if not -ndim <= a < ndim:
      raise ValueError(f"{what}={axis!r} is out of range for a rank-{ndim} shape")
  return tuple(a % ndim for a in axes)


def compute_fans(shape: Sequence[int], in_axis: Axes = -2, out_axis: Axes = -1,
                 batch_axis: Axes = ()) -> tuple[float, float]:
  """Returns (fan_in, fan_out) of a weight tensor, as ``jax.nn.initializers``.

  receptive = prod(shape) / (prod(in dims) * prod(out dims) * prod(batch dims)),
  fan_in = prod(in dims) * receptive, fan_out = prod(out dims) * receptive.
  A conv kernel (h, w, c_in, c_out) gives fan_in = h*w*c_in, fan_out = h*w*c_out.
  Rank 0 and 1 need explicit axes, as in JAX: (7,) with in_axis=[0], out_axis=[] gives
  (7, 1); an empty sequence of axes has size 1. The axes must be distinct (JAX does not check).
  """
  shape = tuple(int(d) for d in shape)
  ndim = len(shape)
  if isinstance(in_axis, int) and in_axis == -2 and ndim <= 1:
    # JAX's message, then initjax's.
    raise ValueError(
        f"Can't compute input and output sizes of a {ndim}-dimensional weights tensor with "
        "default in_axis. Must be at least 2D or specify in_axis explicitly (fans need rank >= 2 "
        f"with the default axes; got shape {shape}; use normal/zeros/constant for biases)")
  ins = _axes(in_axis, ndim, "in_axis")
  outs = _axes(out_axis, ndim, "out_axis")
  batch = _axes(batch_axis, ndim, "batch_axis")
  if len(set(ins + outs + batch)) != len(ins) + len(outs) + len(batch):
    raise ValueError(f"in_axis={in_axis!r}, out_axis={out_axis!r}, batch_axis={batch_axis!r} "
                     "must be distinct axes")
  in_size = math.prod(shape[a] for a in ins)
  out_size = math.prod(shape[a] for a in outs)
  batch_size = math.prod(shape[a] for a in batch)
  # Same arithmetic as jax's _compute_fans, so variances agree bit for bit.
  receptive = math.prod(shape) / in_size / out_size / batch_size
  return in_size * receptive, out_size * receptive


def fan(mode: str, fan_in: float, fan_out: float) -> float:
  if mode == "fan_in":
    return fan_in
  if mode == "fan_out":
    return fan_out
  if mode == "fan_avg":
    return (fan_in + fan_out) / 2
  return (fan_in * fan_out) ** 0.5  # fan_geo_avg


def check_mode(mode: str) -> str:
  if mode not in MODES:
    raise ValueError(f"Invalid mode {mode!r}; valid choices: {', '.join(MODES)}")
  return mode
