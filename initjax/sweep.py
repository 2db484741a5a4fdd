"""Training sweeps over initializers, depths, widths, activations, optimizers and learning rates.

The pieces are separate so that a sweep can be split into batch jobs (one results file per grid
point) without changing the science:

  `SweepConfig`     every setting of a sweep (the entry point's flags, one to one)
  `expand_grid`     config -> [GridPoint], each with a stable string id
  `group_points`    grid points that share one compiled program (same depth, width, activation
                    and optimizer; initializers, learning rates and seeds are data on its
                    vmapped axis)
  `run_group`       trains one group -> {point_id: PointResult} (tidy rows + summary numbers)
  `task_points`     a batch task's share of the grid (`work_units` balanced over the tasks)
  `run_task`        runs one task's unfinished points, writing each point's files as it finishes
                    (points/<point_id>.csv, then points/<point_id>.json, which marks it done)
  `load_results`    the finished points of a sweep directory, read back from those files
  `summarize`       the summary table, one row per grid point
  `write_outputs`   results.csv, summary.json, loss_curves.png, gradient_variance.png
  `write_report`    load_results + write_outputs (`experiments.report`; a one-task run too)

Randomness (paired comparisons): from `--seed` and only the parameters that should matter,
  * initial weights of seed index i: (seed, depth, width, activation, i), so every initializer,
    optimizer and learning rate starts from the same underlying draws (He and Xavier, both plain
    normals, get weights that differ only by a constant factor);
  * minibatch order of seed index i: (seed, i), the same for every grid point;
  * teacher-student data: (seed).
A grid point's results therefore do not depend on which other points are in the sweep, nor on
which points share its compiled program, its task, its devices or its seed chunk (they agree to
float tolerance: only XLA's batching of the vmapped axis differs).

Files under --output_dir: sweep_config.json (the last run's SweepConfig), points/<id>.csv (a
point's tidy rows) and points/<id>.json (its summary, its configuration and their fingerprint),
and the merged results.csv, summary.json and figures. A point's configuration is its grid
parameters plus the settings that change its numbers (`POINT_SETTINGS`), so adding depths or
inits to a sweep reuses the points already computed.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
import time
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initjax import data as data_lib
from initjax import distributed, training
from initjax.activations import activation_names
from initjax.initializers import initializer_names
from initjax.optimizers import DEFAULT_LEARNING_RATES, optimizer_names
from initjax.results import atomic_savefig, atomic_write_csv, atomic_write_json

CSV_COLUMNS = ("point_id", "init", "depth", "width", "activation", "optimizer", "learning_rate",
               "seed", "step", "metric", "layer", "value")


class ConfigError(ValueError):
  """A setting of a SweepConfig is not allowed; `field` names it (same name as the flag)."""

  def __init__(self, field: str, message: str):
    super().__init__(f"{field}: {message}")
    self.field = field
    self.message = message


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """Every setting of a sweep.

  learning_rates: optimizer -> learning rates; an optimizer missing from it uses
  `initjax.optimizers.DEFAULT_LEARNING_RATES` (momentum 0.01, adam 0.001, ...).
  """
  inits: tuple[str, ...] = ("he_normal", "xavier_normal")
  depths: tuple[int, ...] = (10, 30)
  widths: tuple[int, ...] = (100,)
  activations: tuple[str, ...] = ("relu",)
  optimizers: tuple[str, ...] = ("momentum", "adam")
  learning_rates: tuple[tuple[str, tuple[float, ...]], ...] = ()
  num_seeds: int = 8
  steps: int = 1000
  batch_size: int = 100
  dataset: str = "mnist1d"
  seed: int = 0
  log_every: int = 10
  eval_every: int = 100
  stats_every: int = 250
  stats_batch_size: int = 256
  loss_threshold: float = 1.5
  data_dir: str = ""

  def learning_rates_for(self, optimizer: str) -> tuple[float, ...]:
    given = dict(self.learning_rates)
    return tuple(given.get(optimizer, (DEFAULT_LEARNING_RATES[optimizer],)))

  def to_dict(self) -> dict[str, Any]:
    """Plain JSON-ready dict; learning_rates resolved per optimizer."""
    d = dataclasses.asdict(self)
    d["learning_rates"] = {o: list(self.learning_rates_for(o)) for o in self.optimizers}
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "SweepConfig":
    """The inverse of `to_dict` (unknown keys are ignored)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields}
    kwargs["learning_rates"] = tuple((o, tuple(float(lr) for lr in lrs))
                                     for o, lrs in dict(d.get("learning_rates") or {}).items())
    return cls(**kwargs)


def _check_names(field: str, values: Sequence[str], allowed: Sequence[str]) -> None:
  if not values:
    raise ConfigError(field, f"needs at least one of: {', '.join(allowed)}")
  for v in values:
    if v not in allowed:
      raise ConfigError(field, f"unknown value {v!r}; allowed: {', '.join(allowed)}")


def _check_int(field: str, value: Any, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ConfigError(field, f"must be an integer >= {minimum}; got {value!r}")


def check_config(config: SweepConfig) -> SweepConfig:
  """Validates every setting; raises ConfigError(field, message listing what is allowed)."""
  _check_names("inits", config.inits, initializer_names())
  _check_names("activations", config.activations, activation_names())
  _check_names("optimizers", config.optimizers, optimizer_names())
  _check_names("dataset", [config.dataset], data_lib.dataset_names())
  for field in ("depths", "widths"):
    values = getattr(config, field)
    if not values:
      raise ConfigError(field, "needs at least one value")
    for v in values:
      _check_int(field, v, 1)
  for optimizer, lrs in config.learning_rates:
    if optimizer not in config.optimizers:
      raise ConfigError("learning_rates", f"optimizer {optimizer!r} is not in --optimizers "
                        f"({', '.join(config.optimizers)})")
    for lr in lrs:
      if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError("learning_rates", f"learning rates must be finite numbers > 0; got {lr}")
  for field in ("num_seeds", "steps", "batch_size", "log_every", "eval_every", "stats_every",
                "stats_batch_size"):
    _check_int(field, getattr(config, field), 1)
  _check_int("seed", config.seed, 0)
  n_train = data_lib.dataset_info(config.dataset)["n_train"]
  if config.batch_size > n_train:
    raise ConfigError("batch_size", f"must be <= {n_train} (training examples of "
                      f"{config.dataset}); got {config.batch_size}")
  if not (math.isfinite(config.loss_threshold) and config.loss_threshold > 0):
    raise ConfigError("loss_threshold", f"must be a finite number > 0; got {config.loss_threshold}")
  return config


def parse_learning_rates(entries: Sequence[str],
                         optimizers: Sequence[str]) -> tuple[tuple[str, tuple[float, ...]], ...]:
  """Parses learning-rate entries: "OPT:LR" (for optimizer OPT) or "LR" (for every optimizer).

  Several entries may name the same optimizer (a learning-rate sweep). Optimizers without an
  entry are left out (they get DEFAULT_LEARNING_RATES). Raises ConfigError("learning_rates").
  """
  per_opt: dict[str, list[float]] = {}
  for entry in entries:
    entry = entry.strip()
    if not entry:
      continue
    names = list(optimizers)
    value = entry
    if ":" in entry:
      name, value = (s.strip() for s in entry.split(":", 1))
      if name not in optimizer_names():
        raise ConfigError("learning_rates", f"unknown optimizer {name!r} in {entry!r}; allowed: "
                          f"{', '.join(optimizer_names())}")
      if name not in optimizers:
        raise ConfigError("learning_rates", f"optimizer {name!r} is not in --optimizers "
                          f"({', '.join(optimizers)})")
      names = [name]
    try:
      lr = float(value)
    except ValueError:
      raise ConfigError("learning_rates", f"{entry!r} is not LR or OPTIMIZER:LR with LR a "
                        "number") from None
    if not (math.isfinite(lr) and lr > 0):
      raise ConfigError("learning_rates", f"learning rates must be finite numbers > 0; got {value}")
    for name in names:
      if lr not in per_opt.setdefault(name, []):
        per_opt[name].append(lr)
  return tuple((o, tuple(per_opt[o])) for o in optimizers if o in per_opt)


# ----------------------------------------------------------------------------------------------
# The grid.

@dataclasses.dataclass(frozen=True)
class GridPoint:
  init: str
  depth: int
  width: int
  activation: str
  optimizer: str
  learning_rate: float

  @property
  def point_id(self) -> str:
    """Stable, file-name-safe id, e.g. he_normal-d30-w100-relu-momentum-lr0.01."""
    return (f"{self.init}-d{self.depth}-w{self.width}-{self.activation}-{self.optimizer}"
            f"-lr{self.learning_rate:g}")

  @property
  def group_key(self) -> tuple:
    """Points with the same group_key share one compiled training program."""
    return (self.depth, self.width, self.activation, self.optimizer)


def expand_grid(config: SweepConfig) -> list[GridPoint]:
  """All grid points, ordered depth, width, activation, optimizer, learning rate, init."""
  return [GridPoint(init, depth, width, activation, optimizer, float(lr))
          for depth in config.depths for width in config.widths
          for activation in config.activations for optimizer in config.optimizers
          for lr in config.learning_rates_for(optimizer) for init in config.inits]


def group_points(points: Sequence[GridPoint]) -> list[list[GridPoint]]:
  """Groups points sharing a compiled program (same depth/width/activation/optimizer), in order."""
  groups: dict[tuple, list[GridPoint]] = {}
  for p in points:
    groups.setdefault(p.group_key, []).append(p)
  return list(groups.values())


def _stable_int(text: str) -> int:
  return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little")


def point_keys(key: jax.Array, point: GridPoint, num_seeds: int) -> tuple[jax.Array, jax.Array]:
  """(init keys, data keys), num_seeds each, for a grid point (see the module docstring)."""
  k_init = jax.random.fold_in(key, _stable_int(
      f"init/depth={point.depth}/width={point.width}/activation={point.activation}"))
  k_data = jax.random.fold_in(key, _stable_int("minibatch_order"))
  return _fold_in_range(k_init, num_seeds), _fold_in_range(k_data, num_seeds)


@functools.partial(jax.jit, static_argnums=1)
def _fold_in_range(key: jax.Array, n: int) -> jax.Array:
  """[fold_in(key, 0), ..., fold_in(key, n - 1)]: seed i's key does not depend on n."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))


def load_data(config: SweepConfig) -> dict[str, Any]:
  """The sweep's data set (the teacher-student teacher is drawn from --seed)."""
  if config.dataset == "teacher_student":
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), _stable_int("dataset"))
    return data_lib.get_dataset("teacher_student", key=key)
  return data_lib.get_dataset(config.dataset, data_dir=config.data_dir or None)


def train_spec(config: SweepConfig, activation: str, optimizer: str,
               task: str) -> training.TrainSpec:
  """The static training settings shared by one group."""
  return training.TrainSpec(activation=activation, optimizer=optimizer, steps=config.steps,
                            batch_size=config.batch_size, task=task,
                            eval_every=config.eval_every, stats_every=config.stats_every,
                            stats_batch_size=config.stats_batch_size)


# ----------------------------------------------------------------------------------------------
# Running a group.

@dataclasses.dataclass
class PointResult:
  """One grid point: its records (NumPy, leading axis = seed index), tidy rows and summary."""
  point: GridPoint
  records: dict[str, np.ndarray]
  eval_steps: np.ndarray
  stats_steps: np.ndarray
  rows: list[dict[str, Any]]
  summary: dict[str, Any]


def seed_summaries(records: dict[str, np.ndarray], config: SweepConfig, task: str,
                   num_classes: int | None) -> dict[str, np.ndarray]:
  """Per seed: final_train_loss, diverged_step, stalled (0/1), steps_to_threshold (NaN = never),
  final_test_accuracy (classification)."""
  n = records["train_loss"].shape[0]
  final = np.array([training.final_train_loss(records["train_loss"][s]) for s in range(n)])
  diverged = records["diverged_step"].astype(np.int64)
  stalled = np.array([
      training.is_stalled(final[s], training.stall_reference(
          task, num_classes, records["stats_loss"][s, 0]), bool(diverged[s] >= 0))
      for s in range(n)], np.int64)
  reach = [training.steps_to_threshold(records["train_loss"][s], config.loss_threshold)
           for s in range(n)]
  out = {"final_train_loss": final, "diverged_step": diverged, "stalled": stalled,
         "steps_to_threshold": np.array([np.nan if r is None else r for r in reach], np.float64)}
  if "test_accuracy" in records:
    out["final_test_accuracy"] = records["test_accuracy"][:, -1].astype(np.float64)
  return out


def point_summary(point: GridPoint, per_seed: dict[str, np.ndarray]) -> dict[str, Any]:
  """Summary numbers of one grid point over its seeds.

  median_final_train_loss and test accuracy mean/std are over the seeds that did not diverge;
  median_steps_to_threshold counts "never" (and diverged seeds) as infinitely many steps, and is
  None ("never") when that median is infinite.
  """
  n = per_seed["final_train_loss"].shape[0]
  alive = per_seed["diverged_step"] < 0

  def nan_stat(fn, x):
    x = x[alive & np.isfinite(x)]
    return float(fn(x)) if x.size else float("nan")

  reach = np.where(np.isnan(per_seed["steps_to_threshold"]), np.inf, per_seed["steps_to_threshold"])
  median_reach = float(np.median(reach))
  summary = {"point_id": point.point_id, **dataclasses.asdict(point), "num_seeds": n,
             "median_final_train_loss": nan_stat(np.median, per_seed["final_train_loss"]),
             "median_steps_to_threshold": median_reach if math.isfinite(median_reach) else None,
             "num_reached_threshold": int(np.isfinite(reach).sum()),
             "num_stalled": int(per_seed["stalled"].sum()),
             "num_diverged": int((~alive).sum())}
  if "final_test_accuracy" in per_seed:
    summary["test_accuracy_mean"] = nan_stat(np.mean, per_seed["final_test_accuracy"])
    summary["test_accuracy_std"] = nan_stat(np.std, per_seed["final_test_accuracy"])
  return summary


def signal_at_init(point: GridPoint, *, input_dim: int, output_dim: int, num_seeds: int,
                   seed: int) -> dict[str, float]:
  return dict(_signal_at_init(point.init, point.width, point.depth, point.activation,
                              input_dim, output_dim, num_seeds, seed))


@functools.lru_cache(maxsize=256)
def _signal_at_init(init: str, width: int, depth: int, activation: str, input_dim: int,
                    output_dim: int, num_seeds: int, seed: int) -> tuple:
  """Signal propagation at initialization of a grid point's network, from `initjax.propagation`.

  The book's setting (standard-normal inputs of the data's dimension, least-squares loss with
  y = 0, 100 inputs per network) over `num_seeds` random networks: the change of log10 variance
  per layer, forward (Var[h_k]) and backward (Var[dl/dh_k], towards the input), measured (median
  over the networks) and predicted by `initjax.theory`. Negative backward = vanishing gradients.
  """
  from initjax import propagation, propagation_experiment  # pylint: disable=import-outside-toplevel
  spec = propagation.NetworkSpec(input_dim=input_dim, width=width, depth=depth,
                                 output_dim=output_dim, activation=activation, batch_size=100)
  key = jax.random.fold_in(jax.random.PRNGKey(seed), _stable_int(init))
  out = propagation.measure(key, spec, weight_init=init, num_seeds=num_seeds)
  pred = propagation.theory_for(spec, init, 1.0)
  slopes = propagation_experiment.layer_slopes(depth, {q: v[0] for q, v in out.items()},
                                               pred.as_dict())
  return tuple(sorted(slopes.items()))


def point_rows(point: GridPoint, records: dict[str, np.ndarray], per_seed: dict[str, np.ndarray],
               eval_at: np.ndarray, stats_at: np.ndarray, config: SweepConfig) -> list[dict]:
  """Tidy rows: train_loss every log_every steps (and the last step), test metrics, per-layer
  statistics (layer = k of h_k for var_h/var_dl_dh, of f_k for var_dl_df), and per-seed
  summaries (step empty; steps_to_threshold empty = never)."""
  base = {"point_id": point.point_id, **dataclasses.asdict(point)}
  steps = config.steps
  log_at = sorted(set(range(0, steps + 1, config.log_every)) | {steps})
  rows = []
  n = records["train_loss"].shape[0]
  depth = point.depth
  layers = {"var_h": range(1, depth + 1), "var_dl_dh": range(1, depth + 1),
            "var_dl_df": range(0, depth)}
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


def run_group(points: Sequence[GridPoint], data: dict[str, Any], config: SweepConfig,
              key: jax.Array, devices: Sequence[Any] | None = None,
              chunk: int | None = None) -> dict[str, PointResult]:
  """Trains every seed of every point of one group in one vmapped, jit-compiled program.

  Args:
    points: grid points sharing depth, width, activation and optimizer (`group_points`); any
      subset of a group gives the same per-point results.
    data: a data dict (`initjax.data`).
    config: the sweep config.
    key: the sweep's root key, PRNGKey(config.seed).
    devices: the devices the networks are sharded over (default: all local devices).
    chunk: networks per call (default: all at once); see `training.run_networks`.
  """
  if len({p.group_key for p in points}) != 1:
    raise ValueError("run_group needs points with one depth, width, activation and optimizer")
  first = points[0]
  task, num_classes = data["task"], data["num_classes"]
  spec = train_spec(config, first.activation, first.optimizer, task)
  input_dim = int(data["x_train"].shape[1])
  params, data_keys, lrs = [], [], []
  for p in points:
    distributed.check_interrupted()
    init_keys, keys = point_keys(key, p, config.num_seeds)
    params.append(training.init_networks(init_keys, p.init, input_dim=input_dim, width=p.width,
                                         depth=p.depth, output_dim=data["output_dim"]))
    data_keys.append(keys)
    lrs.append(jnp.full((config.num_seeds,), p.learning_rate, jnp.float32))
  params_B = jax.tree.map(lambda *a: jnp.concatenate(a), *params)
  out = training.run_networks(params_B, jnp.concatenate(data_keys), jnp.concatenate(lrs),
                              data_lib.device_arrays(data), spec, devices=devices, chunk=chunk)
  eval_at, stats_at = training.eval_steps(spec), training.stats_steps(spec)
  results = {}
  for i, p in enumerate(points):
    records = {k: v[i * config.num_seeds:(i + 1) * config.num_seeds] for k, v in out.items()}
    per_seed = seed_summaries(records, config, task, num_classes)
    results[p.point_id] = PointResult(
        point=p, records=records, eval_steps=eval_at, stats_steps=stats_at,
        rows=point_rows(p, records, per_seed, eval_at, stats_at, config),
        summary={**point_summary(p, per_seed),
                 "signal_at_init": signal_at_init(p, input_dim=input_dim,
                                                  output_dim=data["output_dim"],
                                                  num_seeds=config.num_seeds, seed=config.seed)})
  return results


def group_cost(points: Sequence[GridPoint], config: SweepConfig) -> float:
  """Relative cost of a group: networks x (depth x width^2 + width) x steps."""
  p = points[0]
  return len(points) * config.num_seeds * (p.depth * p.width ** 2 + p.width) * config.steps


def run_sweep(config: SweepConfig, log: Callable[[str], None] = print) -> dict[str, PointResult]:
  """Runs every group of the grid in this process, logging progress; returns {point_id:
  PointResult} and writes nothing (`run_task` is the resumable, file-per-point path)."""
  check_config(config)
  start = time.time()
  data = load_data(config)
  data = {**data, **training.replicate(data_lib.device_arrays(data), jax.local_devices())}
  points = expand_grid(config)
  groups = group_points(points)
  costs = [group_cost(g, config) for g in groups]
  log(f"{len(points)} grid points x {config.num_seeds} seeds in {len(groups)} compiled groups "
      f"on {jax.local_device_count()} device(s); data {config.dataset} loaded in "
      f"{time.time() - start:.1f} s")
  key = jax.random.PRNGKey(config.seed)
  results: dict[str, PointResult] = {}
  done_cost = 0.0
  for i, group in enumerate(groups):
    t0 = time.time()
    results.update(run_group(group, data, config, key))
    done_cost += costs[i]
    elapsed = time.time() - start
    remaining = elapsed * (sum(costs) - done_cost) / done_cost
    p = group[0]
    log(f"group {i + 1} of {len(groups)} (depth {p.depth}, width {p.width}, {p.activation}, "
        f"{p.optimizer}; {len(group)} grid points x {config.num_seeds} seeds) took "
        f"{time.time() - t0:.1f} s; elapsed {elapsed:.1f} s, remaining about {remaining:.0f} s")
  return results


# ----------------------------------------------------------------------------------------------
# Batch tasks: splitting the grid, per-point files, resuming.

POINTS_DIR = "points"
SWEEP_CONFIG_FILE = "sweep_config.json"
# The settings that change a grid point's numbers (with its grid parameters): a finished point
# whose stored values differ was computed by another sweep. (data_dir only says where the data
# is cached; the grid lists only say which other points exist.)
POINT_SETTINGS = ("dataset", "seed", "num_seeds", "steps", "batch_size", "log_every",
                  "eval_every", "stats_every", "stats_batch_size", "loss_threshold")


def work_units(config: SweepConfig, num_tasks: int) -> list[tuple[GridPoint, ...]]:
  """The grid cut into work units for `num_tasks` batch tasks, in grid order.

  A unit is a whole compile group, or a contiguous piece of one: a group that is a fraction f of
  the total cost is cut into ceil(num_tasks x f) pieces (at most one per grid point). Groups
  are kept whole when there are enough of them to keep every task busy (one compilation per
  group); big groups are cut when there are not, so no task idles while another trains a
  group that is most of the sweep (each piece costs one more compilation of that group).
  """
  groups = group_points(expand_grid(config))
  costs = [group_cost(g, config) for g in groups]
  total = sum(costs)
  units = []
  for group, cost in zip(groups, costs):
    pieces = min(len(group), max(1, -(-num_tasks * cost // total)))
    for idx in np.array_split(np.arange(len(group)), pieces):
      units.append(tuple(group[i] for i in idx))
  return units


def task_points(config: SweepConfig, task_index: int,
                num_tasks: int) -> list[list[GridPoint]]:
  """Task `task_index`'s share of the grid, grouped by compiled program, in grid order.

  The `work_units` are dealt to the tasks by `distributed.split_for_task` with their cost
  (longest first, to the least-loaded task): deterministic, every point in exactly one task.
  A task trains all of its points of one group together (one compilation per group per task).
  """
  units = distributed.split_for_task(work_units(config, num_tasks), task_index, num_tasks,
                                     cost=lambda unit: group_cost(unit, config))
  mine = {p.point_id for unit in units for p in unit}
  return group_points([p for p in expand_grid(config) if p.point_id in mine])


def point_config(config: SweepConfig, point: GridPoint) -> dict[str, Any]:
  """Everything a grid point's results depend on: its grid parameters and `POINT_SETTINGS`."""
  return {**dataclasses.asdict(point), **{k: getattr(config, k) for k in POINT_SETTINGS}}


def fingerprint(point_cfg: dict[str, Any]) -> str:
  """A short hash of a point's configuration (canonical JSON)."""
  text = json.dumps(point_cfg, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def point_paths(output_dir: str, point_id: str) -> tuple[str, str]:
  """(points/<point_id>.csv, points/<point_id>.json) under output_dir."""
  base = os.path.join(output_dir, POINTS_DIR, point_id)
  return base + ".csv", base + ".json"


def write_point(output_dir: str, config: SweepConfig, result: PointResult) -> None:
  """Writes a finished point: its tidy rows (CSV) first, its JSON last (it marks completion).

  Each file is written atomically (a temporary file renamed into place), so an interrupted
  write leaves the point unfinished, never a partial file under a final name.
  """
  csv_path, json_path = point_paths(output_dir, result.point.point_id)
  os.makedirs(os.path.dirname(csv_path), exist_ok=True)
  cfg = point_config(config, result.point)
  atomic_write_csv(csv_path, result.rows, CSV_COLUMNS)
  atomic_write_json(json_path, {"point_id": result.point.point_id,
                                "fingerprint": fingerprint(cfg), "config": cfg,
                                "summary": result.summary})


def read_point_json(output_dir: str, point_id: str) -> dict[str, Any] | None:
  """A point's JSON, or None when it is missing or unreadable, or its CSV is missing."""
  csv_path, json_path = point_paths(output_dir, point_id)
  try:
    with open(json_path, encoding="utf-8") as fh:
      stored = json.load(fh)
  except (OSError, ValueError):
    return None
  if not isinstance(stored, dict) or not os.path.exists(csv_path):
    return None
  return stored


def config_difference(stored: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple]:
  """{setting: (stored value, current value)} for every setting that differs."""
  stored = stored if isinstance(stored, dict) else {}
  return {k: (stored.get(k), v) for k, v in current.items() if stored.get(k) != v}


def point_state(output_dir: str, config: SweepConfig,
                point: GridPoint) -> tuple[str, dict[str, tuple]]:
  """("done", {}), ("missing", {}) or ("differs", config_difference) for one grid point."""
  stored = read_point_json(output_dir, point.point_id)
  if stored is None:
    return "missing", {}
  current = point_config(config, point)
  if stored.get("fingerprint") == fingerprint(current):
    return "done", {}
  return "differs", config_difference(stored.get("config"), current) or {
      "fingerprint": (stored.get("fingerprint"), fingerprint(current))}


def describe_difference(diff: dict[str, tuple]) -> str:
  return ", ".join(f"{k} {a!r} (now {b!r})" if isinstance(a, str) or isinstance(b, str)
                   else f"{k} {a} (now {b})" for k, (a, b) in diff.items())


def remove_stale_temp_files(directory: str, names: Sequence[str]) -> int:
  """Deletes the temporary files that `initjax.results`' atomic writers left for `names` (only a
  SIGKILL leaves them: .<name>.<random>.tmp); returns how many."""
  prefixes = tuple(f".{name}." for name in names)
  removed = 0
  try:
    entries = os.listdir(directory)
  except OSError:
    return 0
  for entry in entries:
    if entry.startswith(prefixes) and entry.endswith(".tmp"):
      try:
        os.unlink(os.path.join(directory, entry))
        removed += 1
      except OSError:
        pass
  return removed


def network_bytes(point: GridPoint, config: SweepConfig, data: dict[str, Any]) -> float:
  """A generous estimate of the device memory one network needs while training (float32):
  parameters, gradients, optimizer state and update; a step's activations and their gradients;
  the per-layer statistics; the test-set evaluation; the epoch permutation; the records; x2."""
  d_in, out, w, k = int(data["x_train"].shape[1]), int(data["output_dim"]), point.width, point.depth
  n_params = d_in * w + w + (k - 1) * (w * w + w) + w * out + out
  n_train, n_test = int(data["x_train"].shape[0]), int(data["x_test"].shape[0])
  n_stats = len(range(0, config.steps + 1, config.stats_every)) + 1
  floats = (6 * n_params + 4 * config.batch_size * w * k + 6 * config.stats_batch_size * w * k
            + 3 * n_test * max(w, out) + 4 * n_train + (config.steps + 1) + 3 * n_stats * k)
  return 2.0 * 4 * floats


def group_chunk(points: Sequence[GridPoint], config: SweepConfig, data: dict[str, Any],
                devices: Sequence[Any], seed_chunk: int = 0) -> int:
  """Networks per call for a group: `seed_chunk` when given (rounded up to a multiple of the
  device count), else as many as fit in half the available memory (`distributed.chunk_size`)."""
  b, n = len(points) * config.num_seeds, len(devices)
  if seed_chunk:
    size = min(seed_chunk, b)
    return size + (-size % n)
  return distributed.chunk_size(b, network_bytes(points[0], config, data), devices)


def run_task(config: SweepConfig, output_dir: str, task_index: int = 0, num_tasks: int = 1,
             *, devices: Sequence[Any] | None = None, seed_chunk: int = 0,
             overwrite: bool = False, log: Callable[[str], None] = print) -> dict[str, int]:
  """Runs task `task_index` of `num_tasks`: its unfinished grid points, group by group, each
  point written by `write_point` as soon as its group is trained.

  SIGINT/SIGTERM (with `distributed.raise_on_signals`) stop it once the group in progress is
  trained and saved (or before, while its networks are initialized): every file written is
  complete, and the rerun computes the rest.

  Finished points (their JSON holds this config's fingerprint) are skipped; a finished point
  computed with other settings is a ConfigError naming the first setting that differs, unless
  `overwrite` (which recomputes every point of the task). Temporary files a SIGKILL left for the
  task's points are deleted first. Nothing is written when the check fails.

  Returns:
    {"points": the task's grid points, "skipped": finished before, "computed": trained now}.
  """
  check_config(config)
  start = time.time()
  devices = list(devices or jax.local_devices())
  groups = task_points(config, task_index, num_tasks)
  mine = [p for g in groups for p in g]
  points_dir = os.path.join(output_dir, POINTS_DIR)
  os.makedirs(points_dir, exist_ok=True)
  stale = remove_stale_temp_files(points_dir, [f"{p.point_id}.{ext}" for p in mine
                                               for ext in ("csv", "json")])
  if stale:
    log(f"removed {stale} temporary file(s) that an earlier killed run left in {points_dir}")
  done = set()
  if not overwrite:
    states = {p.point_id: point_state(output_dir, config, p) for p in mine}
    differ = {pid: diff for pid, (state, diff) in states.items() if state == "differs"}
    if differ:
      first, diff = next(iter(differ.items()))
      field = next(iter(diff))
      raise ConfigError(field if field in POINT_SETTINGS else "overwrite", (
          f"{len(differ)} finished point(s) under {points_dir} were computed with other "
          f"settings: {describe_difference(diff)} (e.g. {first}); rerun with their settings, "
          "pass --overwrite to recompute them, or use another --output_dir"))
    done = {pid for pid, (state, _) in states.items() if state == "done"}
  atomic_write_json(os.path.join(output_dir, SWEEP_CONFIG_FILE), config.to_dict())
  total = len(expand_grid(config))
  log(f"task {task_index} of {num_tasks}: {len(mine)} of {total} grid points in {len(groups)} "
      f"compiled groups, {config.num_seeds} seeds each, on {len(devices)} "
      f"{devices[0].platform} device(s)")
  if done:
    log(f"skipping {len(done)} finished points")
  todo = [g for g in ([p for p in group if p.point_id not in done] for group in groups) if g]
  if not todo:
    return {"points": len(mine), "skipped": len(done), "computed": 0}
  distributed.check_interrupted()
  data = load_data(config)
  data = {**data, **training.replicate(data_lib.device_arrays(data), devices)}
  key = jax.random.PRNGKey(config.seed)
  costs = [group_cost(g, config) for g in todo]
  done_cost = 0.0
  for i, group in enumerate(todo):
    t0 = time.time()
    chunk = group_chunk(group, config, data, devices, seed_chunk)
    for result in run_group(group, data, config, key, devices, chunk).values():
      write_point(output_dir, config, result)
    done_cost += costs[i]
    elapsed = time.time() - start
    p, b = group[0], len(group) * config.num_seeds
    log(f"group {i + 1} of {len(todo)} (depth {p.depth}, width {p.width}, {p.activation}, "
        f"{p.optimizer}; {len(group)} grid points x {config.num_seeds} seeds, "
        f"{-(-b // chunk)} chunk(s) of {min(chunk, b)} networks) took {time.time() - t0:.1f} s; "
        f"elapsed {elapsed:.1f} s, remaining about "
        f"{elapsed * (sum(costs) - done_cost) / done_cost:.0f} s")
    distributed.check_interrupted()  # the group is saved: stop here if asked to
  return {"points": len(mine), "skipped": len(done), "computed": sum(len(g) for g in todo)}


def load_sweep_config(output_dir: str) -> SweepConfig:
  """The SweepConfig of the last sweep run into output_dir (its sweep_config.json).

  Raises:
    ValueError: there is none, or it cannot be read.
  """
  path = os.path.join(output_dir, SWEEP_CONFIG_FILE)
  try:
    with open(path, encoding="utf-8") as fh:
      return check_config(SweepConfig.from_dict(json.load(fh)))
  except FileNotFoundError:
    raise ValueError(f"no {SWEEP_CONFIG_FILE} in {output_dir!r}: run experiments.sweep with "
                     "this --output_dir first") from None
  except (OSError, ValueError, TypeError, ConfigError) as e:
    raise ValueError(f"cannot read {path}: {e}") from None


_INT_COLUMNS = ("depth", "width", "seed", "step", "layer")


def _parse_row(raw: dict[str, str]) -> dict[str, Any]:
  """A tidy row read back from CSV, typed as `point_rows` made it (so it writes back the same)."""
  row: dict[str, Any] = dict(raw)
  for c in _INT_COLUMNS:
    row[c] = int(raw[c]) if raw[c] != "" else None
  row["learning_rate"] = float(raw["learning_rate"])
  if raw["metric"] == "diverged_step":
    row["value"] = int(raw["value"])
  else:
    row["value"] = float(raw["value"]) if raw["value"] != "" else float("nan")
  return row


def records_from_rows(rows: Sequence[dict[str, Any]], point: GridPoint, config: SweepConfig,
                      eval_at: np.ndarray, stats_at: np.ndarray,
                      task: str) -> dict[str, np.ndarray]:
  """The records (as `run_group` returns them) that the tidy rows keep: train_loss at the logged
  steps (NaN at the others), test metrics, per-layer statistics, diverged_step."""
  n, k = config.num_seeds, point.depth
  nan = lambda *shape: np.full(shape, np.nan, np.float32)
  records = {"train_loss": nan(n, config.steps + 1), "test_loss": nan(n, len(eval_at)),
             "stats_loss": nan(n, len(stats_at)), "var_h": nan(n, len(stats_at), k),
             "var_dl_dh": nan(n, len(stats_at), k), "var_dl_df": nan(n, len(stats_at), k),
             "diverged_step": np.full((n,), -1, np.int32)}
  if task == "classification":
    records["test_accuracy"] = nan(n, len(eval_at))
  eval_slot = {int(s): j for j, s in enumerate(eval_at)}
  stats_slot = {int(s): j for j, s in enumerate(stats_at)}
  for r in rows:
    metric, s, v = r["metric"], r["seed"], r["value"]
    if metric == "train_loss":
      records["train_loss"][s, r["step"]] = v
    elif metric in ("test_loss", "test_accuracy"):
      records[metric][s, eval_slot[r["step"]]] = v
    elif metric == "stats_loss":
      records[metric][s, stats_slot[r["step"]]] = v
    elif metric in ("var_h", "var_dl_dh"):
      records[metric][s, stats_slot[r["step"]], r["layer"] - 1] = v
    elif metric == "var_dl_df":
      records[metric][s, stats_slot[r["step"]], r["layer"]] = v
    elif metric == "diverged_step":
      records[metric][s] = v
  return records


def load_point(output_dir: str, config: SweepConfig, point: GridPoint) -> PointResult:
  """A finished point read back from its files (rows typed as computed; records for figures)."""
  csv_path, json_path = point_paths(output_dir, point.point_id)
  with open(json_path, encoding="utf-8") as fh:
    summary = json.load(fh)["summary"]
  for name in ("median_final_train_loss", "test_accuracy_mean", "test_accuracy_std"):
    if name in summary and summary[name] is None:  # JSON keeps NaN as null
      summary[name] = float("nan")
  with open(csv_path, newline="", encoding="utf-8") as fh:
    rows = [_parse_row(raw) for raw in csv.DictReader(fh)]
  task = data_lib.dataset_info(config.dataset)["task"]
  spec = train_spec(config, point.activation, point.optimizer, task)
  eval_at, stats_at = training.eval_steps(spec), training.stats_steps(spec)
  return PointResult(point=point, records=records_from_rows(rows, point, config, eval_at,
                                                            stats_at, task),
                     eval_steps=eval_at, stats_steps=stats_at, rows=rows, summary=summary)


def load_results(output_dir: str, config: SweepConfig
                 ) -> tuple[dict[str, PointResult], dict[str, str]]:
  """The finished grid points under output_dir, in grid order, and {point_id: why} for the
  others ("not finished", or the settings it was computed with that differ from `config`)."""
  results, missing = {}, {}
  for point in expand_grid(config):
    distributed.check_interrupted()
    state, diff = point_state(output_dir, config, point)
    if state == "done":
      results[point.point_id] = load_point(output_dir, config, point)
    else:
      missing[point.point_id] = ("not finished" if state == "missing" else
                                 f"computed with {describe_difference(diff)}")
  return results, missing


# ----------------------------------------------------------------------------------------------
# Summaries and outputs.

def summarize(results: dict[str, PointResult]) -> list[dict[str, Any]]:
  """The summary table: one dict per grid point, in grid order."""
  return [r.summary for r in results.values()]


def format_summary_table(table: Sequence[dict[str, Any]]) -> str:
  """Plain-text table: median final train loss, test accuracy mean +- std, median steps to the
  loss threshold, seeds stalled and diverged."""
  header = ("init", "depth", "width", "activation", "optimizer", "lr", "final loss",
            "test acc", "steps to thr", "stalled", "diverged")
  lines = []
  for row in table:
    acc = ("-" if "test_accuracy_mean" not in row else
           f"{row['test_accuracy_mean']:.3f} +- {row['test_accuracy_std']:.3f}")
    reach = row["median_steps_to_threshold"]
    lines.append((row["init"], str(row["depth"]), str(row["width"]), row["activation"],
                  row["optimizer"], f"{row['learning_rate']:g}",
                  f"{row['median_final_train_loss']:.3f}", acc,
                  "never" if reach is None else f"{reach:.0f}",
                  f"{row['num_stalled']}/{row['num_seeds']}",
                  f"{row['num_diverged']}/{row['num_seeds']}"))
  widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h)
            for i, h in enumerate(header)]
  fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
  return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(l) for l in lines])


def definitions(config: SweepConfig) -> dict[str, str]:
  """What the summary numbers mean (written into summary.json)."""
  return {
      "final_train_loss": f"mean minibatch loss over the last {training.FINAL_LOSS_FRACTION:.0%} "
                          "of the steps",
      "stalled": f"not diverged and final train loss > (1 - {training.STALL_TOLERANCE}) x "
                 "reference; reference = ln(num_classes) for classification, the initial loss "
                 "on the statistics batch for regression",
      "diverged_step": "first step whose minibatch loss is NaN/inf (-1: never); the network is "
                       "frozen from then on and its later metrics are NaN",
      "steps_to_threshold": f"first step at which the mean of the last "
                            f"{training.THRESHOLD_WINDOW} minibatch losses is <= "
                            f"{config.loss_threshold}; median over seeds with never = infinity",
      "test_accuracy": "on the whole test set at the final step; mean and std over the seeds "
                       "that did not diverge",
      "var_h, var_dl_dh, var_dl_df": "variance pooled over units and examples of h_k (layer "
                                     "k=1..K), dl/dh_k (k=1..K), dl/df_k (k=0..K-1), on the first "
                                     f"{config.stats_batch_size} training examples, loss = mean "
                                     "over them",
      "signal_at_init": "from initjax.propagation over num_seeds random networks of the grid "
                        "point's shape and initializer, in the book's setting (standard-normal "
                        "inputs, least squares with y = 0): change of log10 variance per layer, "
                        "forward along h_k and backward along dl/dh_k towards the input, measured "
                        "(median over networks) and predicted by initjax.theory; negative "
                        "backward = vanishing gradients",
  }


def _panels(results: dict[str, PointResult]) -> dict[tuple, list[PointResult]]:
  panels: dict[tuple, list[PointResult]] = {}
  for r in results.values():
    p = r.point
    panels.setdefault((p.depth, p.width, p.activation, p.optimizer, p.learning_rate), []).append(r)
  return panels


def _grid(n: int):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  ncols = min(n, 4)
  nrows = int(math.ceil(n / ncols))
  fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
  for ax in axes.flat[n:]:
    ax.set_visible(False)
  return plt, fig, list(axes.flat[:n])


def _title(key: tuple) -> str:
  depth, width, activation, optimizer, lr = key
  return f"depth {depth}, width {width}, {activation}\n{optimizer} lr {lr:g}"


def plot_loss_curves(results: dict[str, PointResult], config: SweepConfig, task: str,
                     num_classes: int | None):
  """A panel per (depth, width, activation, optimizer, lr): median train loss over seeds and its
  interquartile band, one line per initializer (minibatch loss every log_every steps)."""
  panels = _panels(results)
  plt, fig, axes = _grid(len(panels))
  log_at = np.array(sorted(set(range(0, config.steps + 1, config.log_every)) | {config.steps}))
  for ax, (key, rs) in zip(axes, panels.items()):
    for r in rs:
      loss_SxT = r.records["train_loss"][:, log_at]
      with warnings.catch_warnings():  # all-NaN columns (every seed diverged) are fine
        warnings.simplefilter("ignore", RuntimeWarning)
        q25, med, q75 = np.nanpercentile(loss_SxT, [25, 50, 75], axis=0)
      line, = ax.plot(log_at, med, label=r.point.init)
      ax.fill_between(log_at, q25, q75, color=line.get_color(), alpha=0.25, linewidth=0)
    if task == "classification":
      ax.axhline(math.log(num_classes), color="gray", linestyle=":", linewidth=1,
                 label=f"ln {num_classes}")
    else:
      ax.set_yscale("log")
    ax.set_title(_title(key), fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (minibatch)")
    ax.legend(fontsize=7)
  fig.tight_layout()
  return plt, fig


def plot_gradient_variance(results: dict[str, PointResult]):
  """A panel per (depth, width, activation, optimizer, lr): median over seeds of Var[dl/dh_k]
  against layer k, at initialization (solid) and at the end of training (dashed), per init."""
  panels = _panels(results)
  plt, fig, axes = _grid(len(panels))
  for ax, (key, rs) in zip(axes, panels.items()):
    for r in rs:
      v_SxTxK = r.records["var_dl_dh"]
      layers = np.arange(1, v_SxTxK.shape[-1] + 1)
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        start, end = np.nanmedian(v_SxTxK[:, 0], axis=0), np.nanmedian(v_SxTxK[:, -1], axis=0)
      line, = ax.plot(layers, start, marker=".", label=f"{r.point.init}, step 0")
      ax.plot(layers, end, linestyle="--", color=line.get_color(),
              label=f"{r.point.init}, step {int(r.stats_steps[-1])}")
    ax.set_yscale("log")
    ax.set_title(_title(key), fontsize=9)
    ax.set_xlabel("hidden layer k")
    ax.set_ylabel("Var[dl/dh_k]")
    ax.legend(fontsize=7)
  fig.tight_layout()
  return plt, fig


OUTPUT_FILES = ("results.csv", "summary.json", "loss_curves.png", "gradient_variance.png")


def write_outputs(output_dir: str, config: SweepConfig, results: dict[str, PointResult],
                  missing: Sequence[str] = ()) -> dict[str, str]:
  """Writes results.csv (tidy), summary.json (config + summary table + definitions) and the two
  figures into output_dir, each atomically. Returns {name: path}.

  `results` come from `run_sweep`/`run_group` or from `load_results`; `missing` (grid points
  left out of a partial report) is listed in summary.json as missing_points when not empty.
  """
  info = data_lib.dataset_info(config.dataset)
  task, num_classes = info["task"], info["num_classes"]
  remove_stale_temp_files(output_dir, OUTPUT_FILES)
  paths = {name: os.path.join(output_dir, name) for name in OUTPUT_FILES}
  atomic_write_csv(paths["results.csv"], (row for r in results.values() for row in r.rows),
                   CSV_COLUMNS)
  summary = {"config": {**config.to_dict(), "output_dir": output_dir},
             "task": task, "num_classes": num_classes,
             "definitions": definitions(config), "summary": summarize(results)}
  if missing:
    summary["missing_points"] = list(missing)
  atomic_write_json(paths["summary.json"], summary)
  if results:
    for name, (plt, fig) in (("loss_curves.png", plot_loss_curves(results, config, task,
                                                                  num_classes)),
                             ("gradient_variance.png", plot_gradient_variance(results))):
      atomic_savefig(fig, paths[name], dpi=110)
      plt.close(fig)
  return paths


def write_report(output_dir: str, config: SweepConfig | None = None, allow_partial: bool = False
                 ) -> tuple[dict[str, str], list[dict[str, Any]], dict[str, str]]:
  """Merges the per-point files under output_dir into results.csv, summary.json and the figures
  (`load_results` + `write_outputs`); config defaults to the directory's sweep_config.json.

  Returns (paths, summary table, missing {point_id: why}); writes nothing and returns no paths
  when points are missing, unless `allow_partial`.
  """
  config = config or load_sweep_config(output_dir)
  results, missing = load_results(output_dir, config)
  if missing and not allow_partial:
    return {}, summarize(results), missing
  return write_outputs(output_dir, config, results, list(missing)), summarize(results), missing


def describe_missing(missing: dict[str, str], output_dir: str, num_points: int) -> str:
  """What a report says about missing points: a line, then one line per point."""
  head = (f"{len(missing)} of {num_points} grid points have no finished results under "
          f"{os.path.join(output_dir, POINTS_DIR)} (rerun the sweep's command, or its tasks, to "
          "compute them; --allow_partial reports without them):")
  return "\n".join([head] + [f"  {pid}: {why}" for pid, why in missing.items()])


def report(output_dir: str, config: SweepConfig | None = None, allow_partial: bool = False,
           out: Callable[[str], None] = print,
           err: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)
           ) -> int:
  """`write_report`, then prints the summary table and the files written (`out`) or lists the
  missing points (`err`). Returns the exit status: 1 when points are missing (and not
  `allow_partial`), else 0.

  Raises:
    ValueError: output_dir has no readable sweep_config.json.
  """
  config = config or load_sweep_config(output_dir)
  paths, table, missing = write_report(output_dir, config, allow_partial)
  if missing:
    message = describe_missing(missing, output_dir, len(expand_grid(config)))
    err(("warning: " if allow_partial else "error: ") + message)
    if not allow_partial:
      return 1
  out(format_summary_table(table))
  out("wrote " + ", ".join(paths.values()))
  return 0
