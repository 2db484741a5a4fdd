"""Learning-rate transfer (Yang et al. 2022, Tensor Programs V, Fig. 1): the training loss after
a fixed budget against the learning rate, one curve per width, per parametrization; under muP
the best learning rate found on a narrow network stays the best on a wide one, under the
standard parametrization it moves.

The training is a sweep (`initjax.studies.sweep`: widths x learning rates x parametrizations,
resumable and splittable into batch tasks); `config` builds its `SweepConfig`, `summary` reads
the finished points: per parametrization and width, each learning rate's final training loss
(`sweep.summary.final_train_loss`, the mean minibatch loss over the last 5% of the steps;
the median over the seeds that did not diverge; +inf where half of the seeds or more diverged),
the best learning rate, and the spread of the best learning rates over the widths in decades
(log10 max / min).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from initjax.studies.sweep.config import SweepConfig
from initjax.studies.sweep.group import PointResult


def config(widths: Sequence[int], learning_rates: Sequence[float], *,
           parametrizations: Sequence[str] = ("sp", "mup"), optimizer: str = "adam",
           depth: int = 3, steps: int = 500, num_seeds: int = 2, base_width: int = 0,
           init: str = "he_normal", activation: str = "relu", seed: int = 0,
           batch_size: int = 100, data_dir: str = "") -> SweepConfig:
  """The sweep of a learning-rate transfer experiment (test metrics and per-layer statistics
  only at the start and the end)."""
  return SweepConfig(inits=(init,), depths=(depth,), widths=tuple(widths),
                     activations=(activation,), optimizers=(optimizer,),
                     learning_rates=((optimizer, tuple(float(lr) for lr in learning_rates)),),
                     num_seeds=num_seeds, steps=steps, batch_size=batch_size, seed=seed,
                     eval_every=steps, stats_every=steps, log_every=max(1, steps // 50),
                     parametrizations=tuple(parametrizations), base_width=base_width,
                     data_dir=data_dir)


def _final_loss(result: PointResult) -> float:
  """The point's median final training loss over its seeds (from its summary, which the point
  files keep whole), +inf where half of the seeds or more diverged."""
  s = result.summary
  loss = s["median_final_train_loss"]
  if 2 * s["num_diverged"] >= s["num_seeds"] or not math.isfinite(loss):
    return math.inf
  return float(loss)


def summary(sweep_config: SweepConfig, results: dict[str, PointResult]) -> dict[str, Any]:
  """{"parametrizations": {name: {"widths": {width: {"learning_rates", "final_train_loss",
  "best_learning_rate", "best_final_train_loss"}}, "best_learning_rates": [per width],
  "best_lr_spread_decades"}}, "config", "definitions"}."""
  by: dict[str, dict[int, dict[float, float]]] = {}
  for r in results.values():
    p = r.point
    by.setdefault(p.parametrization, {}).setdefault(p.width, {})[p.learning_rate] = \
        _final_loss(r)
  out = {}
  for name in sweep_config.parametrizations:
    widths = {}
    for width in sorted(by.get(name, {})):
      curve = by[name][width]
      lrs = sorted(curve)
      losses = [curve[lr] for lr in lrs]
      best = int(np.argmin(losses))
      widths[width] = {"learning_rates": lrs,
                       "final_train_loss": [None if math.isinf(x) else x for x in losses],
                       "best_learning_rate": lrs[best],
                       "best_final_train_loss": None if math.isinf(losses[best])
                       else losses[best],
                       "best_at_grid_edge": best in (0, len(lrs) - 1)}
    bests = [w["best_learning_rate"] for w in widths.values()]
    out[name] = {"widths": widths, "best_learning_rates": bests,
                 "best_lr_spread_decades": float(np.log10(max(bests) / min(bests)))
                 if bests else None}
  return {"config": sweep_config.to_dict(), "base_width": sweep_config.base(),
          "parametrizations": out,
          "definitions": {
              "final_train_loss": "median over the seeds that did not diverge of the mean "
                                  "minibatch training loss over the last 5% of the steps; "
                                  "null: half of the seeds or more diverged",
              "best_learning_rate": "the grid's learning rate of the lowest final_train_loss "
                                    "at that width",
              "best_at_grid_edge": "the best learning rate is the grid's smallest or largest: "
                                   "the true optimum may lie outside the grid",
              "best_lr_spread_decades": "log10(max / min) of the best learning rates over the "
                                        "widths: 0 = the same learning rate is best at every "
                                        "width"}}


def plot(s: dict[str, Any]):
  """One panel per parametrization: final training loss against learning rate (log axis), one
  curve per width, the best learning rate of each width marked."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  names = list(s["parametrizations"])
  fig = Figure(figsize=(4.2 * len(names), 3.4))
  axes = fig.subplots(1, len(names), squeeze=False, sharey=True)[0]
  for ax, name in zip(axes, names):
    entry = s["parametrizations"][name]
    for i, (width, w) in enumerate(entry["widths"].items()):
      loss = [np.nan if x is None else x for x in w["final_train_loss"]]
      ax.semilogx(w["learning_rates"], loss, "o-", ms=3, color=f"C{i % 10}",
                  label=f"width {width}")
      if w["best_final_train_loss"] is not None:
        ax.plot([w["best_learning_rate"]], [w["best_final_train_loss"]], "*", ms=10,
                color=f"C{i % 10}")
    spread = entry["best_lr_spread_decades"]
    ax.set_title(f"{name}: best lr spread {spread:.2f} decades" if spread is not None
                 else name, fontsize=9)
    ax.set_xlabel("learning rate (at the base width)", fontsize=8)
  axes[0].set_ylabel("final training loss", fontsize=8)
  axes[0].legend(fontsize=6)
  fig.tight_layout()
  return fig
