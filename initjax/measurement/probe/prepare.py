"""A model checked against x and the initializers, before anything compiles.

`prepare` adapts the model (`initjax.nn.adapters`), draws its parameters abstractly, finds its
layers (one abstract forward pass with a discovering `Recorder`), plans the redraw
(`initjax.nn.redraw.plan`) and checks the loss and one seed's whole computation with
`jax.eval_shape`: a model that fails on x, a keyword argument it does not take, a pattern that
matches no kernel, fan axes out of range or an initializer that cannot draw a kernel are one
line each (`ProbeError`), naming the model and the parameter paths involved.

Models and their layers are cached (`_core`, keyed by the model, x's shape and the call
arguments), so that calls with other initializers of the same families, scales, keys or inputs
reuse one compiled program.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from initjax.core.errors import ModelError
from initjax.measurement.probe.models import Model, recording_model
from initjax.measurement.probe.recorder import INPUT, ProbeError, Recorder, first_line, recording
from initjax.nn import adapters, redraw
from initjax.nn.adapters import RNG_STREAM


class FanAxesWarning(UserWarning):
  """Kernels redrawn with fan axes read from their raw shape: their layer is not known."""


@dataclasses.dataclass(frozen=True, eq=False)
class Core:
  """A model and its layers on inputs of one shape (no initializer yet)."""
  model: Model
  params: Any                     # abstract (ShapeDtypeStructs)
  state: Any
  leaves: tuple[redraw.Leaf, ...]
  include_top: bool
  keys: tuple[str, ...]           # every recorded value (outputs and inputs), forward order
  shapes: tuple[jax.ShapeDtypeStruct, ...]
  stacked: dict[str, tuple]       # key -> the transformation axes around it
  structure: list                 # the transformations' calls (Recorder.structure)
  layers: tuple[str, ...]         # the layer outputs (aliases left out)
  aliases: dict[str, str]
  out: Any                        # the abstract model output


@dataclasses.dataclass(frozen=True, eq=False)
class Prepared:
  """A `Core` with its redraw plan and loss: what one seed's program needs."""
  core: Core
  plan: redraw.Redraw
  loss: Callable
  bytes_per_seed: float

  @property
  def program_key(self) -> tuple:
    return (self.core, self.plan.static, self.loss)


def least_squares(out: Any) -> jax.Array:
  """The book's loss against target y = 0: the sum of out^2 over every entry (every leaf)."""
  return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(out))


def rng_of(key: jax.Array) -> jax.Array:
  """The forward-pass randomness (dropout) of the network with `key`."""
  return jax.random.fold_in(key, RNG_STREAM)


def _discover(model: Model, params, state, x_spec, include_top: bool):
  found: dict[str, Any] = {}

  def forward(params, state, x):
    with recording(Recorder()) as rec:
      out = model.apply(params, state, x, rng_of(jax.random.key(0)), include_top)
    found.update(shapes={k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in rec.values.items()},
                 stacked=dict(rec.stacked), aliases=dict(rec.aliases), calls=rec.calls)
    return out

  try:
    out = jax.eval_shape(forward, params, state, x_spec)
  except ModelError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ProbeError(f"{model.label} failed on x of shape {tuple(x_spec.shape)} "
                     f"{x_spec.dtype}: {first_line(e)}") from e
  return found, out


def _build_core(model_arg, x_spec, kwargs_key, train, fan_axes_key) -> Core:
  kwargs = dict(kwargs_key)
  try:
    adapter = adapters.adapt(model_arg, model_kwargs=kwargs)
  except ModelError as e:
    raise ProbeError(str(e)) from None
  if train is not None and adapter.kind in ("linen", "pure"):
    raise ProbeError(f"train= switches nnx and Equinox models; {adapter.label} takes its mode "
                     "as call arguments: pass model_kwargs (e.g. {'train': False})")
  model = recording_model(adapter, train)
  try:
    params, state = jax.eval_shape(adapter.init, jax.random.key(0), x_spec)
  except ModelError as e:
    raise ProbeError(str(e)) from None
  except Exception as e:  # pylint: disable=broad-except
    raise ProbeError(f"{adapter.label} failed to initialize on x of shape "
                     f"{tuple(x_spec.shape)}: {first_line(e)}") from e
  try:
    leaves = redraw.declare_axes(adapter.leaves(params, x_spec), dict(fan_axes_key))
  except ModelError as e:
    raise ProbeError(str(e)) from None
  except Exception as e:  # pylint: disable=broad-except
    raise ProbeError(f"{adapter.label}: its layers could not be listed on x of shape "
                     f"{tuple(x_spec.shape)}: {first_line(e)}") from e
  include_top = False
  found, out = _discover(model, params, state, x_spec, include_top)
  if not [k for k in found["shapes"] if not k.endswith(INPUT)]:
    include_top = True
    found, out = _discover(model, params, state, x_spec, include_top)
  keys = tuple(found["shapes"])
  layers = tuple(k for k in keys if not k.endswith(INPUT))
  return Core(model, params, state, tuple(leaves), include_top, keys,
              tuple(found["shapes"][k] for k in keys), found["stacked"], found["calls"],
              layers, found["aliases"], out)


@functools.lru_cache(maxsize=32)
def _core_cached(model_arg, x_shape, x_dtype, kwargs_key, train, fan_axes_key) -> Core:
  return _build_core(model_arg, jax.ShapeDtypeStruct(x_shape, x_dtype), kwargs_key, train,
                     fan_axes_key)


def _frozen(mapping: Mapping | None, what: str) -> tuple:
  if mapping is None:
    return ()
  if not isinstance(mapping, Mapping):
    raise ProbeError(f"{what} must be a mapping; got {type(mapping).__name__}")
  return tuple(sorted(mapping.items(), key=lambda kv: str(kv[0])))


def core(model_arg, x, model_kwargs=None, train=None, fan_axes=None) -> Core:
  """The cached `Core` (a fresh one for unhashable arguments)."""
  args = (_frozen(model_kwargs, "model_kwargs"), train, _frozen(fan_axes, "fan_axes"))
  try:
    return _core_cached(model_arg, tuple(x.shape), x.dtype, *args)
  except TypeError as e:
    if "unhashable" not in str(e):
      raise
    return _build_core(model_arg, jax.ShapeDtypeStruct(x.shape, x.dtype), *args)


def _check_loss(loss: Callable, out) -> None:
  try:
    value = jax.eval_shape(loss, out)
  except Exception as e:  # pylint: disable=broad-except
    raise ProbeError(f"loss failed on the model's output: {first_line(e)}") from e
  if not (isinstance(value, jax.ShapeDtypeStruct) and value.shape == ()
          and jnp.issubdtype(value.dtype, jnp.floating)):
    raise ProbeError(f"loss must return a real scalar; got {value}")


def prepare(model_arg, x, *, weight_init=None, bias_init=None, loss=None, model_kwargs=None,
            train=None, fan_axes=None) -> Prepared:
  """`Prepared` for one call of `measure` / `trace` (module docstring)."""
  c = core(model_arg, x, model_kwargs, train, fan_axes)
  loss = least_squares if loss is None else loss
  if not callable(loss):
    raise ProbeError(f"loss must be a function out -> scalar; got {loss!r}")
  _check_loss(loss, c.out)
  try:
    plan = redraw.plan(c.leaves, weight_init, bias_init)
    redraw.check(plan)
  except ModelError as e:
    raise ProbeError(f"{c.model.label}: {e}") from None
  if plan.assumed:
    warnings.warn(f"initjax.probe: {c.model.label}: the fans of {len(plan.assumed)} kernels "
                  f"are read from their raw shapes as (..., in, out) ({', '.join(plan.assumed)}); "
                  "their layers are not known: declare fan_axes={pattern: 'torch' | (in_axes, "
                  "out_axes)} if that is not their layout", FanAxesWarning, stacklevel=3)
  param_bytes = sum(math.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(c.params))
  value_bytes = sum(math.prod(s.shape) * s.dtype.itemsize for s in c.shapes)
  return Prepared(c, plan, loss, 3.0 * param_bytes + 4.0 * value_bytes)
