"""A sweep's files on disk: one pair per finished grid point, and the sweep's configuration.

Under --output_dir:
  sweep_config.json      the last sweep command's `SweepConfig`
  points/<point_id>.csv  a finished point's tidy rows (written first)
  points/<point_id>.json its summary, configuration and their fingerprint (written last: it marks
                         the point as finished)
A point's configuration is its grid parameters plus the settings that change its numbers
(`POINT_SETTINGS`), so adding depths or inits to a sweep reuses the points already computed.
Every file is written to a temporary name and renamed (`initjax.results`).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from typing import Any, Sequence

import numpy as np

from initjax import data as data_lib
from initjax import distributed, training
from initjax.results import atomic_write_csv, atomic_write_json
from initjax.sweep.config import SweepConfig
from initjax.sweep.grid import GridPoint, expand_grid
from initjax.sweep.group import CSV_COLUMNS, PointResult, train_spec

POINTS_DIR = "points"
SWEEP_CONFIG_FILE = "sweep_config.json"
# The settings that change a grid point's numbers (with its grid parameters): a finished point
# whose stored values differ was computed by another sweep. (data_dir only says where the data
# is cached; the grid lists only say which other points exist.)
POINT_SETTINGS = ("dataset", "seed", "num_seeds", "steps", "batch_size", "log_every",
                  "eval_every", "stats_every", "stats_batch_size", "loss_threshold")


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
  spec = train_spec(config, point.optimizer, task)
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


def save_sweep_config(output_dir: str, config: SweepConfig) -> None:
  atomic_write_json(os.path.join(output_dir, SWEEP_CONFIG_FILE), config.to_dict())


def load_sweep_config(output_dir: str) -> SweepConfig:
  """The SweepConfig of the last sweep run into output_dir (its sweep_config.json).

  Raises:
    ValueError: there is none, or it cannot be read.
  """
  path = os.path.join(output_dir, SWEEP_CONFIG_FILE)
  try:
    with open(path, encoding="utf-8") as fh:
      return SweepConfig.from_dict(json.load(fh))
  except FileNotFoundError:
    raise ValueError(f"no {SWEEP_CONFIG_FILE} in {output_dir!r}: run experiments.sweep with "
                     "this --output_dir first") from None
  except (OSError, ValueError, TypeError) as e:
    raise ValueError(f"cannot read {path}: {e}") from None
