"""`jacobian_spectra`: the singular values of every layer's Jacobian with respect to the input,
for any model `initjax.probe.measure` accepts, over many random initializations.

For each seed (the network of `probe.measure` with the same key, `measurement.network`) and each
input point x_i (a row of x), every layer output y(x_i) gives J = d y / d x_i, flattened to
(units of y, entries of x_i), by `jax.jacfwd` (one tangent per input entry) where x_i has no more
entries than the widest layer, else `jax.jacrev`; then its singular values. Each point runs as a
batch of one, so layers that mix examples (batch statistics) are not what is measured. The
built-in MLP has a cheaper path at any depth: `initjax.measurement.isometry`.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initjax.core import _jax_internals, parallel
from initjax.measurement.probe import measurement
from initjax.measurement.probe.prepare import Core, prepare, rng_of
from initjax.measurement.probe.recorder import ProbeError, Recorder, recording


def _units(core: Core, name: str, rows: int) -> int:
  """Entries of one example's output of layer `name` (every time step of a layer in a scan)."""
  return math.prod(core.shapes[core.keys.index(name)].shape) // rows


def point_jacobians(core: Core, params: Any, state: Any, x_point: jax.Array,
                    rng: jax.Array, widest: int) -> dict[str, jax.Array]:
  """{layer: d output / d x_point}, each (units, entries of x_point), for one network."""
  def outputs(x_one):
    with recording(Recorder()) as recorder:
      core.model.apply(params, state, x_one[None], rng, core.include_top)
    return {n: recorder.values[n].reshape(-1) for n in core.layers}

  entries = math.prod(x_point.shape)
  jac = (jax.jacfwd if entries <= widest else jax.jacrev)(outputs)(x_point)
  return {n: j.reshape(j.shape[0], entries) for n, j in jac.items()}


@functools.lru_cache(maxsize=32)
def _per_item(core: Core, static: tuple, widest: int) -> Callable:
  def one(item, shared):
    key, scale = item
    x, select_L, std_L = shared
    params, state = measurement.network(core, static, key, scale, select_L, std_L, x)
    rng = rng_of(key)
    per_point = lambda x_point: {
        n: jnp.linalg.svd(j, compute_uv=False)
        for n, j in point_jacobians(core, params, state, x_point, rng, widest).items()}
    return jax.vmap(per_point)(x)
  return one


def jacobian_spectra(model: Any, x: Any, *, key: jax.Array, num_seeds: int,
                     weight_init: Any = None, bias_init: Any = None,
                     weight_scale: float | Sequence[float] | None = None,
                     seed_chunk: int | None = None, num_devices: int | None = None,
                     model_kwargs: dict | None = None, train: bool | None = None,
                     fan_axes: dict | None = None) -> dict[str, Any]:
  """Singular values of every layer's input-output Jacobian at the rows of `x` (the input
  points), over `num_seeds` random initializations of `model` (arguments as `probe.measure`,
  one initializer or map: seed s is the network `probe.measure` measures with the same key).

  Returns:
    {"layers": names in forward order, "units": {layer: its output size per example (every
    step of a layer in a scan)}, "singular_values": {layer: float64 (num_seeds, points,
    min(units, input entries)), descending}, with a leading (num_scales,) axis when
    `weight_scale` is a sequence}. Non-finite values (an overflow) come back as they are;
    `initjax.measurement.isometry.summarize` leaves such networks out.
  """
  # pylint: disable=protected-access  (the probe's own argument checks)
  x = measurement._check_common(num_seeds, x)
  if isinstance(weight_init, (list, tuple)):
    raise ProbeError("jacobian_spectra takes one weight_init (a name, callable or map), not a "
                     "list: call it once per initializer")
  keys = measurement._seed_keys(key, num_seeds)
  scales, stacked = measurement._scales(weight_scale)
  # pylint: enable=protected-access
  prep = prepare(model, x, weight_init=weight_init, bias_init=bias_init,
                 model_kwargs=model_kwargs, train=train, fan_axes=fan_axes)
  c, plan = prep.core, prep.plan
  rows = x.shape[0]
  units = {n: _units(c, n, rows) for n in c.layers}
  work = parallel.workers(parallel.local_devices(num_devices), uses_lapack=True)  # the SVDs
  if seed_chunk is None:
    seed_chunk = measurement.default_seed_chunk(prep.bytes_per_seed, work[0])
  n_items = len(scales) * num_seeds
  index = np.arange(n_items)
  items = (keys[index % num_seeds],
           jnp.asarray(scales[index // num_seeds], jnp.result_type(float)))
  shared = (x, jnp.asarray(plan.select_CxL[0]),
            jnp.asarray(plan.std_CxL[0], jnp.result_type(float)))
  out = parallel.map_items(_per_item(c, plan.static, max(units.values())), items,
                           chunk=int(max(1, min(seed_chunk, n_items))), worker_devices=work,
                           shared=shared, lower_context=_jax_internals.unrolled_threefry_on_cpu)
  lead = (len(scales),) if stacked else ()
  return {"layers": c.layers, "units": units,
          "singular_values": {n: np.asarray(out[n], np.float64).reshape(
              lead + (num_seeds,) + out[n].shape[1:]) for n in c.layers}}
