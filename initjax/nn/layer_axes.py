"""Which parameter of a Flax or Equinox layer is a kernel, and what it contracts.

`layer_leaf(library, layer, attribute, ndim, call)` answers for one parameter leaf of a layer:
its role ("kernel", "bias", "scale", "embedding" or None) and, for kernels, its `KernelAxes`.
The rules follow each library's own kernel layout (checked against what it passes to its own
`kernel_init`):

  linen Dense, nnx Linear                      (in, out)
  linen DenseGeneral, nnx LinearGeneral        (*batch, *in, *out); batch axes are drawn one by
                                               one (Flax multiplies them into fan_in)
  linen/nnx MultiHeadDotProductAttention       its query/key/value/out DenseGeneral layers:
                                               (d_model, heads, head_dim) and (heads, head_dim,
                                               d_model), so fan_in = d_model and heads x head_dim
  linen/nnx Conv, ConvTranspose                (*window, in, out): fan_in = window x in
  linen ConvLocal                              (*positions, window x in, out): one kernel per
                                               output position (batch)
  linen/nnx Einsum                             from the einsum equation (`kernel_axes.einsum_axes`)
  Equinox Linear, Conv, ConvTranspose          (out, in, *window): PyTorch's layout
  Equinox LSTMCell, GRUCell                    weight_ih (gates x hidden, in), weight_hh
                                               (gates x hidden, hidden), as PyTorch
  embeddings (linen/nnx Embed, Equinox         "embedding": a lookup table, not a contraction, so
    Embedding)                                 He and Xavier have no fans for it: kept as drawn
  norm layers' scales (LayerNorm, BatchNorm,   "scale": kept as drawn
    RMSNorm, GroupNorm; Equinox's `weight`)

Leading axes beyond the layer's own (a layer scanned or vmapped over depth) are batch axes. A
leaf no rule covers returns role None; the caller decides (and says so).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from initjax.nn.kernel_axes import KernelAxes, einsum_axes


@dataclasses.dataclass(frozen=True)
class LeafRule:
  role: str | None
  axes: KernelAxes | None = None


_BIAS = LeafRule("bias")
_SCALE = LeafRule("scale")
_EMBEDDING = LeafRule("embedding")
_NORMS = ("LayerNorm", "BatchNorm", "RMSNorm", "GroupNorm", "InstanceNorm", "WeightNorm",
          "SpectralNorm")


def _shifted(axes: KernelAxes, own_ndim: int, ndim: int) -> KernelAxes | None:
  """`axes` of a layer's own kernel rank, moved past `ndim - own_ndim` leading batch axes."""
  lead = ndim - own_ndim
  if lead < 0:
    return None
  move = lambda t: tuple(a + lead for a in t)  # pylint: disable=unnecessary-lambda-assignment
  return KernelAxes(move(axes.in_axes), move(axes.out_axes), move(axes.window_axes),
                    tuple(range(lead)) + move(axes.batch_axes))


def _tuple(v: Any) -> tuple:
  return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def _dense_general(n_batch: int, n_in: int, n_out: int) -> tuple[KernelAxes, int]:
  own = n_batch + n_in + n_out
  return KernelAxes(tuple(range(n_batch, n_batch + n_in)), tuple(range(n_batch + n_in, own)),
                    (), tuple(range(n_batch))), own


def _flax_kernel(name: str, layer: Any, call: dict | None) -> tuple[KernelAxes, int] | None:
  """(axes, own rank) of the kernel of Flax layer class `name` (linen or nnx)."""
  if name in ("Dense", "Linear"):
    return KernelAxes((0,), (1,)), 2
  if name == "DenseGeneral":
    return _dense_general(len(_tuple(layer.batch_dims)), len(_tuple(layer.axis)),
                          len(_tuple(layer.features)))
  if name == "LinearGeneral":
    return _dense_general(len(layer.batch_axis), len(_tuple(layer.in_features)),
                          len(_tuple(layer.out_features)))
  if name in ("Conv", "ConvTranspose"):
    window = len(_tuple(layer.kernel_size))
    return KernelAxes((window,), (window + 1,), tuple(range(window))), window + 2
  if name == "ConvLocal":
    positions = len(_tuple(layer.kernel_size))
    return KernelAxes((positions,), (positions + 1,), (), tuple(range(positions))), positions + 2
  if name == "Einsum":
    equation = (call or {}).get("einsum_str") or getattr(layer, "einsum_str", None)
    if not equation:
      return None
    axes = einsum_axes(equation)
    return axes, len(axes.in_axes + axes.out_axes + axes.batch_axes)
  return None


def flax_leaf(layer: Any, attribute: str, ndim: int, call: dict | None = None) -> LeafRule:
  """The rule for parameter `attribute` of a linen or nnx `layer` (a module instance)."""
  name = type(layer).__name__
  if attribute == "bias":
    return _BIAS
  if attribute == "scale" and (name in _NORMS or "Norm" in name):
    return _SCALE
  if attribute == "embedding" and name == "Embed":
    return _EMBEDDING
  if attribute == "kernel":
    found = _flax_kernel(name, layer, call)
    if found is not None:
      return LeafRule("kernel", _shifted(found[0], found[1], ndim))
  return LeafRule(None)


_EQX_GATES = {"weight_ih": "input", "weight_hh": "hidden"}


def equinox_leaf(layer: Any, attribute: str, ndim: int) -> LeafRule:
  """The rule for array field `attribute` of an Equinox `layer`."""
  name = type(layer).__name__
  if attribute in ("bias", "bias_n"):
    return _BIAS
  if name in _NORMS or "Norm" in name:
    return _SCALE if attribute == "weight" else LeafRule(None)
  if name == "Embedding" and attribute == "weight":
    return _EMBEDDING
  torch = None
  if name == "Linear" and attribute == "weight":
    torch = 2
  elif name.startswith(("Conv", "ConvTranspose")) and attribute == "weight":
    torch = 2 + int(layer.num_spatial_dims)
  elif name in ("LSTMCell", "GRUCell") and attribute in _EQX_GATES:
    torch = 2
  if torch is None:
    return LeafRule(None)
  axes = KernelAxes((1,), (0,), tuple(range(2, torch)))
  return LeafRule("kernel", _shifted(axes, torch, ndim))
