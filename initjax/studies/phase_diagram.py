"""The order-to-chaos phase diagram of trainability (Schoenholz et al. 2017, their figure 5).

Networks of one activation and bias variance sigma2_b are trained over a grid of weight
variances sigma2_w (per fan-in: Var[W] = sigma2_w / fan_in) and depths, and their test accuracy
is compared with the mean-field depth scale xi_c (`initjax.theory.phases`): information about the
input survives about xi_c layers, and networks train up to a depth of about 6 xi_c, a scale
that diverges at the critical line chi_1 = 1.

The training is a sweep (`initjax.sweep`): every sigma2_w is an init "sigma2_w=<value>" of the
grid, so all the sigma2_w values and seeds of one depth share one compiled, vmapped program, and
the run is resumable and splittable into batch tasks like any sweep. This module turns the
settings into a `SweepConfig`, the finished points into tidy rows and a summary, and draws the
figure.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Sequence

import numpy as np

from initjax.core.errors import ConfigError
from initjax.nn import activations
from initjax.studies.sweep.config import SIGMA2_W_PREFIX, SweepConfig, fan_in_variance
from initjax.studies.sweep.group import PointResult
from initjax.theory import phases
from initjax.training.optimizers import optimizer_names

RESULT_COLUMNS = ("sigma2_w", "sigma2_b", "activation", "depth", "width", "optimizer",
                  "learning_rate", "seed", "metric", "value")
CHANCE = 0.1    # MNIST-1D has 10 balanced classes
CHANCE_LOSS = math.log(10.0)   # the cross-entropy of a uniform guess over them
OUTPUT_FILES = ("results.csv", "summary.json", "phase_diagram.png")
TUNING_DIR = "tuning"       # the learning-rate search's sweep, under the output directory
TUNING_FILE = "tuning.csv"  # its rows, as results.csv's
# The phase diagram's settings named by the sweep it runs: a sweep field -> the setting here.
SWEEP_FIELDS = {"inits": "sigma2_w", "widths": "width", "activations": "activation",
                "optimizers": "optimizer", "learning_rates": "learning_rate",
                "bias_variance": "sigma2_b", "log_every": "steps", "eval_every": "steps",
                "stats_every": "steps", "init_learning_rates": "learning_rates"}


def setting_name(sweep_field: str) -> str:
  """The phase diagram's name for a sweep field ("depths/widths" -> "depths/width"); a field
  both share keeps its name."""
  return "/".join(SWEEP_FIELDS.get(f, f) for f in sweep_field.split("/"))


def exact_text(value: float) -> str:
  """A float as short text that reads back as exactly that float: "%g" where it does (1.75,
  0.5, 1), else repr (1.23456789, not "%g"'s 1.23457)."""
  short = f"{value:g}"
  return short if float(short) == value else repr(float(value))


def init_of(sigma2_w: float) -> str:
  """The sweep's init of one sigma2_w: "sigma2_w=<exact_text>", so two different values are
  two different inits."""
  return SIGMA2_W_PREFIX + exact_text(sigma2_w)


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
  """The phase diagram's settings (checked on construction; `ConfigError` names the flag)."""
  sigma2_w: tuple[float, ...] = (0.5, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)
  depths: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
  sigma2_b: float = 0.05
  activation: str = "tanh"
  width: int = 64
  num_seeds: int = 4
  steps: int = 1000
  optimizer: str = "momentum"
  learning_rate: float = 0.01
  seed: int = 0
  data_dir: str = ""
  # A learning rate per sigma2_w, chosen from these candidates by a search at depth tune_depth
  # (0: the shallowest of depths): the lowest mean final training loss over the seeds (a
  # diverged seed counts as an infinite loss). Empty: every sigma2_w trains at learning_rate.
  learning_rates: tuple[float, ...] = ()
  tune_depth: int = 0

  def __post_init__(self):
    object.__setattr__(self, "sigma2_w", tuple(float(s) for s in self.sigma2_w))
    object.__setattr__(self, "depths", tuple(self.depths))
    object.__setattr__(self, "learning_rates", tuple(float(lr) for lr in self.learning_rates))
    if not self.sigma2_w:
      raise ConfigError("sigma2_w", "needs at least one value")
    if any(not (math.isfinite(s) and s > 0) for s in self.sigma2_w):
      raise ConfigError("sigma2_w", f"values must be finite numbers > 0; got {self.sigma2_w}")
    if len(set(self.sigma2_w)) != len(self.sigma2_w):
      twice = next(s for s in self.sigma2_w if self.sigma2_w.count(s) > 1)
      raise ConfigError("sigma2_w", f"{exact_text(twice)} is listed twice; list each value once")
    if not (isinstance(self.sigma2_b, (int, float)) and math.isfinite(self.sigma2_b)
            and self.sigma2_b >= 0):
      raise ConfigError("sigma2_b", f"must be a finite number >= 0; got {self.sigma2_b}")
    try:
      activations.get(self.activation)
    except ValueError as e:
      raise ConfigError("activation", str(e)) from None
    if isinstance(self.width, bool) or not isinstance(self.width, int) or self.width < 1:
      raise ConfigError("width", f"must be an integer >= 1; got {self.width!r}")
    if self.optimizer not in optimizer_names():
      raise ConfigError("optimizer", f"unknown value {self.optimizer!r}; allowed: "
                        f"{', '.join(optimizer_names())}")
    if isinstance(self.learning_rate, bool) or not (
        isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
        and self.learning_rate > 0):
      raise ConfigError("learning_rate", f"must be a finite number > 0; got {self.learning_rate}")
    for lr in self.learning_rates:
      if not (math.isfinite(lr) and lr > 0):
        raise ConfigError("learning_rates", f"must be finite numbers > 0; got {lr:g}")
    if len(set(self.learning_rates)) != len(self.learning_rates):
      raise ConfigError("learning_rates", "a value is listed twice; list each value once")
    if isinstance(self.tune_depth, bool) or not isinstance(self.tune_depth, int) or (
        self.tune_depth < 0):
      raise ConfigError("tune_depth", f"must be an integer >= 0; got {self.tune_depth!r}")
    if self.tune_depth and not self.learning_rates:
      raise ConfigError("tune_depth", "needs --learning_rates (the candidates to search)")
    try:
      self.sweep_config()   # the sweep checks the rest
      if self.learning_rates:
        self.tuning_config()
    except ConfigError as e:
      raise ConfigError(setting_name(e.field), e.message) from None
    self.check_theory()

  def check_theory(self) -> None:
    """The mean-field theory the summary draws on answers for every sigma2_w (the depth scales)
    and for sigma2_b (the critical point), checked before anything is trained.

    Raises:
      ConfigError("sigma2_w" or "activation/sigma2_b", the theory's reason).
    """
    for s in self.sigma2_w:
      try:
        phases.depth_scales(self.activation, s, self.sigma2_b)
      except ValueError as e:
        raise ConfigError("sigma2_w", f"{exact_text(s)}: the mean-field theory has no depth "
                          f"scale to compare with: {e}") from None
    try:
      phases.phase_boundary(self.activation, self.sigma2_b)
    except ValueError as e:
      raise ConfigError("activation/sigma2_b", f"no critical point to draw: {e}") from None

  @property
  def tuned(self) -> bool:
    """Whether the learning rate is searched per sigma2_w (`learning_rates` given)."""
    return bool(self.learning_rates)

  @property
  def search_depth(self) -> int:
    """The depth the learning rates are searched at."""
    return self.tune_depth or min(self.depths)

  def _sweep(self, depths, learning_rates, init_learning_rates=()) -> SweepConfig:
    return SweepConfig(
        inits=tuple(init_of(s) for s in self.sigma2_w), depths=tuple(depths),
        widths=(self.width,), activations=(self.activation,), optimizers=(self.optimizer,),
        learning_rates=((self.optimizer, tuple(learning_rates)),), num_seeds=self.num_seeds,
        steps=self.steps, seed=self.seed, bias_variance=self.sigma2_b, data_dir=self.data_dir,
        eval_every=max(1, self.steps // 4), stats_every=self.steps,
        log_every=max(1, self.steps // 50), init_learning_rates=tuple(init_learning_rates))

  def sweep_config(self, chosen: dict[float, float] | None = None) -> SweepConfig:
    """The sweep that trains the grid: one init "sigma2_w=v" per weight variance, at
    `learning_rate`, or with `chosen` (sigma2_w -> learning rate, from `choose_learning_rates`)
    each sigma2_w at its own rate."""
    if chosen is None:
      return self._sweep(self.depths, (self.learning_rate,))
    return self._sweep(self.depths, (self.learning_rate,),
                       [(init_of(s), self.optimizer, chosen[s]) for s in self.sigma2_w])

  def tuning_config(self) -> SweepConfig:
    """The learning-rate search: every sigma2_w at every candidate rate, at `search_depth`."""
    return self._sweep((self.search_depth,), self.learning_rates)


def theory(activation: str, sigma2_b: float, sigma2_w: Sequence[float]) -> dict[str, np.ndarray]:
  """Depth scales per sigma2_w (inputs of unit variance): xi_c, xi_q, xi_grad, chi_1, q*, and
  the phase, as arrays."""
  rows = [phases.depth_scales(activation, float(s), sigma2_b) for s in sigma2_w]
  return {"sigma2_w": np.asarray(sigma2_w, np.float64),
          "xi_c": np.array([r.xi_c for r in rows]), "xi_q": np.array([r.xi_q for r in rows]),
          "xi_grad": np.array([r.xi_grad for r in rows]),
          "chi_1": np.array([r.chi_1 for r in rows]), "q_star": np.array([r.q_star for r in rows]),
          "phase": np.array([r.phase for r in rows])}


def final_train_losses(results: dict[str, PointResult]) -> dict[str, np.ndarray]:
  """point_id -> final training loss per seed (inf for a seed that diverged)."""
  out = {}
  for r in results.values():
    values = {row["seed"]: row["value"] for row in r.rows
              if row["step"] is None and row["metric"] == "final_train_loss"}
    diverged = {row["seed"] for row in r.rows if row["step"] is None   # -1: never diverged
                and row["metric"] == "diverged_step" and row["value"] is not None
                and row["value"] >= 0}
    losses = np.array([np.inf if seed in diverged or values[seed] is None
                       or not np.isfinite(values[seed]) else float(values[seed])
                       for seed in sorted(values)])
    out[r.point.point_id] = losses
  return out


def tuning_table(config: PhaseConfig, tuning: dict[str, PointResult]) -> np.ndarray:
  """Mean final training loss of the search, (sigma2_w, candidate learning rates); inf where a
  seed diverged, NaN where a point is missing."""
  table = np.full((len(config.sigma2_w), len(config.learning_rates)), np.nan)
  losses = final_train_losses(tuning)
  index_w = {init_of(s): j for j, s in enumerate(config.sigma2_w)}
  index_lr = {lr: k for k, lr in enumerate(config.learning_rates)}
  for r in tuning.values():
    table[index_w[r.point.init], index_lr[r.point.learning_rate]] = float(
        np.mean(losses[r.point.point_id]))
  return table


def choose_learning_rates(config: PhaseConfig,
                          tuning: dict[str, PointResult]) -> dict[float, float]:
  """sigma2_w -> the candidate learning rate of the lowest mean final training loss at
  `config.search_depth` (ties: the smaller rate; every rate diverged: the smallest).

  Raises:
    ConfigError("learning_rates"): a point of the search is missing.
  """
  table = tuning_table(config, tuning)
  if np.isnan(table).any():
    raise ConfigError("learning_rates", "the learning-rate search is not complete")
  order = np.argsort(config.learning_rates, kind="stable")
  chosen = {}
  for j, s in enumerate(config.sigma2_w):
    row = table[j, order]
    chosen[s] = float(np.asarray(config.learning_rates)[order][int(np.argmin(row))])
  return chosen


def accuracy_grid(config: PhaseConfig, results: dict[str, PointResult]) -> np.ndarray:
  """Final test accuracy (depths, sigma2_w, seeds); NaN for a diverged or missing network."""
  grid = np.full((len(config.depths), len(config.sigma2_w), config.num_seeds), np.nan)
  index_w = {init_of(s): j for j, s in enumerate(config.sigma2_w)}
  index_d = {d: i for i, d in enumerate(config.depths)}
  for r in results.values():
    acc = r.records["test_accuracy"][:, -1].astype(np.float64)
    grid[index_d[r.point.depth], index_w[r.point.init]] = acc
  return grid


def train_loss_grid(config: PhaseConfig, results: dict[str, PointResult]) -> np.ndarray:
  """Final training loss (depths, sigma2_w, seeds); inf for a diverged network, NaN missing."""
  grid = np.full((len(config.depths), len(config.sigma2_w), config.num_seeds), np.nan)
  index_w = {init_of(s): j for j, s in enumerate(config.sigma2_w)}
  index_d = {d: i for i, d in enumerate(config.depths)}
  losses = final_train_losses(results)
  for r in results.values():
    grid[index_d[r.point.depth], index_w[r.point.init]] = losses[r.point.point_id]
  return grid


def rows(config: PhaseConfig, results: dict[str, PointResult]) -> list[dict[str, Any]]:
  """Tidy rows: one per (sigma2_w, depth, seed, metric): final_test_accuracy, final_train_loss,
  diverged_step (from the sweep's per-seed summaries)."""
  out = []
  for r in results.values():
    per_seed = {row["seed"]: {} for row in r.rows}
    for row in r.rows:
      if row["step"] is None and row["metric"] in ("final_test_accuracy", "final_train_loss",
                                                   "diverged_step"):
        per_seed[row["seed"]][row["metric"]] = row["value"]
    for seed, metrics in per_seed.items():
      for metric, value in metrics.items():
        out.append({"sigma2_w": fan_in_variance(r.point.init), "sigma2_b": config.sigma2_b,
                    "activation": config.activation, "depth": r.point.depth,
                    "width": r.point.width, "optimizer": r.point.optimizer,
                    "learning_rate": r.point.learning_rate, "seed": seed, "metric": metric,
                    "value": value})
  return out


def trainable_depths(config: PhaseConfig, mean_accuracy_DxW: np.ndarray,
                     threshold: float) -> np.ndarray:
  """Per sigma2_w, the deepest depth of the grid up to which every depth trains (mean test
  accuracy >= threshold); 0 where even the shallowest does not."""
  out = np.zeros(len(config.sigma2_w))
  for j in range(len(config.sigma2_w)):
    for i, depth in enumerate(config.depths):
      if not mean_accuracy_DxW[i, j] >= threshold:
        break
      out[j] = depth
  return out


def summary(config: PhaseConfig, results: dict[str, PointResult],
            tuning: dict[str, PointResult] | None = None) -> dict[str, Any]:
  """The JSON summary: configuration, the accuracy table, theory per sigma2_w, the trainable
  depth against xi_c, and the definitions of every number; with `tuning` (the learning-rate
  search's points) the rate chosen per sigma2_w and the search's losses too."""
  grid = accuracy_grid(config, results)
  with np.errstate(invalid="ignore"):
    mean = np.nanmean(grid, axis=2) if grid.size else grid
  best = float(np.nanmax(mean)) if np.isfinite(mean).any() else float("nan")
  threshold = CHANCE + 0.5 * (best - CHANCE)
  th = theory(config.activation, config.sigma2_b, config.sigma2_w)
  depth_max = trainable_depths(config, mean, threshold)
  # The multiple of xi_c that the data show: only where the edge of the trainable region lies
  # inside the grid (neither the shallowest depth failing nor the deepest one training).
  inside = (depth_max > 0) & (depth_max < max(config.depths)) & np.isfinite(th["xi_c"])
  ratios = depth_max[inside] / th["xi_c"][inside]
  # The first depth of the grid that fails, just past the trainable one (None: all train).
  fails = [next((d for d in config.depths if d > dm), None) for dm in depth_max]
  # The same on the training loss, the paper's claim being trainability: a cell trains when its
  # median final training loss is at most halfway from the best cell's down from chance, ln(10).
  losses = train_loss_grid(config, results)
  with warnings.catch_warnings():   # a missing cell (all NaN) stays NaN
    warnings.simplefilter("ignore", RuntimeWarning)
    median_loss = np.nanmedian(losses, axis=2) if losses.size else losses
  finite = median_loss[np.isfinite(median_loss)]
  best_loss = float(finite.min()) if finite.size else float("nan")
  loss_threshold = best_loss + 0.5 * (CHANCE_LOSS - best_loss)
  fit_depth = trainable_depths(config, np.where(np.isnan(median_loss), np.inf, median_loss) * -1,
                               -loss_threshold)
  fit_inside = (fit_depth > 0) & (fit_depth < max(config.depths)) & np.isfinite(th["xi_c"])
  fit_fails = [next((d for d in config.depths if d > dm), None) for dm in fit_depth]
  critical = phases.phase_boundary(config.activation, config.sigma2_b)
  if config.tuned:
    if tuning is None:
      raise ValueError("a tuned phase diagram's summary needs the learning-rate search")
    chosen = choose_learning_rates(config, tuning)
    search = {
        "learning_rate": [chosen[s] for s in config.sigma2_w],
        "tuning": {"depth": config.search_depth, "learning_rates": list(config.learning_rates),
                   # JSON has no inf: a diverged candidate is the string "diverged"
                   "mean_final_train_loss": [
                       [None if np.isnan(v) else "diverged" if np.isinf(v) else float(v)
                        for v in row] for row in tuning_table(config, tuning)]}}
  else:
    search = {"learning_rate": [config.learning_rate] * len(config.sigma2_w)}
  return {
      "config": dataclasses.asdict(config),
      "critical_sigma2_w": critical.sigma2_w, "critical_is_continuous": critical.continuous,
      "sigma2_w": list(config.sigma2_w), "depths": list(config.depths),
      "mean_test_accuracy": [[None if not np.isfinite(v) else float(v) for v in row]
                             for row in mean],
      "trainable_threshold": threshold, "best_mean_accuracy": best,
      "trainable_depth": depth_max.tolist(), "first_failing_depth": fails,
      "xi_c": th["xi_c"].tolist(), "six_xi_c": (6.0 * th["xi_c"]).tolist(),
      "chi_1": th["chi_1"].tolist(), "q_star": th["q_star"].tolist(),
      "phase": th["phase"].tolist(),
      "trainable_depth_over_xi_c": ratios.tolist(),
      "median_trainable_depth_over_xi_c": float(np.median(ratios)) if ratios.size else None,
      "median_final_train_loss": [[None if np.isnan(v) else "diverged" if np.isinf(v)
                                   else float(v) for v in row] for row in median_loss],
      "train_loss_threshold": loss_threshold,
      "fitting_depth": fit_depth.tolist(), "first_unfitted_depth": fit_fails,
      "fitting_depth_over_xi_c": (fit_depth[fit_inside] / th["xi_c"][fit_inside]).tolist(),
      **search,
      "definitions": {
          "median_final_train_loss": "rows: depths, columns: sigma2_w; median over seeds of "
                                     "the final training loss ('diverged': the median network "
                                     "diverged)",
          "train_loss_threshold": f"the best cell's median final training loss plus half the "
                                  f"way up to chance, ln 10 = {CHANCE_LOSS:.4f}",
          "fitting_depth": "deepest depth of the grid up to which every depth's median final "
                           "training loss is at most train_loss_threshold (trainability on the "
                           "training set; 0: not even the shallowest)",
          "first_unfitted_depth": "the grid's next depth after fitting_depth; None: all fit",
          "fitting_depth_over_xi_c": "fitting_depth / xi_c where that edge lies inside the grid",
          "learning_rate": "per sigma2_w, the rate every depth of its column trained at",
          "tuning": "the learning-rate search (only with learning_rates): every sigma2_w at "
                    "every candidate rate at one depth; mean_final_train_loss rows: sigma2_w, "
                    "columns: the candidates ('diverged': a seed diverged); the lowest is chosen",
          "mean_test_accuracy": "rows: depths, columns: sigma2_w; mean over seeds of the test "
                                "accuracy after the last step (diverged networks left out)",
          "trainable_threshold": f"chance ({CHANCE}) plus half the way to the best cell's mean",
          "trainable_depth": "deepest depth of the grid up to which every depth reaches the "
                             "threshold (0: not even the shallowest)",
          "first_failing_depth": "the grid's next depth after trainable_depth (the edge lies "
                                 "between the two); None when every depth trains",
          "trainable_depth_over_xi_c": "trainable_depth / xi_c where the edge lies inside the "
                                       "grid (Schoenholz et al. find about 6)",
          "xi_c": "-1 / ln chi_c at the fixed point reached from unit-variance inputs "
                  "(initjax.theory.phases); inf at the critical line",
      },
  }
