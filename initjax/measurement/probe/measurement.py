"""`measure`: per-layer statistics of any model over many random initializations, in one
compiled call; `trace`: the same for one network, every array kept.

For each seed: the model is initialized from the seed's key (kernels and biases redrawn when
`weight_init` / `bias_init` are given, `initjax.probe.redraw`), run on the same inputs x, and
the loss (default: the book's least squares against target 0, sum of out^2) is differentiated
with `jax.grad` with respect to a zero offset added to every layer output: exactly dL/d(output).
Each layer's output and gradient are reduced to a few numbers (`STATISTICS`).

Seeds run through `lax.map` in chunks of vmapped networks (`seed_chunk`: 1 on a CPU, where
vmapping networks does not speed up XLA's CPU kernels, see `initjax.propagation`; elsewhere
what fits in half of the device memory, `initjax.parallel.chunk_size`), spread over the local
devices by `initjax.parallel`, exactly as `initjax.propagation.measure`. Everything that can go
wrong with the model or the arguments is found by `jax.eval_shape` before anything compiles.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from initjax.core import _jax_internals, parallel
from initjax.measurement.probe import redraw as redraw_lib
from initjax.measurement.probe.models import Model, as_model
from initjax.measurement.probe.recorder import ProbeError, Recorder, first_line, recording
from initjax.nn.initializers import draws_plain_normal

__all__ = ["STATISTICS", "least_squares", "layer_statistics", "layers", "measure", "trace",
           "trace_count"]

# Per layer and seed. var_out / var_grad: variance of the output / of dL/d(output), pooled over
# examples and units (every entry of the array). channel_sq_mean / channel_var (Brock, De & Smith
# 2021, Signal Propagation Plots): for an output (N, ..., C), per channel c the mean and the
# variance over every axis but the last, then the average over channels of mean^2 and of the
# variance (channel_sq_mean + channel_var is the mean square); NaN for outputs of rank < 2.
STATISTICS = ("var_out", "var_grad", "channel_sq_mean", "channel_var")

_TRACES = [0]


def trace_count() -> int:
  """How many times `measure` has traced (and so compiled) a program in this process: configs
  that differ only in values (weight_scale, the key, x) reuse one."""
  return _TRACES[0]


def least_squares(out: Any) -> jax.Array:
  """The book's loss against target y = 0: the sum of out^2 over every entry (every leaf)."""
  return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(out))


def layer_statistics(out: jax.Array, grad: jax.Array) -> dict[str, jax.Array]:
  """`STATISTICS` of one layer output and its gradient (at least float32)."""
  dtype = jnp.promote_types(out.dtype, jnp.float32)
  out, grad = out.astype(dtype), grad.astype(dtype)
  stats = {"var_out": jnp.var(out), "var_grad": jnp.var(grad)}
  if out.ndim >= 2:
    axes = tuple(range(out.ndim - 1))
    stats["channel_sq_mean"] = jnp.mean(jnp.square(jnp.mean(out, axis=axes)))
    stats["channel_var"] = jnp.mean(jnp.var(out, axis=axes))
  else:
    stats["channel_sq_mean"] = stats["channel_var"] = jnp.array(jnp.nan, dtype)
  return stats


@dataclasses.dataclass(frozen=True, eq=False)
class _Prepared:
  """A model checked against x and the initializers: everything one seed's program needs."""
  model: Model
  layers: tuple[str, ...]
  shapes: tuple[jax.ShapeDtypeStruct, ...]
  include_top: bool
  roles: dict
  weight_init: Callable | None
  bias_init: Callable | None
  loss: Callable
  bytes_per_seed: float


def _discover(model: Model, abstract_params, x_spec, include_top: bool):
  """Names and shapes of the layers, in forward order, and the abstract output."""
  found = {}

  def forward(params, x):
    with recording(Recorder()) as recorder:
      out = model.apply(params, x, include_top)
    found.update({n: jax.ShapeDtypeStruct(v.shape, v.dtype) for n, v in recorder.outputs.items()})
    return out

  try:
    out = jax.eval_shape(forward, abstract_params, x_spec)
  except ProbeError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ProbeError(f"{model.label} failed on x of shape {tuple(x_spec.shape)} "
                     f"{x_spec.dtype}: {first_line(e)}") from e
  return found, out


def _check_loss(loss: Callable, out) -> None:
  try:
    value = jax.eval_shape(loss, out)
  except Exception as e:  # pylint: disable=broad-except
    raise ProbeError(f"loss failed on the model's output: {first_line(e)}") from e
  if not (isinstance(value, jax.ShapeDtypeStruct) and value.shape == ()
          and jnp.issubdtype(value.dtype, jnp.floating)):
    raise ProbeError(f"loss must return a real scalar; got {value}")


def _prepare(model_arg, x_spec, weight_init, bias_init, loss) -> _Prepared:
  model = as_model(model_arg)
  weight_init = redraw_lib.resolve_init(weight_init, "weight_init")
  bias_init = redraw_lib.resolve_init(bias_init, "bias_init")
  if weight_init is not None and bias_init is None:
    from initjax.nn.initializers import zeros  # pylint: disable=import-outside-toplevel
    bias_init = zeros()
  loss = least_squares if loss is None else loss
  if not callable(loss):
    raise ProbeError(f"loss must be a function out -> scalar; got {loss!r}")
  try:
    abstract_params = jax.eval_shape(model.init, jax.random.key(0), x_spec)
  except ProbeError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ProbeError(f"{model.label} failed to initialize on x of shape {tuple(x_spec.shape)}: "
                     f"{first_line(e)}") from e
  include_top = False
  found, out = _discover(model, abstract_params, x_spec, include_top)
  if not found:
    include_top = True
    found, out = _discover(model, abstract_params, x_spec, include_top)
  _check_loss(loss, out)
  roles = redraw_lib.param_roles(model.kind, abstract_params)
  if weight_init is not None and "kernel" not in roles.values():
    raise ProbeError(f"weight_init is given but {model.label} has no kernels (parameters "
                     f"named {', '.join(redraw_lib.KERNEL_NAMES)})")
  redraw_lib.check_draws(abstract_params, roles, weight_init, bias_init)
  param_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(abstract_params))
  layer_bytes = sum(math.prod(s.shape) * s.dtype.itemsize for s in found.values())
  prep = _Prepared(model, tuple(found), tuple(found.values()), include_top, roles, weight_init,
                   bias_init, loss, 3.0 * param_bytes + 4.0 * layer_bytes)
  _check_seed(prep, x_spec)
  return prep


@functools.lru_cache(maxsize=32)
def _prepared_cached(model_arg, x_shape, x_dtype, weight_init, bias_init, loss) -> _Prepared:
  return _prepare(model_arg, jax.ShapeDtypeStruct(x_shape, x_dtype), weight_init, bias_init,
                  loss)


def _prepared(model_arg, x, weight_init, bias_init, loss) -> _Prepared:
  """`_prepare`, shared between calls with the same model, x shape and functions (so that
  they share one compiled program); unhashable arguments are prepared afresh."""
  try:
    return _prepared_cached(model_arg, tuple(x.shape), x.dtype, weight_init, bias_init, loss)
  except TypeError as e:
    if "unhashable" not in str(e):
      raise
    return _prepare(model_arg, jax.ShapeDtypeStruct(x.shape, x.dtype), weight_init, bias_init,
                    loss)


# ------------------------------------------------------------------------------------------------
# One seed.

def network(prep: _Prepared, key: jax.Array, scale: Any, x: jax.Array) -> Any:
  """The parameters of the seed with `key`: the model's init from the first half of the key,
  kernels and biases redrawn from the second, kernels times sqrt(scale)."""
  k_init, k_draw = jax.random.split(key)
  params = prep.model.init(k_init, x)
  return redraw_lib.redraw(params, k_draw, prep.roles, prep.weight_init, prep.bias_init, scale)


def forward_backward(prep: _Prepared, params: Any, x: jax.Array):
  """(loss, {layer: output}, {layer: dL/d output}, model output) of one network."""
  zeros = {n: jnp.zeros(s.shape, s.dtype) for n, s in zip(prep.layers, prep.shapes)}

  def loss_of_offsets(offsets):
    with recording(Recorder(offsets)) as recorder:
      out = prep.model.apply(params, x, prep.include_top)
    return prep.loss(out), (recorder.outputs, out)

  (loss, (outputs, out)), grads = jax.value_and_grad(loss_of_offsets, has_aux=True)(zeros)
  return loss, outputs, grads, out


def seed_statistics(prep: _Prepared, key: jax.Array, scale: Any, x: jax.Array):
  """{statistic: (num_layers,)} and {"loss": ()} for the seed with `key`."""
  params = network(prep, key, scale, x)
  loss, outputs, grads, _ = forward_backward(prep, params, x)
  per_layer = [layer_statistics(outputs[n], grads[n]) for n in prep.layers]
  stats = {s: jnp.stack([p[s] for p in per_layer]) for s in STATISTICS}
  stats["loss"] = loss.astype(stats["var_out"].dtype)
  return stats


def _check_seed(prep: _Prepared, x: jax.Array) -> None:
  """One seed's whole computation, abstractly: what only shows under jax.grad shows here."""
  try:
    jax.eval_shape(functools.partial(seed_statistics, prep), jax.random.key(0),
                   jnp.asarray(1.0, jnp.result_type(float)), x)
  except ProbeError:
    raise
  except jax.errors.UnexpectedTracerError as e:
    raise ProbeError(f"{prep.model.label}: a layer inside a jax transformation (lax.scan, jit, "
                     "vmap, nn.scan) within the model cannot be recorded; tap outside it") from e
  except Exception as e:  # pylint: disable=broad-except
    raise ProbeError(f"measuring {prep.model.label} failed: {first_line(e)}") from e


# ------------------------------------------------------------------------------------------------
# Many seeds.

def default_seed_chunk(bytes_per_seed: float, device=None) -> int:
  """Seeds vmapped per step on one device: 1 on a CPU (as `initjax.propagation`), else as many
  as fit in half of its free memory (at most 256)."""
  device = device or jax.local_devices()[0]
  if device.platform == "cpu":
    return 1
  return int(min(256, parallel.chunk_size(256, bytes_per_seed, [device])))


@functools.lru_cache(maxsize=32)
def _per_item(prep: _Prepared) -> Callable:
  """One seed's statistics as a function of ((key, scale), x): what `parallel.map_items` maps
  over the seeds (one stable object per prepared model, so its compiled program is reused)."""
  def one(item, x):
    _TRACES[0] += 1                     # runs when a program is traced, not when it runs
    key, scale = item
    return seed_statistics(prep, key, scale, x)
  return one


def _scales(weight_scale) -> tuple[np.ndarray, bool]:
  """(scales, whether the results get a leading scale axis)."""
  stacked = weight_scale is not None and np.ndim(weight_scale) == 1
  values = np.atleast_1d(np.asarray(1.0 if weight_scale is None else weight_scale, np.float64))
  if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values) & (values > 0)):
    raise ProbeError("weight_scale must be a positive number or a non-empty sequence of them; "
                     f"got {weight_scale!r}")
  return values, stacked


def _seed_keys(key: Any, num_seeds: int) -> jax.Array:
  try:
    return jax.random.split(key, num_seeds)
  except Exception as e:  # pylint: disable=broad-except
    raise ProbeError(f"key must be a jax.random key such as jax.random.key(0): "
                     f"{first_line(e)}") from e


def _check_common(num_seeds, x) -> jax.Array:
  if isinstance(num_seeds, bool) or not isinstance(num_seeds, (int, np.integer)) or num_seeds < 1:
    raise ProbeError(f"num_seeds must be an integer >= 1; got {num_seeds!r}")
  try:
    return jnp.asarray(x)
  except TypeError as e:
    raise ProbeError(f"x must be an array; got {type(x).__name__}") from e


def measure(model: Any, x: Any, *, key: jax.Array, num_seeds: int,
            weight_init: str | Callable | None = None, bias_init: str | Callable | None = None,
            weight_scale: float | Sequence[float] | None = None, loss: Callable | None = None,
            seed_chunk: int | None = None, num_devices: int | None = None) -> dict[str, Any]:
  """Per-layer statistics of `model` on inputs `x` over `num_seeds` random initializations.

  Args:
    model: a `flax.linen.Module`; a `flax.nnx.Module` class or a factory `rngs -> module`; or a
      pair `(init_fn(key) -> params, apply_fn(params, x) -> out)` whose layers are marked with
      `initjax.probe.tap` (see `initjax.probe.models` for what counts as a layer).
    x: the inputs, the same for every seed (a batch, rows first).
    key: seed s uses `jax.random.split(key, num_seeds)[s]` (`trace` with that key gives the
      same network); the same keys for every weight scale (paired draws).
    weight_init, bias_init: initjax initializer names or `init(key, shape, dtype)`: when
      given, every kernel / bias is redrawn (`initjax.probe.redraw`); with `weight_init` alone
      the biases are zeros. None keeps the model's own draws.
    weight_scale: multiplies the variance of every kernel (kernels times sqrt(scale)). A
      sequence adds a leading axis to the results; all its values run in one compiled program,
      and calls that differ only in these values share it (`trace_count`).
    loss: `loss(out) -> scalar`; default `least_squares` (target 0). Close over targets.
    seed_chunk: seeds vmapped per `lax.map` step on a device (`default_seed_chunk`).
    num_devices: local devices to spread the seeds over (default all); the results do not
      depend on it.

  Returns:
    {"layers": tuple of names in forward order, "shapes": their output shapes, "kernels" and
    "biases": the parameter paths redrawn or scaled, every name in `STATISTICS` and "loss":
    float64 arrays (num_seeds, num_layers) and (num_seeds,), with a leading (num_scales,) axis
    when `weight_scale` is a sequence}.

  Raises:
    ValueError (`ProbeError`), one line, before anything compiles: a model that fails on x, a
    tap name used twice, an initializer that cannot draw a kernel's shape, num_seeds < 1, ...
  """
  x = _check_common(num_seeds, x)
  keys = _seed_keys(key, num_seeds)
  scales, stacked = _scales(weight_scale)
  prep = _prepared(model, x, weight_init, bias_init, loss)
  plain = isinstance(weight_init, str) and draws_plain_normal(weight_init)
  work = parallel.workers(parallel.local_devices(num_devices),
                          uses_lapack=weight_init is not None and not plain)
  if seed_chunk is None:
    seed_chunk = default_seed_chunk(prep.bytes_per_seed, work[0])
  n_items = len(scales) * num_seeds
  seed_chunk = int(max(1, min(seed_chunk, n_items)))
  # Item i = (scale i // num_seeds, seed i % num_seeds).
  index = np.arange(n_items)
  scale_items = jnp.asarray(scales[index // num_seeds], jnp.result_type(float))
  items = (keys[index % num_seeds], scale_items)
  logging.info("probe: %s, %d layers, %d seeds x %d scales, chunk %d on %d workers",
               prep.model.label, len(prep.layers), num_seeds, len(scales), seed_chunk,
               len(work))
  out = parallel.map_items(_per_item(prep), items, chunk=seed_chunk, worker_devices=work,
                           shared=x, lower_context=_jax_internals.unrolled_threefry_on_cpu)
  lead = (len(scales),) if stacked else ()
  result = {"layers": prep.layers, "shapes": tuple(tuple(s.shape) for s in prep.shapes),
            "kernels": _named(prep, "kernel"), "biases": _named(prep, "bias")}
  for name, values in out.items():
    result[name] = np.asarray(values, np.float64).reshape(lead + (num_seeds,) + values.shape[1:])
  return result


def _named(prep: _Prepared, role: str) -> tuple[str, ...]:
  """The parameter paths with `role` that measure changes (drawn anew or scaled)."""
  init = prep.weight_init if role == "kernel" else prep.bias_init
  if role == "bias" and init is None:
    return ()
  return tuple(n for n, r in prep.roles.items() if r == role)


@functools.lru_cache(maxsize=32)
def _trace_program(prep: _Prepared) -> Callable:
  @jax.jit
  def one(key, scale, x):
    params = network(prep, key, scale, x)
    loss_value, outputs, grads, out = forward_backward(prep, params, x)
    return params, outputs, grads, loss_value, out
  return one


def layers(model: Any, x: Any) -> dict[str, tuple[int, ...]]:
  """{layer name: output shape} in forward order: what `measure` records for `model` on `x`,
  found abstractly (nothing runs or compiles)."""
  x = _check_common(1, x)
  prep = _prepared(model, x, None, None, None)
  return {n: tuple(s.shape) for n, s in zip(prep.layers, prep.shapes)}


def trace(model: Any, x: Any, *, key: jax.Array, weight_init: str | Callable | None = None,
          bias_init: str | Callable | None = None, weight_scale: float = 1.0,
          loss: Callable | None = None) -> dict[str, Any]:
  """One network of `measure`, every array kept: {"layers", "params", "outputs" and "grads"
  ({layer: array}, dL/d output), "loss", "out" (the model's output)}, NumPy arrays.

  With the same arguments, `trace(key=jax.random.split(key, num_seeds)[s])` is seed s of
  `measure(key=key)` (for each weight scale).
  """
  x = _check_common(1, x)
  _seed_keys(key, 1)
  scale, stacked = _scales(weight_scale)
  if stacked:
    raise ProbeError(f"trace takes one weight_scale; got {weight_scale!r}")
  prep = _prepared(model, x, weight_init, bias_init, loss)
  params, outputs, grads, loss_value, out = jax.tree.map(
      np.asarray, _trace_program(prep)(key, jnp.asarray(scale[0], jnp.result_type(float)), x))
  return {"layers": prep.layers, "params": params,
          "outputs": {n: outputs[n] for n in prep.layers},
          "grads": {n: grads[n] for n in prep.layers}, "loss": float(loss_value), "out": out}
