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
OUTPUT_FILES = ("results.csv", "summary.json", "phase_diagram.png")
# The phase diagram's settings named by the sweep it runs: a sweep field -> the setting here.
SWEEP_FIELDS = {"inits": "sigma2_w", "widths": "width", "activations": "activation",
                "optimizers": "optimizer", "learning_rates": "learning_rate",
                "bias_variance": "sigma2_b", "log_every": "steps", "eval_every": "steps",
                "stats_every": "steps"}


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

  def __post_init__(self):
    object.__setattr__(self, "sigma2_w", tuple(float(s) for s in self.sigma2_w))
    object.__setattr__(self, "depths", tuple(self.depths))
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
    try:
      self.sweep_config()   # the sweep checks the rest
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

  def sweep_config(self) -> SweepConfig:
    """The sweep that trains the grid: one init "sigma2_w=v" per weight variance."""
    return SweepConfig(
        inits=tuple(init_of(s) for s in self.sigma2_w), depths=self.depths,
        widths=(self.width,), activations=(self.activation,), optimizers=(self.optimizer,),
        learning_rates=((self.optimizer, (self.learning_rate,)),), num_seeds=self.num_seeds,
        steps=self.steps, seed=self.seed, bias_variance=self.sigma2_b, data_dir=self.data_dir,
        eval_every=max(1, self.steps // 4), stats_every=self.steps, log_every=max(1, self.steps // 50))


def theory(activation: str, sigma2_b: float, sigma2_w: Sequence[float]) -> dict[str, np.ndarray]:
  """Depth scales per sigma2_w (inputs of unit variance): xi_c, xi_q, xi_grad, chi_1, q*, and
  the phase, as arrays."""
  rows = [phases.depth_scales(activation, float(s), sigma2_b) for s in sigma2_w]
  return {"sigma2_w": np.asarray(sigma2_w, np.float64),
          "xi_c": np.array([r.xi_c for r in rows]), "xi_q": np.array([r.xi_q for r in rows]),
          "xi_grad": np.array([r.xi_grad for r in rows]),
          "chi_1": np.array([r.chi_1 for r in rows]), "q_star": np.array([r.q_star for r in rows]),
          "phase": np.array([r.phase for r in rows])}


def accuracy_grid(config: PhaseConfig, results: dict[str, PointResult]) -> np.ndarray:
  """Final test accuracy (depths, sigma2_w, seeds); NaN for a diverged or missing network."""
  grid = np.full((len(config.depths), len(config.sigma2_w), config.num_seeds), np.nan)
  index_w = {init_of(s): j for j, s in enumerate(config.sigma2_w)}
  index_d = {d: i for i, d in enumerate(config.depths)}
  for r in results.values():
    acc = r.records["test_accuracy"][:, -1].astype(np.float64)
    grid[index_d[r.point.depth], index_w[r.point.init]] = acc
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


def summary(config: PhaseConfig, results: dict[str, PointResult]) -> dict[str, Any]:
  """The JSON summary: configuration, the accuracy table, theory per sigma2_w, the trainable
  depth against xi_c, and the definitions of every number."""
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
  critical = phases.phase_boundary(config.activation, config.sigma2_b)
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
      "definitions": {
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


def _edges(values: Sequence[float]) -> np.ndarray:
  v = np.asarray(values, np.float64)
  mid = 0.5 * (v[1:] + v[:-1])
  return np.concatenate([[v[0] - (mid[0] - v[0]) if v.size > 1 else v[0] * 0.9], mid,
                         [v[-1] + (v[-1] - mid[-1]) if v.size > 1 else v[0] * 1.1]])


def plot(config: PhaseConfig, results: dict[str, PointResult]):
  """a) mean test accuracy over (sigma2_w, depth) with xi_c and 6 xi_c from theory; b) the
  ordered/chaotic boundary in the (sigma2_w, sigma2_b) plane. Returns a matplotlib `Figure`."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  grid = accuracy_grid(config, results)
  with np.errstate(invalid="ignore"):
    mean = np.nanmean(grid, axis=2)
  fig = Figure(figsize=(12, 4.8))
  ax, bx = fig.subplots(1, 2)
  depth_edges = np.exp(_edges(np.log(config.depths)))
  mesh = ax.pcolormesh(_edges(config.sigma2_w), depth_edges, mean, cmap="viridis",
                       vmin=CHANCE, vmax=max(CHANCE + 0.01, float(np.nanmax(mean))))
  fig.colorbar(mesh, ax=ax, label="test accuracy (mean over seeds)")
  dense = np.linspace(min(config.sigma2_w), max(config.sigma2_w), 121)
  th = theory(config.activation, config.sigma2_b, dense)
  ax.plot(dense, 6.0 * th["xi_c"], color="white", lw=2, label="6 xi_c")
  ax.plot(dense, th["xi_c"], color="white", lw=1, ls="--", label="xi_c")
  ax.set_yscale("log")
  ax.set_ylim(depth_edges[0], depth_edges[-1])
  for s2, name in ((1.0, "Xavier/LeCun"), (2.0, "He")):
    if min(config.sigma2_w) <= s2 <= max(config.sigma2_w):
      ax.axvline(s2, color="orange", lw=1, ls=":")
      ax.text(s2, depth_edges[-1] / 1.1, f" {name}", color="orange", va="top", ha="right",
              rotation=90, fontsize=8)
  ax.set_xlabel("sigma_w^2 (= fan_in Var[W])")
  ax.set_ylabel("depth (hidden layers)")
  ax.set_title(f"a) {config.activation}, sigma_b^2 = {config.sigma2_b:g}: trainability after "
               f"{config.steps} steps", fontsize=9)
  ax.legend(fontsize=8, loc="lower left")
  # Denser near sigma_b^2 = 0, where the critical line of tanh-like activations turns fastest.
  b_values = max(0.3, 2 * config.sigma2_b) * np.linspace(0.0, 1.0, 41) ** 2
  line = phases.critical_line(config.activation, b_values)
  bx.plot(line["sigma2_w"], line["sigma2_b"], color="black", lw=2, label="chi_1 = 1")
  bx.fill_betweenx(line["sigma2_b"], 0, line["sigma2_w"], color="tab:blue", alpha=0.15,
                   label="ordered")
  bx.fill_betweenx(line["sigma2_b"], line["sigma2_w"], max(4.5, max(config.sigma2_w)),
                   color="tab:red", alpha=0.15, label="chaotic")
  bx.axhline(config.sigma2_b, color="gray", lw=1, ls=":", label="this diagram")
  for s2, name in ((1.0, "Xavier"), (2.0, "He")):
    bx.plot([s2], [0.0], "o", color="orange")
    bx.annotate(name, (s2, 0.0), textcoords="offset points", xytext=(3, 5), fontsize=8)
  bx.set_xlim(0, max(4.5, max(config.sigma2_w)))
  bx.set_xlabel("sigma_w^2")
  bx.set_ylabel("sigma_b^2")
  bx.set_title(f"b) {config.activation}: ordered and chaotic phases (mean field)", fontsize=9)
  bx.legend(fontsize=8, loc="upper left")
  fig.tight_layout()
  return fig
