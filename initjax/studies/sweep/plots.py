"""The sweep's figures, as matplotlib `Figure`s (no backend needed; save them with
`initjax.results.atomic_savefig`)."""
from __future__ import annotations

import math
import warnings

import numpy as np

from initjax.studies.sweep.group import PointResult


def _panels(results: dict[str, PointResult]) -> dict[tuple, list[PointResult]]:
  panels: dict[tuple, list[PointResult]] = {}
  for r in results.values():
    p = r.point
    panels.setdefault((p.arch, p.depth, p.width, p.activation, p.optimizer, p.learning_rate),
                      []).append(r)
  return panels


def _grid(n: int):
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  ncols = min(n, 4)
  nrows = int(math.ceil(n / ncols))
  fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows))
  axes = fig.subplots(nrows, ncols, squeeze=False)
  for ax in axes.flat[n:]:
    ax.set_visible(False)
  return fig, list(axes.flat[:n])


def _curve(point) -> str:
  """A line's legend: the initializer (and the recurrent one), and the normalization other than
  none."""
  return point.init_label if point.norm == "none" else f"{point.init_label} + {point.norm}"


def _label(ax, key: tuple, xlabel: str, ylabel: str) -> None:
  arch, depth, width, activation, optimizer, lr = key
  ax.set_title(f"{arch}, depth {depth}, width {width}, {activation}\n{optimizer} lr {lr:g}",
               fontsize=9)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.legend(fontsize=7)


def loss_curves(results: dict[str, PointResult], steps: int, log_every: int, task: str,
                num_classes: int | None):
  """A panel per (depth, width, activation, optimizer, lr): median train loss over seeds and its
  interquartile band, one line per initializer (minibatch loss every log_every steps)."""
  panels = _panels(results)
  fig, axes = _grid(len(panels))
  log_at = np.array(sorted(set(range(0, steps + 1, log_every)) | {steps}))
  for ax, (key, rs) in zip(axes, panels.items()):
    for r in rs:
      loss_SxT = r.records["train_loss"][:, log_at]
      with warnings.catch_warnings():  # all-NaN columns (every seed diverged) are fine
        warnings.simplefilter("ignore", RuntimeWarning)
        q25, med, q75 = np.nanpercentile(loss_SxT, [25, 50, 75], axis=0)
      line, = ax.plot(log_at, med, label=_curve(r.point))
      ax.fill_between(log_at, q25, q75, color=line.get_color(), alpha=0.25, linewidth=0)
    if task == "classification":
      ax.axhline(math.log(num_classes), color="gray", linestyle=":", linewidth=1,
                 label=f"ln {num_classes}")
    else:
      ax.set_yscale("log")
    _label(ax, key, "step", "train loss (minibatch)")
  fig.tight_layout()
  return fig


def gradient_variance(results: dict[str, PointResult]):
  """A panel per (depth, width, activation, optimizer, lr): median over seeds of Var[dl/dh_k]
  against layer k, at initialization (solid) and at the end of training (dashed), per init."""
  panels = _panels(results)
  fig, axes = _grid(len(panels))
  for ax, (key, rs) in zip(axes, panels.items()):
    for r in rs:
      v_SxTxK = r.records["var_dl_dh"]
      layers = np.arange(v_SxTxK.shape[-1]) + (0 if r.point.arch == "resmlp" else 1)
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        start, end = np.nanmedian(v_SxTxK[:, 0], axis=0), np.nanmedian(v_SxTxK[:, -1], axis=0)
      line, = ax.plot(layers, start, marker=".", label=f"{_curve(r.point)}, step 0")
      ax.plot(layers, end, linestyle="--", color=line.get_color(),
              label=f"{_curve(r.point)}, step {int(r.stats_steps[-1])}")
    ax.set_yscale("log")
    _label(ax, key, "hidden layer k", "Var[dl/dh_k]")
  fig.tight_layout()
  return fig
