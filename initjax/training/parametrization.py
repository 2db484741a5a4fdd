"""abc-parametrizations (Tensor Programs IV/V): how initialization, a forward multiplier and the
learning rate of every layer scale with width, for SGD-like and Adam-like optimizers.

A parametrization scales each parameter leaf by powers of the width multiplier m = width /
base_width: its initialization (std multiplied by m^init, on top of the He/Xavier draw at the
actual fan-in), a forward multiplier (the network uses m^multiplier * theta in place of the
stored theta) and its learning rate (updates multiplied by m^learning_rate). At width ==
base_width every parametrization is the standard one.

Leaves are classified by which of their dimensions grow with width (`classify`, from the shapes
of the same model at two widths, as the `mup` package's `set_base_shapes` does):

  kind         dims that grow                        example
  input        the output dim only (fan_out)         the first layer's kernel
  hidden       fan_in and fan_out                    a width x width kernel (stacked ones too)
  output       fan_in only                           the readout kernel
  bias         a bias (a vector, or vectors stacked  every hidden layer's bias
               over layers; named bias, b, beta*)
               that grows
  fixed        nothing                               the readout bias, a fixed-size leaf

The registry `PARAMETRIZATIONS` holds, per name and optimizer family, (init, multiplier,
learning_rate) exponents per kind:

  sp     all 0: He/Xavier at every width, one learning rate (today's behaviour).
  ntk    hidden and output kernels: multiplier m^-1/2, init m^+1/2 (the effective weight is
         drawn as SP, the stored one has width-independent entries, W = omega / sqrt(n)); the
         same exponents for SGD and Adam.
  mup    the `mup` package (microsoft/mup, mup/layer.py MuReadout, mup/optim.py MuAdam, MuSGD):
         the readout's input multiplied by 1/m (here: its kernel, the same product) and its
         SP init multiplied by m^1/2 (`_rescale_parameters`); Adam: matrix-like (hidden)
         kernels' learning rate / m, everything else unchanged; SGD: vector-like leaves (input
         kernel, biases, readout kernel) learning rate * m, hidden kernels unchanged (fan_in /
         fan_out ratio 1), fixed-size leaves unchanged. Equivalent to Tensor Programs V Table 3
         (readout init variance 1/fan_in^2, Adam learning rate 1/fan_in) by abc-symmetry.

Applied as pure functions on a parameter pytree: `plan` gives the per-leaf multipliers for one
width, `scale_init` the initializer map, `effective` the forward multiplier, `scale_updates` an
optax GradientTransformation that composes after any optimizer (`optimizer` chains it), and
`absorbed` the multiplier-free equivalent (init and learning rate only) for a model whose
forward pass cannot be changed.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

from initjax.core.errors import check_choice
from initjax.nn.redraw import BIAS_NAMES, path_name
from initjax.training.optimizers import get_optimizer

KINDS = ("input", "hidden", "output", "bias", "fixed")
# Adam-like optimizers normalize the gradient entrywise (mup/optim.py: "RMSProp and Adagrad"
# take MuAdam's rules); the others take MuSGD's.
ADAM_LIKE = ("adam", "adamw", "rmsprop", "adagrad", "lamb")
SGD_LIKE = ("sgd", "momentum", "nesterov")


class Scaling(NamedTuple):
  """Exponents of the width multiplier m for one kind of leaf."""
  init: float = 0.0
  multiplier: float = 0.0
  learning_rate: float = 0.0


_SP = {k: Scaling() for k in KINDS}
_NTK = {**_SP, "hidden": Scaling(0.5, -0.5, 0.0), "output": Scaling(0.5, -0.5, 0.0)}
PARAMETRIZATIONS: dict[str, dict[str, dict[str, Scaling]]] = {
    "sp": {"sgd": _SP, "adam": _SP},
    "ntk": {"sgd": _NTK, "adam": _NTK},
    "mup": {
        "adam": {**_SP, "hidden": Scaling(0.0, 0.0, -1.0), "output": Scaling(0.5, -1.0, 0.0)},
        "sgd": {**_SP, "input": Scaling(0.0, 0.0, 1.0), "bias": Scaling(0.0, 0.0, 1.0),
                "output": Scaling(0.5, -1.0, 1.0)},
    },
}


def parametrization_names() -> list[str]:
  return list(PARAMETRIZATIONS)


def check_parametrization(name: str) -> str:
  return check_choice("parametrization", name, parametrization_names())


def optimizer_family(optimizer: str) -> str:
  """"adam" for Adam-like optimizers (entrywise-normalized updates), "sgd" for the others."""
  check_choice("optimizer", optimizer, ADAM_LIKE + SGD_LIKE)
  return "adam" if optimizer in ADAM_LIKE else "sgd"


def scalings(name: str, optimizer: str) -> dict[str, Scaling]:
  """{kind: Scaling} of parametrization `name` for `optimizer`."""
  check_parametrization(name)
  return PARAMETRIZATIONS[name][optimizer_family(optimizer)]


# ------------------------------------------------------------------------------------------------
# Classification.

_MLP_KEYS = {"omega_0", "beta_0", "omega_hidden", "beta_hidden", "omega_out", "beta_out"}


def _is_bias(name: str) -> bool:
  last = name.rpartition("/")[2]
  return last in BIAS_NAMES or last.startswith("beta")


def _leaf_kind(name: str, shape_a, shape_b, out_axis: int) -> str:
  if len(shape_a) != len(shape_b):
    raise ValueError(f"{name} changes rank with width: {shape_a} vs {shape_b}")
  grows = [a != b for a, b in zip(shape_a, shape_b)]
  if len(shape_a) <= 1 or _is_bias(name):   # a bias, or biases stacked over layers
    return "bias" if any(grows) else "fixed"
  # kernels: the last two axes are (in, out) or (out, in); leading axes are stacked layers
  in_axis = -1 if out_axis == -2 else -2
  if any(grows[:-2]):
    raise ValueError(f"{name} grows with width on a leading (stacked) axis: {shape_a} vs "
                     f"{shape_b}")
  fan_in, fan_out = grows[in_axis], grows[out_axis]
  return {(True, True): "hidden", (False, True): "input", (True, False): "output",
          (False, False): "fixed"}[(fan_in, fan_out)]


def classify(params_a: Any, params_b: Any, overrides: Mapping[str, str] | None = None,
             out_axis: int | None = None) -> Any:
  """The kind of every leaf (a pytree of strings, `KINDS`), from a model at two widths.

  Args:
    params_a, params_b: the same model's parameters (or their shapes, `jax.eval_shape`) at two
      different widths.
    overrides: {path pattern (fnmatch, on `initjax.nn.redraw.path_name`): kind}, applied last.
    out_axis: the axis of a kernel's fan_out among its last two: -1 for Flax's (in, out)
      kernels, -2 for initjax's MLP (Omega is (out, in)); default: -2 for initjax's MLP (its
      parameter names), else -1.

  Raises:
    ValueError: the trees differ in structure, no leaf grows with width ("the model's layers do
      not change with width"), a leaf grows on a stacked axis, or an override names an unknown
      kind or matches nothing.
  """
  if jax.tree.structure(params_a) != jax.tree.structure(params_b):
    raise ValueError("the model's parameters differ in structure between the two widths")
  if out_axis is None:
    out_axis = -2 if isinstance(params_a, Mapping) and set(params_a) == _MLP_KEYS else -1
  flat_a, treedef = jax.tree_util.tree_flatten_with_path(params_a)
  flat = [(path, _leaf_kind(path_name(path), tuple(a.shape), tuple(b.shape), out_axis))
          for (path, a), b in zip(flat_a, jax.tree.leaves(params_b))]
  if all(k == "fixed" for _, k in flat):
    raise ValueError("the model's layers do not change with width: no parameter's shape "
                     "differs between the two widths")
  names = [path_name(p) for p, _ in flat]
  values = [k for _, k in flat]
  for pattern, kind in (overrides or {}).items():
    check_choice("kind", kind, KINDS)
    hits = [i for i, n in enumerate(names) if fnmatch.fnmatchcase(n, pattern)]
    if not hits:
      raise ValueError(f"override {pattern!r} matches no parameter; they are: "
                       f"{', '.join(names)}")
    for i in hits:
      values[i] = kind
  return jax.tree_util.tree_unflatten(treedef, values)


def kinds_by_name(kinds: Any) -> dict[str, str]:
  """{path name: kind} of a classified tree (for logs and the results' JSON)."""
  return {path_name(p): k for p, k in jax.tree_util.tree_flatten_with_path(kinds)[0]}


# ------------------------------------------------------------------------------------------------
# Per-width multipliers.

@dataclasses.dataclass(frozen=True)
class Plan:
  """Per-leaf multipliers of one parametrization at one width (pytrees of floats like the
  parameters). `width_mult` = width / base_width."""
  name: str
  optimizer: str
  width_mult: float
  kinds: Any
  init_scale: Any
  multiplier: Any
  lr_scale: Any


def plan(name: str, optimizer: str, kinds: Any, width: int, base_width: int) -> Plan:
  """The multipliers of parametrization `name` for `optimizer` at `width` (m = width /
  base_width), for the leaves classified as `kinds`."""
  table = scalings(name, optimizer)
  for label, v in (("width", width), ("base_width", base_width)):
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
      raise ValueError(f"{label} must be an integer >= 1; got {v!r}")
  m = width / base_width
  per = lambda field: jax.tree.map(lambda k: float(m ** getattr(table[k], field)), kinds)
  return Plan(name, optimizer, m, kinds, per("init"), per("multiplier"), per("learning_rate"))


def scale_init(params: Any, p: Plan) -> Any:
  """The initializer map: parameters drawn as SP (He/Xavier at the actual fans), rescaled."""
  return jax.tree.map(lambda x, s: x * jnp.asarray(s, x.dtype), params, p.init_scale)


def effective(params: Any, p: Plan) -> Any:
  """The parameters the forward pass uses: the stored ones times their forward multiplier."""
  return jax.tree.map(lambda x, s: x * jnp.asarray(s, x.dtype), params, p.multiplier)


def scale_updates(lr_scale: Any) -> optax.GradientTransformation:
  """An optax transformation multiplying each leaf's update by its learning-rate multiplier
  (a pytree of floats like the parameters); chain it after any optimizer."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, lr_scale), state

  return optax.GradientTransformation(init_fn, update_fn)


def optimizer(name: str, learning_rate, p: Plan) -> optax.GradientTransformation:
  """The optimizer `name` (`initjax.optimizers`) with the plan's per-leaf learning rates."""
  return optax.chain(get_optimizer(name, learning_rate), scale_updates(p.lr_scale))


def absorbed(p: Plan) -> Plan:
  """The same training dynamics without forward multipliers (abc-symmetry, Tensor Programs IV
  Eq. 5): a multiplier m^a moves into the init (b + a) and the learning rate (c + a for
  Adam-like updates, which ignore the gradient's scale up to epsilon; c + 2a for SGD-like)."""
  lr_power = 1.0 if optimizer_family(p.optimizer) == "adam" else 2.0
  return dataclasses.replace(
      p, init_scale=jax.tree.map(lambda i, a: i * a, p.init_scale, p.multiplier),
      lr_scale=jax.tree.map(lambda c, a: c * a ** lr_power, p.lr_scale, p.multiplier),
      multiplier=jax.tree.map(lambda a: 1.0, p.multiplier))
