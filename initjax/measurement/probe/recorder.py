"""Marking layer outputs: `tap(name, value)` and the recorder that `initjax.probe` listens with.

`tap` returns `value` unchanged unless `initjax.probe` is tracing the function that calls it.
While it traces, a `Recorder` is active on this thread: each tapped value is recorded under its
name, in forward order, and a zero "offset" of the same shape is added to it, so that the
gradient of the loss with respect to the offset is exactly dL/d(value). Nothing is global: the
recorder lives on a per-thread stack for the duration of one trace, and a function that taps
does not know whether it is measured, jitted or vmapped.

Taps must be called in the function `initjax.probe` traces, not inside a transformation within
it (`lax.scan`, `jax.jit`, `jax.vmap` applied inside apply_fn): a value from an inner trace cannot
leave it. Flax's lifted transforms (`nn.scan`, `nnx.scan`) are such transformations.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import jax
import jax.numpy as jnp

__all__ = ["ProbeError", "Recorder", "tap", "recording", "active_recorder", "first_line"]


class ProbeError(ValueError):
  """A model or argument that `initjax.probe` cannot measure; the message is one line."""


def first_line(error: BaseException) -> str:
  """The first non-empty line of an exception's message (JAX's errors run to many lines)."""
  for line in str(error).splitlines():
    if line.strip():
      return f"{type(error).__name__}: {line.strip()}"
  return type(error).__name__


def is_layer_output(value: Any) -> bool:
  """Whether `value` can be a layer output: one real floating-point array (or tracer)."""
  return isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jnp.floating)


class Recorder:
  """The layer outputs of one forward pass, in the order they are produced.

  offsets: None (discover names and shapes) or {name: array} added to each output.
  module_names: id(module) -> layer name, for the Flax adapters' intercepted calls.
  """

  def __init__(self, offsets: dict[str, Any] | None = None):
    self.offsets = offsets
    self.outputs: dict[str, Any] = {}
    self.module_names: dict[int, str] = {}

  def record(self, name: str, value: Any, *, repeat_ok: bool = False) -> Any:
    """Records `value` under `name` and returns it plus its offset.

    A name seen before in this pass is an error (`tap`), or, with `repeat_ok` (a Flax submodule
    called more than once, weights shared), becomes "name#2", "name#3", ...
    """
    if not isinstance(name, str) or not name:
      raise ProbeError(f"tap name must be a non-empty string; got {name!r}")
    if name in self.outputs:
      if not repeat_ok:
        raise ProbeError(f"tap name {name!r} is used twice in one forward pass; give every "
                         "tapped layer its own name")
      k = 2
      while f"{name}#{k}" in self.outputs:
        k += 1
      name = f"{name}#{k}"
    if not is_layer_output(value):
      raise ProbeError(f"tap {name!r}: the value must be a floating-point array; got "
                       f"{type(value).__name__} {getattr(value, 'dtype', '')}".rstrip())
    if self.offsets is not None:
      if name not in self.offsets:
        raise ProbeError(f"layer {name!r} appeared in a forward pass but not when the layers "
                         "were listed; the model's layers must not depend on values")
      value = value + self.offsets[name].astype(value.dtype)
    self.outputs[name] = value
    return value


_STATE = threading.local()


def _stack() -> list[Recorder]:
  if not hasattr(_STATE, "stack"):
    _STATE.stack = []
  return _STATE.stack


def active_recorder() -> Recorder | None:
  """The recorder of the trace `initjax.probe` is running on this thread, if any."""
  stack = _stack()
  return stack[-1] if stack else None


@contextlib.contextmanager
def recording(recorder: Recorder) -> Iterator[Recorder]:
  """Makes `recorder` the active one for the block (one forward pass being traced)."""
  stack = _stack()
  stack.append(recorder)
  try:
    yield recorder
  finally:
    stack.pop()


def tap(name: str, value: Any) -> Any:
  """Marks `value` as the output of layer `name` for `initjax.probe.measure`; returns `value`.

  Outside `measure` (or `trace`) this is the identity and costs nothing. Inside, `value` (a
  floating-point array) is recorded and a zero offset is added, through which `jax.grad` gives
  dL/d(value). Each name may appear once per forward pass.
  """
  recorder = active_recorder()
  if recorder is None:
    return value
  return recorder.record(name, value)
