"""The three kinds of model `initjax.probe` measures, each turned into two pure functions.

  init(key, x) -> params        a plain pytree: linen variables, an nnx State, the user's params
  apply(params, x, include_top) -> out, every layer output recorded (`recorder.Recorder`)

What counts as a layer:
  * `flax.linen.Module`: every call of a submodule's `__call__` (other methods and plain
    functions such as `nn.relu` are not layers), found with `flax.linen.intercept_methods`; named
    by its Flax path, "Dense_3", "Block_2/Conv_0". A submodule called again (weights shared)
    gives "name#2", ... Outputs that are not one floating-point array (tuples, integers) are
    not recorded. The top-level module is a layer only when it has no submodule calls (then it is
    named after its class). It is called as `module.apply(variables, x, mutable=True)` and
    initialized as `module.init({"params": key}, x)`.
  * `flax.nnx.Module`: given as a class (called as `cls(rngs=nnx.Rngs(key))`) or a factory
    `rngs -> module`; made pure with `nnx.split` / `nnx.merge`. Every call of a submodule's
    `__call__`, named by its attribute path ("linear1", "layers/0"); same rules as linen. The
    merged copy's submodules get a subclass whose `__call__` records the output: the user's
    module objects and classes are never changed.
  * a pair `(init_fn(key) -> params, apply_fn(params, x) -> out)`: every `initjax.probe.tap`;
    with no taps, the output is the one layer, "output".
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Callable

import flax.linen as nn
import jax
from flax import nnx

from initjax.measurement.probe.recorder import ProbeError, active_recorder, is_layer_output

KINDS = ("linen", "nnx", "pure")


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
  """One model made pure. `kind` in KINDS; `label` names it in error messages."""
  kind: str
  label: str
  init: Callable[[Any, Any], Any]
  apply: Callable[[Any, Any, bool], Any]


def _record_module_output(name: str, out: Any) -> Any:
  recorder = active_recorder()
  if recorder is None or not is_layer_output(out):
    return out
  return recorder.record(name, out, repeat_ok=True)


# ------------------------------------------------------------------------------------------------
# flax.linen

def _linen(module: nn.Module) -> Model:
  def init(key, x):
    return module.init({"params": key}, x)

  def apply(variables, x, include_top):
    def interceptor(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name != "__call__":
        return out
      path = tuple(context.module.path)
      if not path and not include_top:
        return out
      name = "/".join(path) if path else type(context.module).__name__
      return _record_module_output(name, out)

    with nn.intercept_methods(interceptor):
      out, _ = module.apply(variables, x, mutable=True)
    return out

  return Model("linen", f"flax.linen module {type(module).__name__}", init, apply)


# ------------------------------------------------------------------------------------------------
# flax.nnx

_TAPPED_CLASSES: "weakref.WeakKeyDictionary[type, type]" = weakref.WeakKeyDictionary()


def _tapped_class(cls: type) -> type:
  """A subclass of nnx module class `cls` whose `__call__` records its output (one per class)."""
  tapped = _TAPPED_CLASSES.get(cls)
  if tapped is None:
    def __call__(self, *args, **kwargs):
      out = cls.__call__(self, *args, **kwargs)
      recorder = active_recorder()
      name = recorder.module_names.get(id(self)) if recorder is not None else None
      return out if name is None else _record_module_output(name, out)

    tapped = type(cls)(cls.__name__, (cls,), {"__call__": __call__,
                                               "__module__": cls.__module__,
                                               "__qualname__": cls.__qualname__})
    _TAPPED_CLASSES[cls] = tapped
  return tapped


def _defines_call(cls: type) -> bool:
  return any("__call__" in vars(c) for c in cls.__mro__ if c is not object)


def _nnx(make: Callable[[nnx.Rngs], nnx.Module], label: str) -> Model:
  graphdef_box: list[Any] = []

  def build(key):
    module = make(nnx.Rngs(key))
    if not isinstance(module, nnx.Module):
      raise ProbeError(f"{label} returned {type(module).__name__}, not a flax.nnx.Module")
    graphdef, state = nnx.split(module)
    if not graphdef_box:
      graphdef_box.append(graphdef)
    return state

  def apply(state, x, include_top):
    if not graphdef_box:
      raise ProbeError(f"{label}: apply before init")
    # Fresh Variables, owned by the current trace (nnx refuses to update, e.g. batch statistics,
    # Variables created under another one, such as the params closed over by jax.grad).
    module = nnx.merge(graphdef_box[0], jax.tree.map(lambda v: v, state))
    recorder = active_recorder()
    for path, sub in nnx.iter_modules(module):
      if (path or include_top) and _defines_call(type(sub)):
        name = "/".join(str(p) for p in path) if path else type(sub).__name__
        if recorder is not None:
          recorder.module_names[id(sub)] = name
        object.__setattr__(sub, "__class__", _tapped_class(type(sub)))
    return module(x)

  return Model("nnx", label, lambda key, x: build(key), apply)


# ------------------------------------------------------------------------------------------------
# Pure functions

def _pure(init_fn: Callable, apply_fn: Callable) -> Model:
  label = f"apply_fn {getattr(apply_fn, '__name__', type(apply_fn).__name__)}"

  def apply(params, x, include_top):
    out = apply_fn(params, x)
    if include_top:
      if not is_layer_output(out):
        raise ProbeError(f"{label} has no tap(...) calls and its output is not one "
                         "floating-point array, so it has no layer to measure")
      recorder = active_recorder()
      out = recorder.record("output", out) if recorder is not None else out
    return out

  return Model("pure", label, lambda key, x: init_fn(key), apply)


def as_model(model: Any) -> Model:
  """The `Model` for a linen module, an nnx class or factory, or an (init_fn, apply_fn) pair."""
  if isinstance(model, nn.Module):
    return _linen(model)
  if isinstance(model, nnx.Module):
    raise ProbeError(f"model is an nnx.Module instance ({type(model).__name__}); pass its class "
                     "or a factory rngs -> module, so that each seed builds its own")
  if isinstance(model, type) and issubclass(model, nnx.Module):
    return _nnx(lambda rngs: model(rngs=rngs), f"nnx class {model.__name__}")
  if isinstance(model, tuple):
    if len(model) != 2 or not all(callable(f) for f in model):
      raise ProbeError("a pure-function model must be a pair (init_fn(key) -> params, "
                       f"apply_fn(params, x) -> out); got a tuple of {len(model)}")
    return _pure(*model)
  if callable(model) and not isinstance(model, type):
    name = getattr(model, "__name__", type(model).__name__)
    return _nnx(model, f"nnx factory {name}")
  raise ProbeError("model must be a flax.linen.Module, a flax.nnx.Module class or factory "
                   f"rngs -> module, or a pair (init_fn, apply_fn); got {type(model).__name__}")
