"""Training sweeps over initializers, depths, widths, activations, optimizers and learning rates.

The pieces are separate so that a sweep can be split into batch jobs (one results file per grid
point) without changing the science:

  `SweepConfig`     every setting of a sweep (the entry point's flags, one to one)
  `expand_grid`     config -> [GridPoint], each with a stable string id
  `group_points`    grid points that share one compiled program (same depth, width, activation
                    and optimizer; initializers, learning rates and seeds are data on its
                    vmapped axis)
  `run_group`       trains one group -> {point_id: PointResult} (tidy rows + summary numbers)
  `summarize`       the summary table, one row per grid point
  `write_outputs`   results.csv, summary.json, loss_curves.png, gradient_variance.png

Randomness (paired comparisons): from `--seed` and only the parameters that should matter,
  * initial weights of seed index i: (seed, depth, width, activation, i), so every initializer,
    optimizer and learning rate starts from the same underlying draws (He and Xavier, both plain
    normals, get weights that differ only by a constant factor);
  * minibatch order of seed index i: (seed, i), the same for every grid point;
  * teacher-student data: (seed).
A grid point's results therefore do not depend on which other points are in the sweep.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import time
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initjax import data as data_lib
from initjax import training
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
              key: jax.Array) -> dict[str, PointResult]:
  """Trains every seed of every point of one group in one vmapped, jit-compiled program.

  Args:
    points: grid points sharing depth, width, activation and optimizer (`group_points`).
    data: a data dict (`initjax.data`).
    config: the sweep config.
    key: the sweep's root key, PRNGKey(config.seed).
  """
  if len({p.group_key for p in points}) != 1:
    raise ValueError("run_group needs points with one depth, width, activation and optimizer")
  first = points[0]
  task, num_classes = data["task"], data["num_classes"]
  spec = train_spec(config, first.activation, first.optimizer, task)
  input_dim = int(data["x_train"].shape[1])
  params, data_keys, lrs = [], [], []
  for p in points:
    init_keys, keys = point_keys(key, p, config.num_seeds)
    params.append(training.init_networks(init_keys, p.init, input_dim=input_dim, width=p.width,
                                         depth=p.depth, output_dim=data["output_dim"]))
    data_keys.append(keys)
    lrs.append(jnp.full((config.num_seeds,), p.learning_rate, jnp.float32))
  params_B = jax.tree.map(lambda *a: jnp.concatenate(a), *params)
  out = training.run_networks(params_B, jnp.concatenate(data_keys), jnp.concatenate(lrs),
                              data_lib.device_arrays(data), spec)
  eval_at, stats_at = training.eval_steps(spec), training.stats_steps(spec)
  results = {}
  for i, p in enumerate(points):
    records = {k: v[i * config.num_seeds:(i + 1) * config.num_seeds] for k, v in out.items()}
    per_seed = seed_summaries(records, config, task, num_classes)
    results[p.point_id] = PointResult(
        point=p, records=records, eval_steps=eval_at, stats_steps=stats_at,
        rows=point_rows(p, records, per_seed, eval_at, stats_at, config),
        summary=point_summary(p, per_seed))
  return results


def group_cost(points: Sequence[GridPoint], config: SweepConfig) -> float:
  """Relative cost of a group: networks x (depth x width^2 + width) x steps."""
  p = points[0]
  return len(points) * config.num_seeds * (p.depth * p.width ** 2 + p.width) * config.steps


def run_sweep(config: SweepConfig, log: Callable[[str], None] = print) -> dict[str, PointResult]:
  """Runs every group of the grid, logging progress; returns {point_id: PointResult}."""
  check_config(config)
  start = time.time()
  data = load_data(config)
  data = {**data, **training.replicate(data_lib.device_arrays(data))}
  points = expand_grid(config)
  groups = group_points(points)
  costs = [group_cost(g, config) for g in groups]
  log(f"{len(points)} grid points x {config.num_seeds} seeds in {len(groups)} compiled groups "
      f"on {len(jax.devices())} device(s); data {config.dataset} loaded in "
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


def write_outputs(output_dir: str, config: SweepConfig,
                  results: dict[str, PointResult]) -> dict[str, str]:
  """Writes results.csv (tidy), summary.json (config + summary table + definitions) and the two
  figures into output_dir, each atomically. Returns {name: path}."""
  info = data_lib.dataset_info(config.dataset)
  task, num_classes = info["task"], info["num_classes"]
  paths = {name: os.path.join(output_dir, name) for name in (
      "results.csv", "summary.json", "loss_curves.png", "gradient_variance.png")}
  atomic_write_csv(paths["results.csv"], (row for r in results.values() for row in r.rows),
                   CSV_COLUMNS)
  atomic_write_json(paths["summary.json"], {
      "config": {**config.to_dict(), "output_dir": output_dir},
      "task": task, "num_classes": num_classes,
      "definitions": definitions(config), "summary": summarize(results)})
  if results:
    for name, (plt, fig) in (("loss_curves.png", plot_loss_curves(results, config, task,
                                                                  num_classes)),
                             ("gradient_variance.png", plot_gradient_variance(results))):
      atomic_savefig(fig, paths[name], dpi=110)
      plt.close(fig)
  return paths
