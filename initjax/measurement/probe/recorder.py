"""Marking layer outputs: `tap(name, value)` and the recorder that `initjax.probe` listens with.

`tap` returns `value` unchanged unless `initjax.probe` is tracing the function that calls it.
While it traces, a `Recorder` is active on this thread: each layer output (a tap, or a Flax /
Equinox submodule's output) is recorded under its name, in forward order, and a zero "offset"
of the same shape is added to it, so that the gradient of the loss with respect to the offset is
exactly dL/d(value). A layer's input is recorded the same way where the adapter knows it (the
first array argument of a submodule call), for the per-layer gains. Nothing is global: the
recorder lives on a per-thread stack for the duration of one trace, and a function that taps
does not know whether it is measured, jitted or vmapped.

Transformations inside the model:
  * `jax.lax.scan` (and so `flax.linen.scan`, `nn.RNN`, `nnx.scan`) and `jax.vmap` (`nn.vmap`,
    `nnx.vmap`, Equinox's per-example vmap): while a probe traces, calls to them on its thread
    go through a recording wrapper that passes each inner layer's offsets in as scanned (or
    batched) inputs and returns the inner outputs as scanned (batched) outputs. An RNN's hidden
    state is then recorded at every time step, with dL/dh_t, and the scan stays a scan: compile
    time does not grow with the sequence length. On other threads, and outside a probe trace,
    the wrappers call JAX's own functions unchanged; they are installed only while a probe
    traces.
  * any other transformation (a `jax.jit` inside the model, a scan reached through a name bound
    before the probe ran): a layer inside it cannot be recorded, so it is not (the recorder
    sees that the value belongs to another trace); the enclosing layer is recorded as one.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, Iterator

import jax
import jax.numpy as jnp
from jax.extend.core import get_opaque_trace_state

from initjax.core.errors import ModelError
from initjax.nn.redraw import first_line  # noqa: F401 (part of this module's interface)

__all__ = ["ProbeError", "Recorder", "tap", "recording", "active_recorder", "first_line"]

INPUT = ":in"       # suffix of a layer's input in a recorder's keys


class ProbeError(ModelError):
  """A model or argument that `initjax.probe` cannot measure; the message is one line."""


def is_layer_output(value: Any) -> bool:
  """Whether `value` can be a layer output: one real floating-point array (or tracer)."""
  return isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jnp.floating)


class Recorder:
  """The layer outputs (and inputs) of one forward pass, in the order they are produced.

  offsets: None (discover names and shapes) or {key: array} added to each recorded value.
  structure: from the discovery pass, for every scan / vmap called in this pass, in order, the
    keys recorded inside it and the structure of its own inner calls.
  module_names: id(module) -> layer name, for the nnx and Equinox adapters' hooks.
  After the pass: `values` {key: value}, `stacked` {key: ((transform, length), ...)} for values
  recorded inside scans / vmaps (leading axes added, outermost first), `aliases` {layer: the
  layer whose output it returned unchanged}, `calls` (the structure found).
  """

  def __init__(self, offsets: dict[str, Any] | None = None, structure: list | None = None):
    self.offsets = offsets
    self.structure = list(structure or [])
    self.values: dict[str, Any] = {}
    self.stacked: dict[str, tuple] = {}
    self.aliases: dict[str, str] = {}
    self.module_names: dict[int, str] = {}
    self.calls: list = []
    self._returned: dict[int, str] = {}
    self._trace = get_opaque_trace_state()

  def here(self) -> bool:
    """Whether the code running now is in this pass's own trace (not inside a transformation
    that the recorder does not know)."""
    return get_opaque_trace_state() == self._trace

  @property
  def outputs(self) -> dict[str, Any]:
    return {k: v for k, v in self.values.items() if not k.endswith(INPUT)}

  def claim(self, name: str, *, repeat_ok: bool = False) -> str:
    """The key layer `name` is recorded under: `name`, or with `repeat_ok` (a Flax submodule
    called again, weights shared) "name#2", "name#3", ...; a tap name seen before is an error."""
    if not isinstance(name, str) or not name or name.endswith(INPUT):
      raise ProbeError(f"tap name must be a non-empty string not ending in {INPUT!r}; got "
                       f"{name!r}")
    if name in self.values or name in self.aliases:
      if not repeat_ok:
        raise ProbeError(f"tap name {name!r} is used twice in one forward pass; give every "
                         "tapped layer its own name")
      k = 2
      while f"{name}#{k}" in self.values or f"{name}#{k}" in self.aliases:
        k += 1
      name = f"{name}#{k}"
    return name

  def _add(self, key: str, value: Any) -> Any:
    if self.offsets is not None:
      if key not in self.offsets:
        raise ProbeError(f"layer {key!r} appeared in a forward pass but not when the layers "
                         "were listed; the model's layers must not depend on values")
      value = value + self.offsets[key].astype(value.dtype)
    self.values[key] = value
    return value

  def record_input(self, name: str, value: Any) -> Any:
    """Records `value` as the input of layer `name` (if it is a floating-point array of this
    trace) and returns it plus its offset."""
    if not self.here() or not is_layer_output(value):
      return value
    if self.offsets is not None and name + INPUT not in self.offsets:
      return value          # not listed: the layer turned out to be an alias
    return self._add(name + INPUT, value)

  def drop_input(self, name: str) -> None:
    self.values.pop(name + INPUT, None)

  def record(self, name: str, value: Any, *, repeat_ok: bool = False,
             claimed: bool = False) -> Any:
    """Records `value` under `name` and returns it plus its offset. A value that is exactly
    an output recorded before (a module returning its last submodule's output) is an alias,
    not a layer of its own; a value of another trace is left alone."""
    if not self.here():
      return value
    if not claimed:
      name = self.claim(name, repeat_ok=repeat_ok)
    if id(value) in self._returned:
      self.aliases[name] = self._returned[id(value)]
      self.drop_input(name)
      return value
    if not is_layer_output(value):
      raise ProbeError(f"tap {name!r}: the value must be a floating-point array; got "
                       f"{type(value).__name__} {getattr(value, 'dtype', '')}".rstrip())
    value = self._add(name, value)
    self._returned[id(value)] = name
    return value

  # Transformations: what a scan / vmap wrapper needs.
  def child(self, offsets: dict | None, structure: list) -> "Recorder":
    """The recorder of a transformation's body (created inside its trace)."""
    child = Recorder(offsets, structure)
    child.module_names = self.module_names
    return child

  def next_call(self) -> tuple[list[str], list]:
    if not self.structure:
      raise ProbeError("the model called a scan or vmap that it did not call when its layers "
                       "were listed; the model's layers must not depend on values")
    return self.structure.pop(0)

  def adopt(self, child: "Recorder", values: dict[str, Any], axis: tuple[str, int]) -> None:
    """The values a child recorder took inside a transformation, now stacked along `axis`."""
    for key, value in values.items():
      if key in self.values or key in self.aliases:
        raise ProbeError(f"layer {key!r} is recorded twice (inside and outside a "
                         "transformation); give it another name")
      self.values[key] = value
      self.stacked[key] = (axis,) + child.stacked.get(key, ())
    self.aliases.update(child.aliases)
    self.calls.append((list(values), child.calls))


_STATE = threading.local()


def _stack() -> list[Recorder]:
  if not hasattr(_STATE, "stack"):
    _STATE.stack = []
  return _STATE.stack


def active_recorder() -> Recorder | None:
  """The recorder of the trace `initjax.probe` is running on this thread, if any."""
  stack = _stack()
  return stack[-1] if stack else None


# ------------------------------------------------------------------------------------------------
# The scan and vmap wrappers, installed while any thread records.

_ORIGINAL = {"scan": jax.lax.scan, "vmap": jax.vmap}
_INSTALLED = [0]
_LOCK = threading.Lock()


def _leading(tree: Any) -> int | None:
  leaves = jax.tree.leaves(tree)
  return int(leaves[0].shape[0]) if leaves else None


def _recording_scan(f, init, xs=None, length=None, *args, **kwargs):
  parent = active_recorder()
  if parent is None or not parent.here():
    return _ORIGINAL["scan"](f, init, xs, length, *args, **kwargs)
  discovering = parent.offsets is None
  keys, inner = ([], []) if discovering else parent.next_call()
  offsets = {} if discovering else {k: parent.offsets[k] for k in keys}
  box = {}

  def body(carry, x_and_offsets):
    x, off = x_and_offsets
    with _frame(parent.child(None if discovering else off, inner)) as child:
      carry, y = f(carry, x)
    box["child"] = child
    return carry, (y, dict(child.values))

  carry, (ys, inside) = _ORIGINAL["scan"](body, init, (xs, offsets), length, *args, **kwargs)
  child = box["child"]
  if not discovering and set(inside) != set(keys):
    raise ProbeError("a scan inside the model records other layers than when its layers were "
                     "listed; the model's layers must not depend on values")
  steps = length if length is not None else _leading(xs)
  parent.adopt(child, inside, ("scan", steps if steps is not None else _leading(inside)))
  return carry, ys


def _recording_vmap(fun, in_axes=0, out_axes=0, *vargs, **vkwargs):
  batched = _ORIGINAL["vmap"](fun, in_axes, out_axes, *vargs, **vkwargs)

  @functools.wraps(fun)
  def call(*args, **kwargs):
    parent = active_recorder()
    if parent is None or not parent.here():
      return batched(*args, **kwargs)
    discovering = parent.offsets is None
    keys, inner = ([], []) if discovering else parent.next_call()
    offsets = {} if discovering else {k: parent.offsets[k] for k in keys}
    axes = tuple(in_axes) if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
    box = {}

    def inner_fun(*args_and_offsets, **kw):
      *a, off = args_and_offsets
      with _frame(parent.child(None if discovering else off, inner)) as child:
        out = fun(*a, **kw)
      box["child"] = child
      return out, dict(child.values)

    out, inside = _ORIGINAL["vmap"](inner_fun, axes + (0,), (out_axes, 0), *vargs, **vkwargs)(
        *args, offsets, **kwargs)
    parent.adopt(box["child"], inside, ("vmap", _leading(inside) or 0))
    return out

  return call


def _install() -> None:
  with _LOCK:
    if _INSTALLED[0] == 0:
      jax.lax.scan = _recording_scan
      jax.vmap = _recording_vmap
    _INSTALLED[0] += 1


def _uninstall() -> None:
  with _LOCK:
    _INSTALLED[0] -= 1
    if _INSTALLED[0] == 0:
      jax.lax.scan = _ORIGINAL["scan"]
      jax.vmap = _ORIGINAL["vmap"]


@contextlib.contextmanager
def _frame(recorder: Recorder) -> Iterator[Recorder]:
  stack = _stack()
  stack.append(recorder)
  try:
    yield recorder
  finally:
    stack.pop()


@contextlib.contextmanager
def recording(recorder: Recorder) -> Iterator[Recorder]:
  """Makes `recorder` the active one for the block (one forward pass being traced), with the
  scan and vmap wrappers installed."""
  _install()
  try:
    with _frame(recorder):
      yield recorder
  finally:
    _uninstall()


def tap(name: str, value: Any) -> Any:
  """Marks `value` as the output of layer `name` for `initjax.probe.measure`; returns `value`.

  Outside `measure` (or `trace`) this is the identity and costs nothing. Inside, `value` (a
  floating-point array) is recorded and a zero offset is added, through which `jax.grad` gives
  dL/d(value). Each name may appear once per forward pass; inside `jax.lax.scan` or `jax.vmap`
  it is recorded at every iteration (the result then has a leading step or batch axis).
  """
  recorder = active_recorder()
  if recorder is None:
    return value
  return recorder.record(name, value)
