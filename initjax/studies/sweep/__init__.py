"""Training sweeps over initializers, depths, widths, activations, optimizers and learning rates.

One module per job, in the order data flows:
  config   `SweepConfig`: every setting, checked once on construction
  grid     `GridPoint`s, the groups that share one compiled program, PRNG keys, task splits
  group    `run_group`: trains one group (vmapped over its seeds and points) -> `PointResult`s
  summary  per-seed and per-point summary numbers, the summary table, their definitions
  store    the point files on disk, resume, the sweep's configuration file
  tasks    `run_task`: one batch task's unfinished points, saved as they finish
  plots    loss curves and gradient variances (matplotlib Figures)
  report   results.csv, summary.json and the figures, merged from the points
"""
from initjax.studies.sweep.config import SweepConfig
from initjax.studies.sweep.grid import GridPoint, expand_grid
from initjax.studies.sweep.report import write_report
from initjax.studies.sweep.tasks import run_task

__all__ = ["GridPoint", "SweepConfig", "expand_grid", "run_task", "write_report"]
