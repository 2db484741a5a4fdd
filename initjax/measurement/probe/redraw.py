"""Redrawing a model's kernels and biases with initjax initializers, whatever the model.

Which parameters are kernels and biases (by the last name in their pytree path):
  * kernel: named `kernel`, `w` or `weight` (Flax's Dense/Conv/Linear call theirs `kernel`);
    for pure-function models also any other floating-point leaf of rank >= 2 not named like a
    bias. Kernels are in Flax's layout, (..., in, out), so the initializer's fans are right:
    a conv kernel (w, c_in, c_out) has fan_in = w * c_in.
  * bias: named `bias` or `b` (Flax's norm layers' shifts are called `bias` too).
  * everything else (norm scales, embeddings, batch statistics) stays as the model drew it.
For a linen model only the "params" collection is looked at.

Each leaf's key is the seed's key folded with a CRC-32 of its path ("params/Dense_0/kernel"),
so a draw does not depend on the order or number of the other leaves. `weight_scale` multiplies
every kernel by sqrt(scale), drawn here or by the model: the variance is multiplied by scale,
and the scale is data in the compiled program, not part of it.
"""
from __future__ import annotations

import zlib
from typing import Any, Callable

import jax
import jax.numpy as jnp

from initjax.measurement.probe.recorder import ProbeError, first_line

KERNEL_NAMES = ("kernel", "w", "weight")
BIAS_NAMES = ("bias", "b")


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_name(path: tuple) -> str:
  """"a/b/c" for a pytree key path; the trailing `value` of an nnx Variable is dropped."""
  parts = [_key_name(k) for k in path]
  if len(parts) > 1 and isinstance(path[-1], jax.tree_util.GetAttrKey) and parts[-1] == "value":
    parts = parts[:-1]
  return "/".join(parts)


def _role(kind: str, name: str, leaf: Any) -> str | None:
  parts = name.split("/")
  if kind == "linen" and parts[0] != "params":
    return None
  if not jnp.issubdtype(leaf.dtype, jnp.floating):
    return None
  last = parts[-1]
  if last in KERNEL_NAMES:
    return "kernel"
  if last in BIAS_NAMES:
    return "bias"
  if kind == "pure" and len(leaf.shape) >= 2:
    return "kernel"
  return None


def param_roles(kind: str, params: Any) -> dict[str, str]:
  """{path name: "kernel" | "bias"} for the leaves of `params` (arrays or ShapeDtypeStructs)."""
  roles = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = path_name(path)
    role = _role(kind, name, leaf)
    if role:
      roles[name] = role
  return roles


def leaf_key(key: jax.Array, name: str) -> jax.Array:
  """The key of the leaf `name`: `key` folded with the CRC-32 of its name."""
  return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def resolve_init(init: str | Callable | None, what: str) -> Callable | None:
  """A registered initializer name or an `init(key, shape, dtype)` -> the callable."""
  if init is None or callable(init):
    return init
  if isinstance(init, str):
    from initjax.nn.initializers import get_initializer  # pylint: disable=import-outside-toplevel
    return get_initializer(init)
  raise ProbeError(f"{what} must be an initjax initializer name or init(key, shape, dtype); "
                   f"got {init!r}")


def check_draws(abstract_params: Any, roles: dict[str, str], weight_init: Callable | None,
                bias_init: Callable | None) -> None:
  """Draws every redrawn leaf abstractly (`jax.eval_shape`): one clear error for an
  initializer that cannot draw a leaf's shape, or draws another shape or dtype."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
    name = path_name(path)
    init = {"kernel": weight_init, "bias": bias_init}.get(roles.get(name))
    if init is None:
      continue
    what = "weight_init" if roles[name] == "kernel" else "bias_init"
    try:
      drawn = jax.eval_shape(lambda k, init=init, leaf=leaf: init(k, leaf.shape, leaf.dtype),
                             jax.random.key(0))
    except Exception as e:  # pylint: disable=broad-except
      raise ProbeError(f"{what} cannot draw {name!r} of shape {tuple(leaf.shape)}: "
                       f"{first_line(e)}") from e
    if tuple(drawn.shape) != tuple(leaf.shape) or drawn.dtype != leaf.dtype:
      raise ProbeError(f"{what} drew {drawn.dtype}{list(drawn.shape)} for {name!r}, which is "
                       f"{leaf.dtype}{list(leaf.shape)}")


def redraw(params: Any, key: jax.Array, roles: dict[str, str], weight_init: Callable | None,
           bias_init: Callable | None, scale: Any) -> Any:
  """`params` with kernels drawn by `weight_init` and biases by `bias_init` (each when not
  None), every kernel then multiplied by sqrt(scale)."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  out = []
  for path, leaf in leaves:
    name = path_name(path)
    role = roles.get(name)
    init = {"kernel": weight_init, "bias": bias_init}.get(role)
    if init is not None:
      leaf = init(leaf_key(key, name), leaf.shape, leaf.dtype)
    if role == "kernel":
      leaf = leaf * jnp.sqrt(jnp.asarray(scale, leaf.dtype))
    out.append(leaf)
  return jax.tree_util.tree_unflatten(treedef, out)
