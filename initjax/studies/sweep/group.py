"""Running one group of a sweep: every seed of every grid point that shares a compiled program,
trained in one vmapped call, turned into tidy rows and summaries."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initjax import training
from initjax.core import distributed, parallel, progress
from initjax.measurement import propagation
from initjax.nn import initializers
from initjax.nn.redraw import path_name
from initjax.studies.sweep import summary as summary_lib
from initjax.studies.sweep.config import SweepConfig, fan_in_variance, init_arguments
from initjax.studies.sweep.grid import GridPoint, point_keys, stable_int
from initjax.theory import architectures
from initjax.training import batch_training
from initjax.training import data as data_lib
from initjax.training import parametrization as pz

INIT_CHUNK = 1000   # networks drawn between two looks at the clock (and at a pending signal)
CSV_COLUMNS = ("point_id", "arch", "init", "depth", "width", "activation", "optimizer",
               "learning_rate", "seed", "step", "metric", "layer", "value", "recurrent_init")


def registered_init(init: str) -> tuple[str, dict[str, Any], float]:
  """(registered initializer, its keyword arguments, variance multiplier) for an init of the
  sweep: "sigma2_w=v" is LeCun's plain normal (variance 1 / fan_in) times v; "NAME" and
  "NAME:KEY=VALUE" are that initializer with those arguments, times 1."""
  value = fan_in_variance(init)
  if value is not None:
    return "lecun_normal", {}, value
  name, kwargs = init_arguments(init)
  return name, kwargs, 1.0


@functools.lru_cache(maxsize=64)
def weight_initializer(init: str):
  """`init(key, shape, dtype)` for an init of the sweep (NAME, NAME:KEY=VALUE or
  "sigma2_w=v"); one object per spec, so programs keyed by it are reused."""
  value = fan_in_variance(init)
  if value is None:
    name, kwargs = init_arguments(init)
    return initializers.get_initializer(name, **kwargs)
  return initializers.variance_scaling(value, "fan_in", "normal")


@dataclasses.dataclass
class PointResult:
  """One grid point: its records (NumPy, leading axis = seed index), tidy rows and summary."""
  point: GridPoint
  records: dict[str, np.ndarray]
  eval_steps: np.ndarray
  stats_steps: np.ndarray
  rows: list[dict[str, Any]]
  summary: dict[str, Any]


def load_data(config: SweepConfig) -> dict[str, Any]:
  """The sweep's data set (the teacher-student teacher is drawn from --seed)."""
  if config.dataset == "teacher_student":
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), stable_int("dataset"))
    return data_lib.get_dataset("teacher_student", key=key)
  return data_lib.get_dataset(config.dataset, data_dir=config.data_dir or None)


def point_options(config: SweepConfig, point: GridPoint) -> architectures.ArchOptions:
  """The architecture options of a grid point: the sweep's, with its normalization and its
  recurrent initializer."""
  options = config.arch_options(point.norm)
  if not point.recurrent_init:
    return options
  return dataclasses.replace(options, recurrent_init=point.recurrent_init)


def train_spec(config: SweepConfig, optimizer: str, task: str) -> training.TrainSpec:
  """The static training settings shared by one group."""
  return training.TrainSpec(optimizer=optimizer, steps=config.steps,
                            batch_size=config.batch_size, task=task,
                            eval_every=config.eval_every, stats_every=config.stats_every,
                            stats_batch_size=config.stats_batch_size)


def signal_at_init(point: GridPoint, *, input_dim: int, output_dim: int, num_seeds: int,
                   seed: int, bias_variance: float = 0.0,
                   options: architectures.ArchOptions = architectures.ArchOptions(),
                   num_devices: int | None = None) -> dict[str, float]:
  """Signal propagation at initialization of a grid point's network, from `initjax.propagation`.

  The book's setting (standard-normal inputs of the data's dimension, least-squares loss with
  y = 0, 100 inputs per network) over `num_seeds` random networks: the change of log10 variance
  per layer, forward (Var[h_k]) and backward (Var[dl/dh_k], towards the input), measured (median
  over the networks) and predicted by `initjax.theory` (for the MLP, exact in log space; for the
  other architectures, `propagation.measure_architecture`). Negative backward = vanishing
  gradients. Networks of one shape compile one program, whatever their initializers. The
  seeds are spread over the first `num_devices` local devices (default all). Their last digits
  depend on that count (it sets the seed chunks), so the sweep always uses all local devices.
  """
  return dict(_signal_at_init(point.arch, point.init, point.width, point.depth,
                              point.activation, input_dim, output_dim, num_seeds, seed,
                              float(bias_variance), options, num_devices))


@functools.lru_cache(maxsize=256)
def _signal_at_init(arch: str, init: str, width: int, depth: int, activation: str,
                    input_dim: int, output_dim: int, num_seeds: int, seed: int,
                    bias_variance: float, options: architectures.ArchOptions,
                    num_devices: int | None) -> tuple:
  key = jax.random.fold_in(jax.random.PRNGKey(seed), stable_int(init))
  name, kwargs, scale = registered_init(init)
  draw = weight_initializer(init) if kwargs else name
  if arch == "mlp" and options.norm == "none":
    spec = propagation.NetworkSpec(input_dim=input_dim, width=width, depth=depth,
                                   output_dim=output_dim, activation=activation,
                                   bias_variance=bias_variance, batch_size=100)
    out = propagation.measure(key, spec, weight_init=draw, scales=(scale,), num_seeds=num_seeds,
                              num_devices=num_devices)
    pred = propagation.theory_for(spec, name, scale, kwargs).as_dict()
  else:
    shape = dict(input_shape=(input_dim,), width=width, depth=depth, output_dim=output_dim)
    out = propagation.measure_architecture(
        key, arch, activation=activation, options=options, batch_size=100,
        bias_variance=bias_variance, weight_init=draw, scales=(scale,), num_seeds=num_seeds,
        num_devices=num_devices, **shape)
    pred = architectures.predict_for_init(architectures.get(arch), name, scale=scale,
                                          sigma2_b=bias_variance, activation=activation,
                                          options=options, init_kwargs=kwargs, **shape)
  slopes = propagation.layer_slopes(depth, {q: v[0] for q, v in out.items()}, pred)
  return tuple(sorted(slopes.items()))


def point_rows(point: GridPoint, records: dict[str, np.ndarray], per_seed: dict[str, np.ndarray],
               eval_at: np.ndarray, stats_at: np.ndarray, config: SweepConfig) -> list[dict]:
  """Tidy rows: train_loss every log_every steps (and the last step), test metrics, per-layer
  statistics (layer = k of h_k for var_h/var_dl_dh, of f_k for var_dl_df; the architecture's
  `Model.layer_index` says where each starts), and per-seed summaries (step empty;
  steps_to_threshold empty = never)."""
  # The CSV's columns (`CSV_COLUMNS`); a normalization other than none and a parametrization
  # other than sp are in the point_id.
  base = {"point_id": point.point_id,
          **{k: v for k, v in dataclasses.asdict(point).items()
             if k not in ("norm", "parametrization")}}
  steps = config.steps
  log_at = sorted(set(range(0, steps + 1, config.log_every)) | {steps})
  rows = []
  n = records["train_loss"].shape[0]
  model = architectures.get(point.arch).model(point.activation, point_options(config, point))
  layers = {name: range(first, first + records[name].shape[-1])
            for name, first in model.layer_index if name in records}
  for s in range(n):
    seed_base = {**base, "seed": s}
    for step in log_at:
      rows.append({**seed_base, "step": step, "metric": "train_loss", "layer": None,
                   "value": float(records["train_loss"][s, step])})
    for metric in ("test_loss", "test_accuracy"):
      if metric in records:
        for j, step in enumerate(eval_at):
          rows.append({**seed_base, "step": int(step), "metric": metric, "layer": None,
                       "value": float(records[metric][s, j])})
    for j, step in enumerate(stats_at):
      rows.append({**seed_base, "step": int(step), "metric": "stats_loss", "layer": None,
                   "value": float(records["stats_loss"][s, j])})
      for metric, ks in layers.items():
        for i, k in enumerate(ks):
          rows.append({**seed_base, "step": int(step), "metric": metric, "layer": k,
                       "value": float(records[metric][s, j, i])})
    for metric, values in per_seed.items():
      value = values[s]
      rows.append({**seed_base, "step": None, "metric": metric, "layer": None,
                   "value": float(value) if metric != "diverged_step" else int(value)})
  return rows


def point_result(point: GridPoint, records: dict[str, np.ndarray], config: SweepConfig,
                 spec: training.TrainSpec, data: dict[str, Any],
                 num_devices: int | None = None) -> PointResult:
  """A grid point's records turned into tidy rows and its summary (with `signal_at_init`)."""
  eval_at, stats_at = training.eval_steps(spec), training.stats_steps(spec)
  per_seed = summary_lib.seed_summaries(records, config.loss_threshold, data["task"],
                                        data["num_classes"])
  signal = signal_at_init(point, input_dim=int(data["x_train"].shape[1]),
                          output_dim=data["output_dim"], num_seeds=config.num_seeds,
                          seed=config.seed, bias_variance=config.bias_variance,
                          options=point_options(config, point), num_devices=num_devices)
  return PointResult(point=point, records=records, eval_steps=eval_at, stats_steps=stats_at,
                     rows=point_rows(point, records, per_seed, eval_at, stats_at, config),
                     summary={**summary_lib.point_summary(point, per_seed),
                              "signal_at_init": signal})


def parametrized(point: GridPoint, params_B: Any, spec: training.TrainSpec,
                 config: SweepConfig, data: dict[str, Any]) -> tuple[Any, training.TrainSpec]:
  """The group's SP-drawn networks and spec under `point.parametrization` at its width
  (`initjax.training.parametrization`, in its multiplier-free form `absorbed`, since the
  built-in models have no forward multipliers): every leaf's init rescaled, and the per-leaf
  learning-rate multipliers as the spec's `update_scales`."""
  arch, options = architectures.get(point.arch), config.arch_options()

  def shapes(width):
    return jax.eval_shape(lambda k: arch.init(
        k, input_shape=data["x_train"].shape[1:], width=width, depth=point.depth,
        output_dim=data["output_dim"], weight_init=weight_initializer(point.init),
        options=options), jax.random.PRNGKey(0))

  kinds = pz.classify(shapes(point.width), shapes(2 * point.width))
  plan = pz.absorbed(pz.plan(point.parametrization, point.optimizer, kinds, point.width,
                             config.base()))
  params_B = jax.tree.map(lambda x, c: x * jnp.asarray(c, x.dtype), params_B, plan.init_scale)
  scales = tuple((path_name(p), float(v))
                 for p, v in jax.tree_util.tree_flatten_with_path(plan.lr_scale)[0])
  return params_B, dataclasses.replace(spec, update_scales=scales)


def run_group(points: Sequence[GridPoint], data: dict[str, Any], config: SweepConfig,
              key: jax.Array, devices: Sequence[Any] | None = None, block: int | None = None,
              checkpoint: batch_training.Checkpoint | None = None) -> dict[str, PointResult]:
  """Trains every seed of every point of one group in one vmapped, jit-compiled program.

  Args:
    points: grid points sharing depth, width, activation and optimizer (`group_points`); any
      subset of a group gives the same per-point results.
    data: a data dict (`initjax.data`).
    config: the sweep config.
    key: the sweep's root key, PRNGKey(config.seed).
    devices: the devices the networks are spread over (default: all local devices).
    block: networks per device per call (default: `group_block`); results depend on it, not on
      the number of devices.
    checkpoint: saves the group's training state between segments (`initjax.checkpoints`).
  """
  if len({p.group_key for p in points}) != 1:
    raise ValueError("run_group needs points with one arch, depth, width, activation and "
                     "optimizer")
  first = points[0]
  arch, options = architectures.get(first.arch), point_options(config, first)
  spec = train_spec(config, first.optimizer, data["task"])
  bias_init = (initializers.normal(config.bias_variance) if config.bias_variance > 0 else None)
  params, data_keys, lrs = [], [], []
  drawing = progress.Progress(f"depth {first.depth}, width {first.width}: drawing the initial "
                              "parameters", len(points) * config.num_seeds, "networks")
  for j, p in enumerate(points):
    distributed.check_interrupted()
    init_keys, keys = point_keys(key, p, config.num_seeds)
    draw = functools.partial(
        architectures.init_networks, arch, weight_init=weight_initializer(p.init),
        input_shape=data["x_train"].shape[1:], width=p.width, depth=p.depth,
        output_dim=data["output_dim"], bias_init=bias_init, options=point_options(config, p))
    if config.num_seeds <= INIT_CHUNK:
      params.append(draw(init_keys))
    else:   # in pieces, to say how far it is (each network from its own key: the same values)
      pieces = []
      for s in range(0, config.num_seeds, INIT_CHUNK):
        distributed.check_interrupted()
        pieces.append(draw(init_keys[s:s + INIT_CHUNK]))
        drawing.update(j * config.num_seeds + min(s + INIT_CHUNK, config.num_seeds))
      params.append(jax.tree.map(lambda *a: jnp.concatenate(a), *pieces))
    data_keys.append(keys)
    lrs.append(jnp.full((config.num_seeds,), p.learning_rate, jnp.float32))
  params_B = jax.tree.map(lambda *a: jnp.concatenate(a), *params)
  if first.parametrization != "sp":
    params_B, spec = parametrized(first, params_B, spec, config, data)
  state_B = architectures.init_states(arch, params_B, options)
  out = batch_training.run_networks(
      arch.model(first.activation, options), params_B, jnp.concatenate(data_keys),
      jnp.concatenate(lrs), data_lib.device_arrays(data), spec, devices=devices,
      block=block or group_block(points, config, data, devices or jax.local_devices()),
      checkpoint=checkpoint, **({"state_B": state_B} if jax.tree.leaves(state_B) else {}))
  n = config.num_seeds
  # The signal at initialization is measured on every local device, whatever `devices`: its
  # seed chunks (and so its last digits) depend on the device count, the point files must not.
  return {p.point_id: point_result(p, {k: v[i * n:(i + 1) * n] for k, v in out.items()}, config,
                                   spec, data)
          for i, p in enumerate(points)}


def network_bytes(point: GridPoint, config: SweepConfig, data: dict[str, Any]) -> float:
  """A generous estimate of the device memory one network needs while training (float32):
  parameters, gradients, optimizer state and update; a step's activations and their gradients;
  the per-layer statistics; the test-set evaluation; the epoch permutation; the records; x2."""
  input_shape = tuple(int(d) for d in data["x_train"].shape[1:])
  out, k = int(data["output_dim"]), point.depth
  n_params = architectures.parameter_count(architectures.get(point.arch), input_shape,
                                           point.width, k, out,
                                           point_options(config, point))
  # Units of one layer's output per example: the CNN keeps the sequence length.
  w = point.width * (input_shape[0] if point.arch == "cnn" else 1)
  n_train, n_test = int(data["x_train"].shape[0]), int(data["x_test"].shape[0])
  n_stats = len(range(0, config.steps + 1, config.stats_every)) + 1
  floats = (6 * n_params + 4 * config.batch_size * w * k + 6 * config.stats_batch_size * w * k
            + 3 * n_test * max(w, out) + 4 * n_train + (config.steps + 1) + 3 * n_stats * k)
  return 2.0 * 4 * floats


def group_block(points: Sequence[GridPoint], config: SweepConfig, data: dict[str, Any],
                devices: Sequence[Any], seed_chunk: int = 0) -> int:
  """Networks per worker per call for a group: `seed_chunk` when given; on CPU devices one
  network (`parallel.default_block`: a core runs one network as fast as a vmapped block);
  else one grid point's seeds, fewer if they do not fit in half of a device's available memory.
  It does not depend on the number of devices, so neither do the results."""
  if seed_chunk:
    return seed_chunk
  device = devices[0]
  if device.platform == "cpu":
    return parallel.default_block(config.num_seeds, devices)
  per_network = network_bytes(points[0], config, data)
  fits = parallel.chunk_size(config.num_seeds, per_network, [device])
  return -(-config.num_seeds // -(-config.num_seeds // fits))  # equal blocks, each <= fits
