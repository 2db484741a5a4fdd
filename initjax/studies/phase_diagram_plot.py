"""The phase diagram's figure: test accuracy and training loss over (sigma2_w, depth) against
xi_c and 6 xi_c, and the ordered/chaotic phases in the (sigma2_w, sigma2_b) plane."""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from initjax.studies.phase_diagram import (CHANCE, CHANCE_LOSS, PhaseConfig, accuracy_grid,
                                           theory, train_loss_grid)
from initjax.studies.sweep.group import PointResult
from initjax.theory import phases


def _log_norm(loss: np.ndarray):
  """A log colour scale from the best finite loss up to ten times chance."""
  from matplotlib.colors import LogNorm  # pylint: disable=import-outside-toplevel
  finite = loss[np.isfinite(loss) & (loss > 0)]
  low = float(finite.min()) if finite.size else 1e-3
  return LogNorm(vmin=min(low, CHANCE_LOSS / 10), vmax=10.0 * CHANCE_LOSS)


def _edges(values: Sequence[float]) -> np.ndarray:
  v = np.asarray(values, np.float64)
  mid = 0.5 * (v[1:] + v[:-1])
  return np.concatenate([[v[0] - (mid[0] - v[0]) if v.size > 1 else v[0] * 0.9], mid,
                         [v[-1] + (v[-1] - mid[-1]) if v.size > 1 else v[0] * 1.1]])


def _depth_map(fig, ax, config: PhaseConfig, values_DxW: np.ndarray, label: str, title: str,
               **mesh_kwargs) -> None:
  """One (sigma2_w, depth) heat map with xi_c and 6 xi_c from theory, and He/Xavier marked."""
  depth_edges = np.exp(_edges(np.log(config.depths)))
  mesh = ax.pcolormesh(_edges(config.sigma2_w), depth_edges, values_DxW, **mesh_kwargs)
  fig.colorbar(mesh, ax=ax, label=label)
  dense = np.linspace(min(config.sigma2_w), max(config.sigma2_w), 121)
  th = theory(config.activation, config.sigma2_b, dense)
  ax.plot(dense, 6.0 * th["xi_c"], color="white", lw=2, label="6 xi_c")
  ax.plot(dense, th["xi_c"], color="white", lw=1, ls="--", label="xi_c")
  ax.set_yscale("log")
  ax.set_ylim(depth_edges[0], depth_edges[-1])
  ax.set_yticks(config.depths, [str(d) for d in config.depths])
  ax.minorticks_off()
  for s2, name in ((1.0, "Xavier/LeCun"), (2.0, "He")):
    if min(config.sigma2_w) <= s2 <= max(config.sigma2_w):
      ax.axvline(s2, color="orange", lw=1, ls=":")
      ax.text(s2, depth_edges[-1] / 1.1, f" {name}", color="orange", va="top", ha="right",
              rotation=90, fontsize=8)
  ax.set_xlabel("sigma_w^2 (= fan_in Var[W])")
  ax.set_ylabel("depth (hidden layers)")
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8, loc="lower left")


def plot(config: PhaseConfig, results: dict[str, PointResult]):
  """a) mean test accuracy over (sigma2_w, depth) with xi_c and 6 xi_c from theory; b) the
  median final training loss likewise; c) the ordered/chaotic boundary in the
  (sigma2_w, sigma2_b) plane. Returns a matplotlib `Figure`."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  grid = accuracy_grid(config, results)
  with np.errstate(invalid="ignore"):
    mean = np.nanmean(grid, axis=2)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    loss = np.nanmedian(train_loss_grid(config, results), axis=2)
  fig = Figure(figsize=(17, 4.8))
  ax, lx, bx = fig.subplots(1, 3)
  rate = (f"lr searched per sigma_w^2 at depth {config.search_depth}" if config.tuned
          else f"lr {config.learning_rate:g}")
  _depth_map(fig, ax, config, mean, "test accuracy (mean over seeds)",
             f"a) {config.activation}, sigma_b^2 = {config.sigma2_b:g}: test accuracy after "
             f"{config.steps} steps\n({config.optimizer}, {rate})", cmap="viridis", vmin=CHANCE,
             vmax=max(CHANCE + 0.01, float(np.nanmax(mean))))
  _depth_map(fig, lx, config, np.minimum(loss, 10.0 * CHANCE_LOSS),
             "final training loss (median over seeds; log scale)",
             "b) final training loss\n(ln 10 = chance; diverged: top of the scale)", cmap="magma_r",
             norm=_log_norm(loss))
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
  bx.set_title(f"c) {config.activation}: ordered and chaotic phases (mean field)", fontsize=9)
  bx.legend(fontsize=8, loc="upper left")
  fig.tight_layout()
  return fig
