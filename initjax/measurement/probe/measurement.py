"""`measure`: per-layer statistics of any model over many random initializations, in one
compiled call; `trace`: the same for one network, every array kept; `describe_init`: what a
`weight_init` draws for every kernel.

For each seed: the model is initialized from the seed's key (kernels and biases redrawn when
`weight_init` / `bias_init` are given, `initjax.nn.redraw`, with fans from what each layer
contracts), run on the same inputs x, and the loss (default: the book's least squares against
target 0, sum of out^2) is differentiated with `jax.grad` with respect to a zero offset added to
every layer output and input: exactly dL/d(output) and dL/d(input). Each layer's output and
gradient are reduced to a few numbers (`STATISTICS`); a layer inside a scan (an RNN cell) to a
few numbers per step.

Seeds run through `lax.map` in chunks of vmapped networks (`seed_chunk`: 1 on a CPU, where
vmapping networks does not speed up XLA's CPU kernels, see `initjax.propagation`; elsewhere
what fits in half of the device memory, `initjax.parallel.chunk_size`), spread over the local
devices by `initjax.parallel`, exactly as `initjax.propagation.measure`. Everything that can go
wrong with the model or the arguments is found by `jax.eval_shape` before anything compiles
(`initjax.measurement.probe.prepare`).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from initjax.core import _jax_internals, parallel
from initjax.measurement.probe import prepare as prepare_lib
from initjax.measurement.probe.prepare import Core, Prepared, least_squares, prepare, rng_of
from initjax.measurement.probe.recorder import INPUT, ProbeError, Recorder, first_line, recording
from initjax.nn import redraw

__all__ = ["STATISTICS", "describe_init", "least_squares", "layer_statistics", "layers",
           "measure", "trace", "trace_count"]

# Per layer (per step for a layer in a scan) and seed. var_out / var_grad: variance of the
# output / of dL/d(output), pooled over examples and units (every entry of the array).
# channel_sq_mean / channel_var (Brock, De & Smith 2021, Signal Propagation Plots): for an
# output (N, ..., C), per channel c the mean and the variance over every axis but the last, then
# the average over channels of mean^2 and of the variance; NaN for outputs of rank < 2.
# gain_forward = E[out^2] / E[in^2] and gain_backward = E[(dL/d in)^2] / E[(dL/d out)^2] on the
# layer's own input (second moments, pooled; NaN where the layer has no known input, such as a
# tap): for a linear layer fan_in Var[W] and fan_out Var[W], the quantities the He and Xavier
# conditions fix (He: 2 = 1 / E[relu'^2] forward for a layer after a ReLU; LeCun 1; Xavier their
# compromise). The backward one assumes dL/d out independent of the layer's weights (true
# inside a deep network, not for the last layer under least squares against 0).
STATISTICS = ("var_out", "var_grad", "channel_sq_mean", "channel_var", "gain_forward",
              "gain_backward")

_TRACES = [0]


def trace_count() -> int:
  """How many times `measure` has traced (and so compiled) a program in this process: configs
  that differ only in values (initializers of one family, weight_scale, the key, x) reuse one."""
  return _TRACES[0]


def layer_statistics(out: jax.Array, grad: jax.Array) -> dict[str, jax.Array]:
  """The output statistics of one layer output and its gradient (at least float32)."""
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


# ------------------------------------------------------------------------------------------------
# Steps: layers inside scans are recorded at every iteration.

def _scan_axes(core: Core, name: str) -> list[int]:
  return [i for i, (kind, _) in enumerate(core.stacked.get(name, ())) if kind == "scan"]


def _steps(core: Core, name: str) -> list[tuple[int, ...]]:
  lengths = [core.stacked[name][i][1] for i in _scan_axes(core, name)]
  return [tuple(t) for t in np.ndindex(*lengths)] if lengths else [()]


def entries(core: Core) -> list[tuple[str, str, tuple[int, ...]]]:
  """(entry name, layer, step) for every layer, per step for layers in scans: "cell[3]"."""
  out = []
  for name in core.layers:
    for step in _steps(core, name):
      label = f"{name}[{','.join(map(str, step))}]" if step else name
      out.append((label, name, step))
  return out


def _by_step(core: Core, name: str, value: jax.Array) -> jax.Array:
  """value with its scan axes moved to the front and flattened: (steps, ...)."""
  axes = _scan_axes(core, name)
  if not axes:
    return value[None]
  moved = jnp.moveaxis(value, axes, list(range(len(axes))))
  return moved.reshape((-1,) + moved.shape[len(axes):])


def _mean_square(v: jax.Array, dtype) -> jax.Array:
  v = v.astype(dtype)
  return jnp.mean(jnp.square(v.reshape(v.shape[0], -1)), axis=1)


def _layer_values(core: Core, name: str, values: dict, grads: dict) -> dict[str, jax.Array]:
  out = _by_step(core, name, values[name])
  grad = _by_step(core, name, grads[name])
  stats = jax.vmap(layer_statistics)(out, grad)
  dtype = stats["var_out"].dtype
  if name + INPUT in values:
    x = _by_step(core, name, values[name + INPUT])
    g = _by_step(core, name, grads[name + INPUT])
    stats["gain_forward"] = _mean_square(out, dtype) / _mean_square(x, dtype)
    stats["gain_backward"] = _mean_square(g, dtype) / _mean_square(grad, dtype)
  else:
    stats["gain_forward"] = stats["gain_backward"] = jnp.full(out.shape[:1], jnp.nan, dtype)
  return stats


# ------------------------------------------------------------------------------------------------
# One seed.

def network(core: Core, static: tuple, key: jax.Array, scale: Any, select_L, std_L,
            x: jax.Array) -> tuple[Any, Any]:
  """(params, state) of the seed with `key`: the model's init from the first half of the key,
  kernels and biases drawn as the plan's row (select_L, std_L) says from the second, kernels
  times sqrt(scale)."""
  k_init, k_draw = jax.random.split(key)
  params, state = core.model.adapter.init(k_init, x)
  params = redraw.apply(static, params, k_draw, select_L, std_L, scale, core.model.adapter.prefix)
  return params, state


def forward_backward(core: Core, loss: Callable, params: Any, state: Any, x: jax.Array,
                     rng: jax.Array):
  """(loss, {key: value}, {key: dL/d value}, model output) of one network."""
  zeros = {k: jnp.zeros(s.shape, s.dtype) for k, s in zip(core.keys, core.shapes)}

  def loss_of_offsets(offsets):
    with recording(Recorder(offsets, core.structure)) as recorder:
      out = core.model.apply(params, state, x, rng, core.include_top)
    return loss(out), (recorder.values, out)

  (value, (values, out)), grads = jax.value_and_grad(loss_of_offsets, has_aux=True)(zeros)
  return value, values, grads, out


def seed_statistics(core: Core, static: tuple, loss: Callable, key, scale, select_L, std_L, x):
  """{statistic: (entries,)} and {"loss": ()} for the seed with `key`."""
  params, state = network(core, static, key, scale, select_L, std_L, x)
  value, values, grads, _ = forward_backward(core, loss, params, state, x, rng_of(key))
  per_layer = [_layer_values(core, n, values, grads) for n in core.layers]
  stats = {s: jnp.concatenate([p[s] for p in per_layer]) for s in STATISTICS}
  stats["loss"] = value.astype(stats["var_out"].dtype)
  return stats


def _check_seed(prep: Prepared, x) -> bool:
  """One seed's whole computation, abstractly: what only shows under jax.grad shows here.
  Returns whether it calls LAPACK (an orthogonal draw, the model's own or a comparison's)."""
  c, plan = prep.core, prep.plan
  try:
    # The row of draws is traced data, so this one trace holds every comparison's draws.
    return parallel.calls_lapack(
        functools.partial(seed_statistics, c, plan.static, prep.loss), jax.random.key(0),
        jnp.asarray(1.0, jnp.result_type(float)), jnp.asarray(plan.select_CxL[0]),
        jnp.asarray(plan.std_CxL[0], jnp.result_type(float)), x)
  except ProbeError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ProbeError(f"measuring {c.model.label} failed: {first_line(e)}") from e


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
def _per_item(core: Core, static: tuple, loss: Callable) -> Callable:
  """One item's statistics as a function of ((key, scale, comparison), (x, select, std)): what
  `parallel.map_items` maps (one stable object per program, so its compile is reused)."""
  def one(item, shared):
    _TRACES[0] += 1                     # runs when a program is traced, not when it runs
    key, scale, c = item
    x, select_CxL, std_CxL = shared
    return seed_statistics(core, static, loss, key, scale, select_CxL[c], std_CxL[c], x)
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
    x = jnp.asarray(x)
  except TypeError as e:
    raise ProbeError(f"x must be an array; got {type(x).__name__}") from e
  if x.ndim == 0 or x.size == 0:
    raise ProbeError(f"x must be a non-empty batch of inputs (rows first); got shape "
                     f"{tuple(x.shape)}")
  return x


def _check_size(n_items: int, n_entries: int, work) -> None:
  """Refuses, before any key is split, a call whose results cannot fit in memory."""
  per_item = 8.0 * (len(STATISTICS) + 1) * n_entries * 3 + 64
  available = parallel.available_memory_bytes(work[0])
  if n_items * per_item > 0.5 * available:
    most = int(0.5 * available // per_item)
    raise ProbeError(f"{n_items} networks x {n_entries} layer entries need about "
                     f"{n_items * per_item / 1e9:.1f} GB for their statistics; at most {most} "
                     f"networks fit in half of the {available / 1e9:.1f} GB available: pass "
                     "fewer num_seeds (or weight scales / initializers)")


def measure(model: Any, x: Any, *, key: jax.Array, num_seeds: int,
            weight_init: Any = None, bias_init: Any = None,
            weight_scale: float | Sequence[float] | None = None, loss: Callable | None = None,
            seed_chunk: int | None = None, num_devices: int | None = None,
            model_kwargs: dict | None = None, train: bool | None = None,
            fan_axes: dict | None = None) -> dict[str, Any]:
  """Per-layer statistics of `model` on inputs `x` over `num_seeds` random initializations.

  Args:
    model: a `flax.linen.Module`; a `flax.nnx.Module` class or a factory `rngs -> module`;
      `initjax.models.equinox(make)` or an `eqx.Module`; or a pair `(init_fn(key) -> params,
      apply_fn(params, x) -> out)` whose layers are marked with `initjax.probe.tap`
      (`initjax.measurement.probe.models` says what counts as a layer).
    x: the inputs, the same for every seed (a batch, rows first).
    key: seed s uses `jax.random.split(key, num_seeds)[s]` (`trace` with that key gives the
      same network); the same keys for every weight scale and initializer (paired draws).
    weight_init: None keeps the model's own draws; an initjax initializer name or
      `init(key, shape, dtype)` redraws every kernel with the fans of what its layer contracts;
      a mapping {path pattern: initializer} redraws the kernels it matches (`initjax.nn.redraw`);
      a list of these compares them (a leading axis in the results; one compiled program where
      they are of one family, e.g. ["he_normal", "xavier_normal", "lecun_normal", None]).
    bias_init: the same for biases; with `weight_init` alone the biases of the redrawn layers
      are zeros.
    weight_scale: multiplies the variance of every kernel (kernels times sqrt(scale)). A
      sequence adds a leading axis to the results (after the initializers' axis); all its
      values run in one compiled program, and calls that differ only in values share it.
    loss: `loss(out) -> scalar`; default `least_squares` (target 0). Close over targets.
    seed_chunk: seeds vmapped per `lax.map` step on a device (`default_seed_chunk`).
    num_devices: local devices to spread the seeds over (default all); the results do not
      depend on it.
    model_kwargs: call keyword arguments, e.g. {"train": True} for a linen module.
    train: True / False run an nnx model in `.train()` / `.eval()` mode and an Equinox model
      with `inference_mode(False / True)`; None as built.
    fan_axes: {path pattern: "flax" | "torch" | (in_axes, out_axes) | KernelAxes} for kernels
      whose layers initjax does not know (it says which in a `FanAxesWarning`).

  Returns:
    {"layers": entry names in forward order (a layer inside a scan has one entry per step,
    "RNN_0/cell[t]"), "steps": {layer: indices of its entries} for layers in scans, "shapes",
    "aliases": {module: the layer whose output it returns}, "kernels" and "biases" (the paths
    scaled or redrawn), "fans": {kernel: (fan_in, fan_out)}, "inits": the initializers' labels
    when `weight_init` is a list, "notes": {layer: why its statistics are what they are} (a
    layer whose output is exactly zero at initialization), every name in `STATISTICS` and
    "loss": float64 arrays (num_seeds, num_entries) and
    (num_seeds,), with leading (num_inits,) and (num_scales,) axes for lists}.

  Raises:
    ValueError (`ProbeError`), one line, before anything compiles: a model that fails on x, a
    keyword argument it does not take, a tap name used twice, an initializer that cannot draw
    a kernel's shape, a pattern matching no kernel, num_seeds < 1 or too many to fit, ...
  """
  x = _check_common(num_seeds, x)
  scales, stacked = _scales(weight_scale)
  prep = prepare(model, x, weight_init=weight_init, bias_init=bias_init, loss=loss,
                 model_kwargs=model_kwargs, train=train, fan_axes=fan_axes)
  lapack = _check_seed(prep, x)
  c, plan = prep.core, prep.plan
  listed = isinstance(weight_init, (list, tuple))
  n_comp, n_scale = len(plan.labels), len(scales)
  work = parallel.workers(parallel.local_devices(num_devices), uses_lapack=lapack)
  found = entries(c)
  n_items = n_comp * n_scale * num_seeds
  _check_size(n_items, len(found), work)
  keys = _seed_keys(key, num_seeds)
  if seed_chunk is None:
    seed_chunk = default_seed_chunk(prep.bytes_per_seed, work[0])
  seed_chunk = int(max(1, min(seed_chunk, n_items)))
  # Item i = (comparison i // (S n), scale (i // n) % S, seed i % n).
  index = np.arange(n_items)
  items = (keys[index % num_seeds],
           jnp.asarray(scales[(index // num_seeds) % n_scale], jnp.result_type(float)),
           jnp.asarray(index // (num_seeds * n_scale), jnp.int32))
  shared = (x, jnp.asarray(plan.select_CxL), jnp.asarray(plan.std_CxL, jnp.result_type(float)))
  logging.info("probe: %s, %d layers (%d entries), %d seeds x %d scales x %d initializers, "
               "chunk %d on %d workers", c.model.label, len(c.layers), len(found), num_seeds,
               n_scale, n_comp, seed_chunk, len(work))
  out = parallel.map_items(_per_item(c, plan.static, prep.loss), items, chunk=seed_chunk,
                           worker_devices=work, shared=shared,
                           lower_context=_jax_internals.unrolled_threefry_on_cpu)
  lead = ((n_comp,) if listed else ()) + ((n_scale,) if stacked else ())
  result = _describe_result(c, plan, found, listed)
  for name, values in out.items():
    result[name] = np.asarray(values, np.float64).reshape(lead + (num_seeds,) + values.shape[1:])
  result["notes"] = _notes(prep, x, keys[0], result, found)
  return result


def _describe_result(c: Core, plan: redraw.Redraw, found, listed: bool) -> dict[str, Any]:
  shapes = {n: s for n, s in zip(c.keys, c.shapes)}
  steps: dict[str, list[int]] = {}
  entry_shapes = []
  for i, (_, name, step) in enumerate(found):
    shape = tuple(shapes[name].shape)
    if step:
      steps.setdefault(name, []).append(i)
      drop = set(_scan_axes(c, name))
      shape = tuple(d for a, d in enumerate(shape) if a not in drop)
    entry_shapes.append(shape)
  kernels = tuple(leaf.name for leaf in c.leaves if leaf.role == "kernel")
  result = {"layers": tuple(e[0] for e in found), "shapes": tuple(entry_shapes),
            "steps": {k: np.asarray(v) for k, v in steps.items()}, "aliases": dict(c.aliases),
            "kernels": kernels, "biases": plan.redrawn("bias"),
            "fans": {leaf.name: leaf.fans for leaf in c.leaves if leaf.role == "kernel"}}
  if listed:
    result["inits"] = plan.labels
  return result


def _notes(prep: Prepared, x, key0, result, found) -> dict[str, str]:
  """Why a layer's output is exactly zero for every seed (its log10 would be -inf)."""
  zero = np.all(result["var_out"].reshape(-1, len(found)) == 0, axis=0)
  if not zero.any():
    return {}
  c, plan = prep.core, prep.plan
  params, _ = jax.jit(functools.partial(network, c, plan.static))(
      key0, 1.0, jnp.asarray(plan.select_CxL[0]),
      jnp.asarray(plan.std_CxL[0]), x)
  flat = {redraw.path_name(p, c.model.adapter.prefix): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  roles = {leaf.name: leaf.role for leaf in c.leaves}
  notes: dict[str, str] = {}
  earlier: list[str] = []
  for (_, name, _), z in zip(found, zero):
    if not z or name in notes:
      continue
    prefix = c.model.adapter.prefix + name + "/"
    zeros = [p for p, v in flat.items() if p.startswith(prefix) and v.size and not np.any(v)
             and roles.get(p) != "bias"]
    if zeros:
      why = (f"{', '.join(zeros)} {'is' if len(zeros) == 1 else 'are'} all zero at "
             "initialization: a zero-initialized scale or kernel")
    elif earlier:
      why = f"its input is: {earlier[-1]}'s output is exactly 0"
    else:
      why = "no parameter of the layer is zero: its input is"
    notes[name] = f"output is exactly 0 for every seed ({why}); its log10 variance is -inf"
    earlier.append(name)
  return notes


# ------------------------------------------------------------------------------------------------
# One network; the layers; what an initializer draws.

@functools.lru_cache(maxsize=32)
def _trace_program(core: Core, static: tuple, loss: Callable) -> Callable:
  @jax.jit
  def one(key, scale, select_L, std_L, x):
    params, state = network(core, static, key, scale, select_L, std_L, x)
    value, values, grads, out = forward_backward(core, loss, params, state, x, rng_of(key))
    return params, state, values, grads, value, out
  return one


def _host(tree: Any) -> Any:
  """NumPy arrays, PRNG keys left as they are (NumPy has no key dtype)."""
  return jax.tree.map(lambda a: a if jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
                      else np.asarray(a), tree)


def layers(model: Any, x: Any, **kwargs) -> dict[str, tuple[int, ...]]:
  """{layer name: output shape} in forward order: what `measure` records for `model` on `x`
  (a layer in a scan with its leading step axis), found abstractly (nothing compiles).
  kwargs: `model_kwargs`, `train`, `fan_axes` as `measure`."""
  x = _check_common(1, x)
  c = prepare_lib.core(model, x, kwargs.get("model_kwargs"), kwargs.get("train"),
                       kwargs.get("fan_axes"))
  return {n: tuple(s.shape) for n, s in zip(c.keys, c.shapes) if n in c.layers}


def trace(model: Any, x: Any, *, key: jax.Array, weight_init: Any = None, bias_init: Any = None,
          weight_scale: float = 1.0, loss: Callable | None = None,
          model_kwargs: dict | None = None, train: bool | None = None,
          fan_axes: dict | None = None) -> dict[str, Any]:
  """One network of `measure`, every array kept: {"layers", "params", "state", "outputs",
  "inputs" and "grads" ({layer: array}; dL/d output, and "input_grads"), "loss", "out"}, NumPy
  arrays (a layer in a scan has its step axis).

  With the same arguments, `trace(key=jax.random.split(key, num_seeds)[s])` is seed s of
  `measure(key=key)` (for one initializer and weight scale).
  """
  x = _check_common(1, x)
  _seed_keys(key, 1)
  scale, stacked = _scales(weight_scale)
  if stacked or isinstance(weight_init, (list, tuple)):
    raise ProbeError("trace takes one weight_scale and one weight_init")
  prep = prepare(model, x, weight_init=weight_init, bias_init=bias_init, loss=loss,
                 model_kwargs=model_kwargs, train=train, fan_axes=fan_axes)
  c, plan = prep.core, prep.plan
  params, state, values, grads, value, out = _host(_trace_program(c, plan.static, prep.loss)(
      key, jnp.asarray(scale[0], jnp.result_type(float)), jnp.asarray(plan.select_CxL[0]),
      jnp.asarray(plan.std_CxL[0], jnp.result_type(float)), x))
  inputs = {n: values[n + INPUT] for n in c.layers if n + INPUT in values}
  return {"layers": c.layers, "params": params, "state": state,
          "outputs": {n: values[n] for n in c.layers}, "grads": {n: grads[n] for n in c.layers},
          "inputs": inputs, "input_grads": {n: grads[n + INPUT] for n in inputs},
          "loss": float(value), "out": out}


def describe_init(model: Any, x: Any, *, weight_init: Any = None, bias_init: Any = None,
                  key: jax.Array | None = None, model_kwargs: dict | None = None,
                  train: bool | None = None, fan_axes: dict | None = None) -> list[dict]:
  """What `measure(..., weight_init=...)` draws, as tidy rows: per initializer (a list compares
  several) and kernel or bias, its layer, shape, fans, where its axes came from (the layer's
  rule, "declared", or "assumed" from the raw shape), the initializer, the variance it intends
  and the variance of one drawn network (the one `trace` draws with `key`, default
  `jax.random.key(0)`)."""
  x = _check_common(1, x)
  prep = prepare(model, x, weight_init=weight_init, bias_init=bias_init, model_kwargs=model_kwargs,
                 train=train, fan_axes=fan_axes)
  c, plan = prep.core, prep.plan
  key = jax.random.key(0) if key is None else key
  draw = jax.jit(functools.partial(network, c, plan.static))
  params_C = [draw(key, 1.0, jnp.asarray(plan.select_CxL[i]),
                   jnp.asarray(plan.std_CxL[i], jnp.result_type(float)), x)[0]
              for i in range(len(plan.labels))]
  return redraw.describe(plan, params_C, c.model.adapter.prefix)
