"""A sweep's merged outputs: results.csv (tidy), summary.json and the figures, from the points
in memory or read back from the point files."""
from __future__ import annotations

import os
from typing import Any, Sequence

from absl import logging

from initjax.core.results import (atomic_write_files, csv_bytes, figure_bytes, json_bytes,
                                  remove_stale_temp_files)
from initjax.studies.sweep import plots, store
from initjax.studies.sweep import summary as summary_lib
from initjax.studies.sweep.config import SweepConfig
from initjax.studies.sweep.grid import expand_grid
from initjax.studies.sweep.group import CSV_COLUMNS, PointResult
from initjax.training import data as data_lib

OUTPUT_FILES = ("results.csv", "summary.json", "loss_curves.png", "gradient_variance.png")


def summarize(results: dict[str, PointResult]) -> list[dict[str, Any]]:
  """The summary table: one dict per grid point, in grid order."""
  return [r.summary for r in results.values()]


def write_outputs(output_dir: str, config: SweepConfig, results: dict[str, PointResult],
                  missing: Sequence[str] = ()) -> dict[str, str]:
  """Writes results.csv (tidy), summary.json (config + summary table + definitions) and the two
  figures into output_dir, all or none (`atomic_write_files`: an error while writing, e.g. a
  full disk, changes none of them). Returns {name: path} of the files written.

  `results` come from `run_group` or from `store.load_results` (at least one point); `missing`
  (grid points left out of a partial report) is listed in summary.json as missing_points when
  not empty.
  """
  if not results:
    raise ValueError("no finished grid point to write a report of")
  info = data_lib.dataset_info(config.dataset)
  task, num_classes = info["task"], info["num_classes"]
  stale = remove_stale_temp_files(output_dir, OUTPUT_FILES)
  if stale:
    logging.info("removed %d temporary file(s) that an earlier killed run left in %s: %s",
                 len(stale), output_dir, ", ".join(stale))
  paths = {name: os.path.join(output_dir, name) for name in OUTPUT_FILES}
  summary = {"config": {**config.to_dict(), "output_dir": output_dir},
             "task": task, "num_classes": num_classes,
             "definitions": summary_lib.definitions(config.loss_threshold,
                                                    config.stats_batch_size),
             "summary": summarize(results)}
  if missing:
    summary["missing_points"] = list(missing)
  figures = {"loss_curves.png": plots.loss_curves(results, config.steps, config.log_every, task,
                                                  num_classes),
             "gradient_variance.png": plots.gradient_variance(results)}
  files = {paths["results.csv"]: csv_bytes((row for r in results.values() for row in r.rows),
                                           CSV_COLUMNS)[0],
           paths["summary.json"]: json_bytes(summary)}
  files.update({paths[name]: figure_bytes(fig, dpi=110) for name, fig in figures.items()})
  atomic_write_files(files)
  return paths


def write_report(output_dir: str, config: SweepConfig | None = None, allow_partial: bool = False
                 ) -> tuple[dict[str, str], list[dict[str, Any]], dict[str, str]]:
  """Merges the verified per-point files under output_dir into results.csv, summary.json and
  the figures (`store.load_results` + `write_outputs`); config defaults to the directory's
  sweep_config.json.

  Returns (paths written, summary table, missing {point_id: why}); writes nothing and returns no
  paths when points are missing, unless `allow_partial`, and when no point is finished at all.
  """
  config = config or store.load_sweep_config(output_dir)
  results, missing = store.load_results(output_dir, config)
  if not results or (missing and not allow_partial):
    return {}, summarize(results), missing
  return write_outputs(output_dir, config, results, list(missing)), summarize(results), missing


SWEEP_HINT = ("rerun the sweep's command, or its tasks, to compute them; --allow_partial "
              "reports without them")


def describe_missing(missing: dict[str, str], output_dir: str, config: SweepConfig,
                     hint: str = SWEEP_HINT) -> str:
  """What a report says about missing points: a line (ending with `hint`, what to do), then one
  line per point."""
  head = (f"{len(missing)} of {len(expand_grid(config))} grid points have no finished results "
          f"under {os.path.join(output_dir, store.POINTS_DIR)} ({hint}):")
  return "\n".join([head] + [f"  {pid}: {why}" for pid, why in missing.items()])
