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
from initjax.measurement.probe.recorder import Recorder, recording


def point_jacobians(prep, params: Any, x_point: jax.Array) -> dict[str, jax.Array]:
  """{layer: d output / d x_point}, each (units, entries of x_point), for one network."""
  def outputs(x_one):
    with recording(Recorder()) as recorder:
      prep.model.apply(params, x_one[None], prep.include_top)
    return {n: recorder.outputs[n][0].reshape(-1) for n in prep.layers}

  entries = math.prod(x_point.shape)
  widest = max(math.prod(s.shape[1:]) for s in prep.shapes)
  jac = (jax.jacfwd if entries <= widest else jax.jacrev)(outputs)(x_point)
  return {n: j.reshape(j.shape[0], entries) for n, j in jac.items()}


@functools.lru_cache(maxsize=32)
def _per_item(prep) -> Callable:
  def one(item, x):
    key, scale = item
    params = measurement.network(prep, key, scale, x)
    per_point = lambda x_point: {n: jnp.linalg.svd(j, compute_uv=False)
                                 for n, j in point_jacobians(prep, params, x_point).items()}
    return jax.vmap(per_point)(x)
  return one


def jacobian_spectra(model: Any, x: Any, *, key: jax.Array, num_seeds: int,
                     weight_init: str | Callable | None = None,
                     bias_init: str | Callable | None = None,
                     weight_scale: float | Sequence[float] | None = None,
                     seed_chunk: int | None = None,
                     num_devices: int | None = None) -> dict[str, Any]:
  """Singular values of every layer's input-output Jacobian at the rows of `x` (the input
  points), over `num_seeds` random initializations of `model` (arguments as `probe.measure`:
  seed s is the network `probe.measure` measures with the same key).

  Returns:
    {"layers": names in forward order, "units": {layer: its output size}, "singular_values":
    {layer: float64 (num_seeds, points, min(units, input entries)), descending}, with a leading
    (num_scales,) axis when `weight_scale` is a sequence}. Non-finite values (an overflow) come
    back as they are; `initjax.measurement.isometry.summarize` leaves such networks out.
  """
  # pylint: disable=protected-access  (the probe's own argument checks and preparation)
  x = measurement._check_common(num_seeds, x)
  keys = measurement._seed_keys(key, num_seeds)
  scales, stacked = measurement._scales(weight_scale)
  prep = measurement._prepared(model, x, weight_init, bias_init, None)
  # pylint: enable=protected-access
  work = parallel.workers(parallel.local_devices(num_devices), uses_lapack=True)  # the SVDs
  if seed_chunk is None:
    seed_chunk = measurement.default_seed_chunk(prep.bytes_per_seed, work[0])
  n_items = len(scales) * num_seeds
  index = np.arange(n_items)
  items = (keys[index % num_seeds],
           jnp.asarray(scales[index // num_seeds], jnp.result_type(float)))
  out = parallel.map_items(_per_item(prep), items, chunk=int(max(1, min(seed_chunk, n_items))),
                           worker_devices=work, shared=x,
                           lower_context=_jax_internals.unrolled_threefry_on_cpu)
  lead = (len(scales),) if stacked else ()
  return {"layers": prep.layers,
          "units": {n: math.prod(s.shape[1:]) for n, s in zip(prep.layers, prep.shapes)},
          "singular_values": {n: np.asarray(out[n], np.float64).reshape(
              lead + (num_seeds,) + out[n].shape[1:]) for n in prep.layers}}
