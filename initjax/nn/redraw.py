"""Redrawing a model's kernels and biases with initjax initializers, whatever the model.

A model's parameters are a pytree; each leaf is a `Leaf` with a path name ("params/Dense_0/kernel",
"layers/0/weight"), a role and, for kernels, the `KernelAxes` its layer contracts
(`initjax.nn.layer_axes`: the layer's own rule; `fan_axes` declared by the user; or, where
neither is known, jax.nn.initializers' reading of the raw shape (..., in, out), which
`Redraw.assumed` lists so that the caller can say so). Roles: "kernel" and "bias" are redrawn;
"scale" (norm layers), "embedding" (lookup tables: no fans) and everything else keep the
model's own draw.

What draws a leaf (`plan`):
  * `weight_init` / `bias_init`: an initializer (a registry name or `init(key, shape, dtype)`)
    for every kernel / bias, or a mapping {path pattern: initializer} (fnmatch patterns, the
    first that matches wins, e.g. {"*/recurrent_kernel": "orthogonal", "*": "he_normal"});
    unmatched leaves keep the model's draw, and a pattern that matches no kernel (bias) is an
    error naming the paths there are. With `weight_init` and no `bias_init`, the biases of the
    layers whose kernel is redrawn are zeros (the setting of He's and Xavier's derivations).
  * a list of `weight_init`s to compare (None = the model's own draws): one compiled program
    draws them all. Every leaf is drawn as "unit distribution x standard deviation" where the
    initializer is of a `initializers.family` (He, Xavier, LeCun, normal: normal; the uniform and
    truncated ones): initializers of one family differ only in data, so He vs Xavier vs LeCun
    vs the model's default is one program (and one compile), not four.

Each leaf's key is the seed's key folded with a CRC-32 of its path, so a draw does not depend on
the order or number of the other leaves. A kernel is drawn with `kernel_axes.draw`: the
initializer sees the canonical shape (*window, prod(in), prod(out)) and so reads the layer's
fans, whatever the kernel's layout.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import functools
import math
import zlib
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initjax.core.errors import ModelError, check_choice
from initjax.nn import initializers, kernel_axes
from initjax.nn.kernel_axes import KernelAxes

KERNEL_NAMES = ("kernel", "w", "weight")
BIAS_NAMES = ("bias", "b")
ROLES = ("kernel", "bias", "scale", "embedding")


class RedrawError(ModelError):
  """An initializer, pattern or axis declaration that cannot apply; the message is one line."""


def first_line(error: BaseException) -> str:
  """The first non-empty line of an exception's message (JAX's errors run to many lines)."""
  for line in str(error).splitlines():
    if line.strip():
      return f"{type(error).__name__}: {line.strip()}"
  return type(error).__name__


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One parameter leaf: what it is and, for a kernel, what it contracts."""
  name: str
  shape: tuple[int, ...]
  dtype: Any
  role: str | None
  layer: str = ""
  axes: KernelAxes | None = None
  axes_from: str = ""            # the layer class whose rule gave the axes, "declared", "assumed"

  @property
  def fans(self) -> tuple[int, int] | None:
    return kernel_axes.fans(self.shape, self.axes) if self.axes is not None else None


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_name(path: tuple, prefix: str = "") -> str:
  """"a/b/c" for a pytree key path; the trailing `value` of an nnx Variable is dropped."""
  parts = [_key_name(k) for k in path]
  if len(parts) > 1 and isinstance(path[-1], jax.tree_util.GetAttrKey) and parts[-1] == "value":
    parts = parts[:-1]
  return prefix + "/".join(parts)


def leaves_by_name(params: Any, prefix: str = "", rule: Callable | None = None) -> list[Leaf]:
  """A `Leaf` for every leaf of `params` (arrays or ShapeDtypeStructs), in tree order.

  rule(name, leaf) -> (layer_axes.LeafRule, layer class name) or None: the leaf's layer's own
  rule. Without
  one, a floating-point leaf named like a bias is a bias and one named like a kernel (or, with
  `prefix` "" for pure functions, any of rank >= 2) is a kernel of assumed layout (..., in, out).
  """
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = path_name(path, prefix)
    shape, dtype = tuple(leaf.shape), leaf.dtype
    layer, _, attribute = name.rpartition("/")
    found, owner = rule(name, leaf) if rule is not None else (None, "")
    role, axes, axes_from = None, None, ""
    if not jnp.issubdtype(dtype, jnp.floating):
      pass
    elif found is not None and found.role is not None:
      role, axes = found.role, found.axes
      axes_from = owner if axes is not None else ""
    elif attribute in BIAS_NAMES:
      role = "bias"
    elif len(shape) >= 2 and (attribute in KERNEL_NAMES or (rule is None and not prefix)):
      role, axes, axes_from = "kernel", kernel_axes.flax_layout(len(shape)), "assumed"
    if role == "kernel":
      try:
        axes = axes.resolve(shape)
      except ValueError as e:
        raise RedrawError(f"{name}: {e}") from None
    out.append(Leaf(name, shape, dtype, role, layer, axes, axes_from))
  return out


def _matches(pattern: str, name: str) -> bool:
  return fnmatch.fnmatchcase(name, pattern)


def declare_axes(leaves: list[Leaf], fan_axes: Mapping[str, Any] | None) -> list[Leaf]:
  """Leaves with the user's declared kernel axes {pattern: KernelAxes | layout | (in, out)};
  a leaf that matches becomes a kernel. RedrawError for a pattern matching no leaf or axes out
  of range."""
  if not fan_axes:
    return leaves
  if not isinstance(fan_axes, Mapping):
    raise RedrawError(f"fan_axes must be a mapping {{path pattern: axes}}; got {fan_axes!r}")
  out = list(leaves)
  for pattern, spec in fan_axes.items():
    hits = [i for i, leaf in enumerate(out) if _matches(pattern, leaf.name)]
    if not hits:
      raise RedrawError(f"fan_axes pattern {pattern!r} matches no parameter; the parameters "
                        f"are: {', '.join(leaf.name for leaf in leaves)}")
    for i in hits:
      leaf = out[i]
      try:
        axes = kernel_axes.parse(spec, len(leaf.shape)).resolve(leaf.shape)
      except ValueError as e:
        raise RedrawError(f"fan_axes[{pattern!r}] for {leaf.name}: {e}") from None
      out[i] = dataclasses.replace(leaf, role="kernel", axes=axes, axes_from="declared")
  return out


# ------------------------------------------------------------------------------------------------
# Initializers: names, callables, mappings, lists.

@dataclasses.dataclass(frozen=True)
class Draw:
  """How one leaf is drawn in one comparison: the program's draw `kind` (a family name in
  `initializers.DISTRIBUTIONS` or an initializer callable; None keeps the model's draw), and the
  standard deviation a family's unit draw is multiplied by."""
  kind: Any = None
  std: float = 1.0
  label: str = "model"
  variance: float | None = None   # what the initializer intends (None: unknown)


def _label(init: Any) -> str:
  if isinstance(init, str):
    return init
  return getattr(init, "__name__", None) or type(init).__name__


def _draw_for(init: Any, leaf: Leaf, what: str) -> Draw:
  """The `Draw` of initializer `init` (name or callable) for `leaf`."""
  shape = (kernel_axes.canonical_shape(leaf.shape, leaf.axes) if leaf.role == "kernel"
           else leaf.shape)
  if isinstance(init, str):
    try:
      fam = initializers.family(init)
      variance = initializers.expected_variance(init, shape)
    except ValueError as e:
      raise RedrawError(f"{what} cannot draw {leaf.name!r} of shape {leaf.shape}: "
                        f"{first_line(e)}") from None
    if fam is not None and not jnp.issubdtype(leaf.dtype, jnp.complexfloating):
      return Draw(fam, math.sqrt(variance), init, variance)
    return Draw(_named(init), 1.0, init, variance)
  if callable(init):
    return Draw(init, 1.0, _label(init), None)
  raise RedrawError(f"{what} must be an initjax initializer name or init(key, shape, dtype); "
                    f"got {init!r}")


@functools.lru_cache(maxsize=None)
def _named(name: str) -> Callable:
  """One initializer object per registry name, so that programs keyed by it are reused."""
  return initializers.get_initializer(name)


def _check_spec(spec: Any, what: str) -> None:
  inits = spec.values() if isinstance(spec, Mapping) else [spec]
  for init in inits:
    if init is not None and not isinstance(init, str) and not callable(init):
      raise RedrawError(f"{what} must be an initjax initializer name or init(key, shape, "
                        f"dtype), or a mapping {{path pattern: initializer}}; got {init!r}")
    if isinstance(init, str):
      check_choice("initializer", init, initializers.initializer_names())


def _assign(spec: Any, leaves: list[Leaf], role: str, what: str) -> dict[str, Any]:
  """{leaf name: initializer} for the leaves of `role` that `spec` draws (one init or a map)."""
  targets = [leaf for leaf in leaves if leaf.role == role]
  _check_spec(spec, what)
  if spec is None:
    return {}
  if not isinstance(spec, Mapping):
    if not targets:
      raise RedrawError(f"{what} is given but the model has no {role} parameters (the "
                        f"parameters are: {', '.join(leaf.name for leaf in leaves)})")
    return {leaf.name: spec for leaf in targets}
  chosen: dict[str, Any] = {}
  for pattern, init in spec.items():
    hits = [leaf.name for leaf in targets if _matches(pattern, leaf.name)]
    if not hits:
      others = [leaf.name for leaf in leaves if _matches(pattern, leaf.name)]
      seen = f" (it matches {', '.join(others)}, which are not {role}s)" if others else ""
      raise RedrawError(f"{what} pattern {pattern!r} matches no {role}{seen}; the {role}s are: "
                        f"{', '.join(leaf.name for leaf in targets) or '(none)'}")
    for name in hits:
      chosen.setdefault(name, init)
  return chosen


@dataclasses.dataclass(frozen=True, eq=False)
class Redraw:
  """What a program draws for every leaf: the static part (`kinds`, hashable) and the data.

  kinds: per leaf, the draw kinds the program computes besides the model's own draw.
  select_CxL: per comparison and leaf, 0 (the model's draw) or 1 + the index into kinds.
  std_CxL: the multiplier of that draw.
  draws: per comparison, {leaf name: Draw} of the leaves it redraws.
  """
  leaves: tuple[Leaf, ...]
  kinds: tuple[tuple[Any, ...], ...]
  select_CxL: np.ndarray
  std_CxL: np.ndarray
  draws: tuple[dict[str, Draw], ...]
  labels: tuple[str, ...]

  @property
  def static(self) -> tuple:
    """What the compiled program depends on (hashable): the leaves, their draw kinds and
    whether some comparison keeps the model's own draw of each (where none does, the program
    does not compute it: XLA drops the model's own random draw of that leaf)."""
    keeps = tuple(bool(np.any(self.select_CxL[:, i] == 0)) for i in range(len(self.leaves)))
    return self.leaves, self.kinds, keeps

  @property
  def assumed(self) -> list[str]:
    """Kernels redrawn with fan axes read from their raw shape, not known from their layer."""
    names = {n for d in self.draws for n in d}
    return [leaf.name for leaf in self.leaves if leaf.axes_from == "assumed" and leaf.name in names]

  def redrawn(self, role: str) -> tuple[str, ...]:
    names = {n for d in self.draws for n in d}
    return tuple(leaf.name for leaf in self.leaves if leaf.role == role and leaf.name in names)


def plan(leaves: Sequence[Leaf], weight_init: Any = None, bias_init: Any = None) -> Redraw:
  """The `Redraw` of `weight_init` (one spec, or a list of specs to compare) and `bias_init`."""
  leaves = tuple(leaves)
  specs = list(weight_init) if isinstance(weight_init, (list, tuple)) else [weight_init]
  if not specs:
    raise RedrawError("weight_init is an empty list; give at least one initializer (or None)")
  by_leaf = {leaf.name: leaf for leaf in leaves}
  draws, labels = [], []
  for spec in specs:
    chosen = _assign(spec, leaves, "kernel", "weight_init")
    biases = _assign(bias_init, leaves, "bias", "bias_init")
    if spec is not None and bias_init is None:
      layers = {by_leaf[n].layer for n in chosen}
      biases = {leaf.name: "zeros" for leaf in leaves
                if leaf.role == "bias" and leaf.layer in layers}
    d = {}
    for name, init in {**chosen, **biases}.items():
      what = "weight_init" if name in chosen else "bias_init"
      d[name] = _draw_for(init, by_leaf[name], what)
    draws.append(d)
    labels.append("model" if spec is None else
                  _label(spec) if not isinstance(spec, Mapping) else
                  ",".join(f"{k}={_label(v)}" for k, v in spec.items()))
  kinds = []
  select = np.zeros((len(specs), len(leaves)), np.int32)
  std = np.ones((len(specs), len(leaves)), np.float64)
  for i, leaf in enumerate(leaves):
    mine: list[Any] = []
    for c, d in enumerate(draws):
      if leaf.name in d:
        kind = d[leaf.name].kind
        if kind not in mine:
          mine.append(kind)
        select[c, i] = 1 + mine.index(kind)
        std[c, i] = d[leaf.name].std
    kinds.append(tuple(mine))
  return Redraw(leaves, tuple(kinds), select, std, tuple(draws), tuple(labels))


def leaf_key(key: jax.Array, name: str) -> jax.Array:
  """The key of the leaf `name`: `key` folded with the CRC-32 of its name."""
  return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def _unit(family: str) -> Callable:
  def init(key, shape, dtype):
    if family == "normal":
      return jax.random.normal(key, shape, dtype)
    if family == "truncated_normal":
      return (jax.random.truncated_normal(key, -2, 2, shape, dtype)
              / jnp.asarray(initializers.TRUNCATED_NORMAL_STD, dtype))
    return jax.random.uniform(key, shape, dtype, -1) * jnp.sqrt(jnp.asarray(3.0, dtype))
  return init


def _draw_kind(kind: Any, key: jax.Array, leaf: Leaf) -> jax.Array:
  init = _unit(kind) if isinstance(kind, str) else kind
  if leaf.role == "kernel":
    return kernel_axes.draw(init, key, leaf.shape, leaf.dtype, leaf.axes)
  return init(key, leaf.shape, leaf.dtype)


def check(redraw: Redraw) -> None:
  """Draws every redrawn leaf abstractly: one RedrawError for an initializer that cannot draw a
  leaf's shape, or draws another shape or dtype."""
  for leaf, kinds in zip(redraw.leaves, redraw.kinds):
    for kind in kinds:
      label = next(d[leaf.name].label for d in redraw.draws if leaf.name in d
                   and d[leaf.name].kind == kind)
      what = "weight_init" if leaf.role == "kernel" else "bias_init"
      try:
        drawn = jax.eval_shape(lambda k, kind=kind, leaf=leaf: _draw_kind(kind, k, leaf),
                               jax.random.key(0))
      except Exception as e:  # pylint: disable=broad-except
        raise RedrawError(f"{what} cannot draw {leaf.name!r} of shape {leaf.shape} ({label}): "
                          f"{first_line(e)}") from None
      if tuple(drawn.shape) != leaf.shape or drawn.dtype != leaf.dtype:
        raise RedrawError(f"{what} drew {drawn.dtype}{list(drawn.shape)} for {leaf.name!r}, "
                          f"which is {leaf.dtype}{list(leaf.shape)} ({label})")


def apply(static: tuple, params: Any, key: jax.Array, select_L: jax.Array, std_L: jax.Array,
          scale: Any = 1.0, prefix: str = "") -> Any:
  """`params` with every leaf drawn as comparison row (select_L, std_L) says, then every kernel
  multiplied by sqrt(scale). `static` is `Redraw.static` (the leaves and their draw kinds): the
  program depends only on it, while select_L, std_L and scale may be traced."""
  leaves, all_kinds, keeps = static
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  if len(flat) != len(leaves):
    raise RedrawError(f"the model has {len(flat)} parameter leaves, the plan {len(leaves)}")
  out = []
  for i, ((path, own), leaf) in enumerate(zip(flat, leaves)):
    if path_name(path, prefix) != leaf.name:
      raise RedrawError(f"parameter {path_name(path, prefix)!r} is not {leaf.name!r} of the plan")
    value = own
    if all_kinds[i]:
      k = leaf_key(key, leaf.name)
      drawn = [_draw_kind(kind, k, leaf) for kind in all_kinds[i]]
      if keeps[i]:
        value = jnp.stack([own] + drawn)[select_L[i]]
      elif len(drawn) == 1:
        value = drawn[0]
      else:
        value = jnp.stack(drawn)[select_L[i] - 1]
      value = value * jnp.asarray(std_L[i], own.dtype)
    if leaf.role == "kernel":
      value = value * jnp.sqrt(jnp.asarray(scale, own.dtype))
    out.append(value)
  return jax.tree_util.tree_unflatten(treedef, out)


def describe(redraw: Redraw, params_C: Sequence[Any], prefix: str = "") -> list[dict]:
  """Tidy rows, one per comparison and kernel or bias: its layer, shape, fans and where the axes
  came from, the initializer, the variance it intends and the one drawn (`params_C`: one drawn
  network per comparison)."""
  rows = []
  for c, params in enumerate(params_C):
    flat = {path_name(p, prefix): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    for leaf in redraw.leaves:
      if leaf.role not in ("kernel", "bias"):
        continue
      d = redraw.draws[c].get(leaf.name)
      fans = leaf.fans
      rows.append({"init": redraw.labels[c], "parameter": leaf.name, "role": leaf.role,
                   "layer": leaf.layer, "shape": leaf.shape,
                   "fan_in": fans[0] if fans else None, "fan_out": fans[1] if fans else None,
                   "axes_from": leaf.axes_from, "drawn_by": d.label if d else "model",
                   "intended_variance": d.variance if d else None,
                   "variance": float(np.var(flat[leaf.name]))})
  return rows
