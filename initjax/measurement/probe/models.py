"""What counts as a layer in the models `initjax.probe` measures, and how its outputs are taken.

The models themselves are made pure by `initjax.nn.adapters` (linen, nnx, Equinox, pure
functions, with their state); this module adds the recording:

  * `flax.linen.Module`: every call of a submodule's `__call__` (other methods and plain
    functions such as `nn.relu` are not layers), found with `flax.linen.intercept_methods`; named
    by its Flax path, "Dense_3", "Block_2/Conv_0". A submodule called again (weights shared)
    gives "name#2", ... Outputs that are not one floating-point array (tuples, integers) are
    not recorded, except an RNN cell's (carry, y): its new hidden state y is, at every time
    step when the cell runs inside `nn.RNN` / `nn.scan`. The top-level module is a layer only
    when it has no submodule calls (then it is named after its class).
  * `flax.nnx.Module` and Equinox models: every call of a submodule's `__call__`, named by its
    attribute path ("linear1", "layers/0"); same rules. The merged copy's submodules get a
    subclass whose `__call__` records: the user's module objects and classes are never changed.
  * a pair `(init_fn, apply_fn)`: every `initjax.probe.tap`; with no taps, the output is the one
    layer, "output".

A layer's input is the first floating-point array argument of its call (an RNN cell's: the
hidden state it is given); taps have none. A module whose output is exactly the output of a
layer recorded before it (a wrapper returning its last submodule's output, a Dropout that does
nothing) is not a layer of its own: it is listed in the result's "aliases".
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Callable

import jax

from initjax.measurement.probe.recorder import ProbeError, active_recorder, is_layer_output
from initjax.nn.adapters import Adapter


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
  """One adapted model with recording. `apply(params, state, x, rng, include_top) -> out`."""
  adapter: Adapter
  apply: Callable[..., Any]

  @property
  def kind(self) -> str:
    return self.adapter.kind

  @property
  def label(self) -> str:
    return self.adapter.label


def _cell_kind(module: Any) -> str | None:
  """"flax" for a Flax RNN cell (called with (carry, x), returns (carry, y)), "eqx_lstm" for
  Equinox's LSTMCell (returns (h, c)), None otherwise."""
  for c in type(module).__mro__:
    if c.__name__ == "RNNCellBase" and c.__module__.startswith("flax"):
      return "flax"
  if type(module).__name__ == "LSTMCell" and type(module).__module__.startswith("equinox"):
    return "eqx_lstm"
  return None


def _with_input(recorder, name: str, args: tuple, cell: str | None) -> tuple:
  """`args` with the layer's input recorded (and offset)."""
  if cell == "flax" and args and isinstance(args[0], tuple) and args[0]:
    carry = args[0]
    return ((carry[:-1] + (recorder.record_input(name, carry[-1]),)),) + tuple(args[1:])
  for i, a in enumerate(args):
    if is_layer_output(a):
      return args[:i] + (recorder.record_input(name, a),) + args[i + 1:]
  return args


def _with_output(recorder, name: str, out: Any, cell: str | None) -> Any:
  """`out` with the layer's output recorded (and offset), or unchanged if it has none."""
  if is_layer_output(out):
    return recorder.record(name, out, claimed=True)
  pick = {"flax": 1, "eqx_lstm": 0}.get(cell)
  if pick is not None and isinstance(out, tuple) and len(out) == 2 and is_layer_output(out[pick]):
    hidden = out[pick]
    recorded = recorder.record(name, hidden, claimed=True)
    swap = lambda v: recorded if v is hidden else v  # pylint: disable=unnecessary-lambda-assignment
    return tuple(jax.tree.map(swap, part) if i != pick else recorded
                 for i, part in enumerate(out))
  recorder.drop_input(name)
  return out


def _layer_call(name: str, module: Any, call: Callable, args: tuple, kwargs: dict) -> Any:
  recorder = active_recorder()
  if recorder is None or not recorder.here():
    return call(*args, **kwargs)
  name = recorder.claim(name, repeat_ok=True)
  cell = _cell_kind(module)
  args = _with_input(recorder, name, tuple(args), cell)
  return _with_output(recorder, name, call(*args, **kwargs), cell)


# ------------------------------------------------------------------------------------------------
# flax.linen

def _linen(adapter: Adapter, train: bool | None) -> Model:
  import flax.linen as nn  # pylint: disable=import-outside-toplevel

  def apply(params, state, x, rng, include_top):
    def interceptor(next_fun, args, kwargs, context):
      if context.method_name != "__call__":
        return next_fun(*args, **kwargs)
      path = tuple(context.module.path)
      if not path and not include_top:
        return next_fun(*args, **kwargs)
      name = "/".join(path) if path else type(context.module).__name__
      return _layer_call(name, context.module, next_fun, args, kwargs)

    with nn.intercept_methods(interceptor):
      out, _ = adapter.apply(params, state, x, rng=rng, train=train)
    return out

  return Model(adapter, apply)


# ------------------------------------------------------------------------------------------------
# flax.nnx and Equinox: submodules' classes swapped on the merged copy.

_TAPPED_CLASSES: "weakref.WeakKeyDictionary[type, type]" = weakref.WeakKeyDictionary()


def _tapped_class(cls: type) -> type:
  """A subclass of module class `cls` whose `__call__` records its output (one per class)."""
  tapped = _TAPPED_CLASSES.get(cls)
  if tapped is None:
    def __call__(self, *args, **kwargs):
      recorder = active_recorder()
      name = recorder.module_names.get(id(self)) if recorder is not None else None
      if name is None:
        return cls.__call__(self, *args, **kwargs)
      return _layer_call(name, self, lambda *a, **k: cls.__call__(self, *a, **k), args, kwargs)

    tapped = type(cls)(cls.__name__, (cls,), {"__call__": __call__,
                                               "__module__": cls.__module__,
                                               "__qualname__": cls.__qualname__})
    _TAPPED_CLASSES[cls] = tapped
  return tapped


def _defines_call(cls: type) -> bool:
  return any("__call__" in vars(c) for c in cls.__mro__ if c is not object)


def _submodules(kind: str, module: Any) -> list[tuple[tuple, Any]]:
  if kind == "nnx":
    from flax import nnx  # pylint: disable=import-outside-toplevel
    return [(tuple(str(p) for p in path), sub) for path, sub in nnx.iter_modules(module)]
  import equinox as eqx  # pylint: disable=import-outside-toplevel
  found: list[tuple[tuple, Any]] = []

  def walk(obj, path):
    if isinstance(obj, eqx.Module):
      found.append((path, obj))
      for field in dataclasses.fields(obj):
        walk(getattr(obj, field.name, None), path + (field.name,))
    elif isinstance(obj, (list, tuple)):
      for i, item in enumerate(obj):
        walk(item, path + (str(i),))
  walk(module, ())
  return found


def _swapping(adapter: Adapter, train: bool | None) -> Model:
  def apply(params, state, x, rng, include_top):
    def hook(module):
      recorder = active_recorder()
      for path, sub in _submodules(adapter.kind, module):
        if (path or include_top) and _defines_call(type(sub)):
          name = "/".join(path) if path else type(sub).__name__
          if recorder is not None:
            recorder.module_names[id(sub)] = name
          object.__setattr__(sub, "__class__", _tapped_class(type(sub)))
      return module

    out, _ = adapter.apply(params, state, x, rng=rng, train=train, hook=hook)
    return out

  return Model(adapter, apply)


# ------------------------------------------------------------------------------------------------
# Pure functions

def _pure(adapter: Adapter, train: bool | None) -> Model:
  def apply(params, state, x, rng, include_top):
    out, _ = adapter.apply(params, state, x, rng=rng, train=train)
    if include_top:
      recorder = active_recorder()
      if not is_layer_output(out):
        raise ProbeError(f"{adapter.label} has no tap(...) calls and its output is not one "
                         "floating-point array, so it has no layer to measure")
      out = recorder.record("output", out) if recorder is not None else out
    return out

  return Model(adapter, apply)


def recording_model(adapter: Adapter, train: bool | None = None) -> Model:
  """The adapted model with every layer recorded as this module's docstring says, run in
  `train` mode (None: as the model was built)."""
  if adapter.kind == "linen":
    return _linen(adapter, train)
  if adapter.kind in ("nnx", "equinox"):
    return _swapping(adapter, train)
  return _pure(adapter, train)
