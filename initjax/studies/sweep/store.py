"""A sweep's files on disk: one pair per finished grid point, and the sweep's configuration.

Under --output_dir:
  sweep_config.json      the last sweep command's `SweepConfig`
  points/<point_id>.csv  a finished point's tidy rows (written first)
  points/<point_id>.json its summary, configuration and their fingerprint, the CSV's row count
                         and sha256, and a sha256 of its own content (written last: it marks the
                         point as finished)
A point's configuration is its grid parameters plus the settings that change its numbers
(`POINT_SETTINGS`), so adding depths or inits to a sweep reuses the points already computed.
Every file is written to a temporary name and renamed (`initjax.results`).

Reading a point verifies it (`inspect_point`): its JSON must parse, be an object, match its own
hash, belong to the point; its CSV must exist and match the row count and sha256 the JSON
records. A point that fails is "damaged": not finished (the sweep recomputes it and says which
file and why; the report lists it as missing), never merged. A JSON written before these fields
existed cannot be verified and counts as damaged too.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from typing import Any, Sequence

import numpy as np

from initjax import training
from initjax.core import distributed
from initjax.core.results import atomic_write_bytes, atomic_write_json, csv_bytes, json_sha256
from initjax.studies.sweep.config import SweepConfig
from initjax.studies.sweep.grid import GridPoint, expand_grid
from initjax.studies.sweep.group import CSV_COLUMNS, PointResult, point_options, train_spec
from initjax.theory import architectures
from initjax.training import data as data_lib

POINTS_DIR = "points"
SWEEP_CONFIG_FILE = "sweep_config.json"
# The settings that change a grid point's numbers (with its grid parameters): a finished point
# whose stored values differ was computed by another sweep. (data_dir only says where the data
# is cached; the grid lists only say which other points exist.)
POINT_SETTINGS = ("dataset", "seed", "num_seeds", "steps", "batch_size", "log_every",
                  "eval_every", "stats_every", "stats_batch_size", "loss_threshold",
                  "bias_variance", "branch_scale", "kernel_size", "padding")


def point_config(config: SweepConfig, point: GridPoint) -> dict[str, Any]:
  """Everything a grid point's results depend on: its grid parameters and `POINT_SETTINGS`
  (a point without a norm or a recurrent initializer keeps the fingerprint it had before
  there were)."""
  cfg = {**point.as_dict(), **{k: getattr(config, k) for k in POINT_SETTINGS}}
  if point.parametrization != "sp":
    cfg["base_width"] = config.base()
  return cfg


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

  The JSON records the CSV's row count and the sha256 of its bytes as written, and the sha256 of
  its own content (`record_sha256`), so that a reader can tell a damaged file from a finished
  one. Each file is written atomically (a temporary file renamed into place), so an interrupted
  write leaves the point unfinished, never a partial file under a final name.
  """
  csv_path, json_path = point_paths(output_dir, result.point.point_id)
  os.makedirs(os.path.dirname(csv_path), exist_ok=True)
  cfg = point_config(config, result.point)
  data, num_rows = csv_bytes(result.rows, CSV_COLUMNS)
  record = {"point_id": result.point.point_id, "fingerprint": fingerprint(cfg), "config": cfg,
            "summary": result.summary, "csv_rows": num_rows,
            "csv_sha256": hashlib.sha256(data).hexdigest()}
  record["record_sha256"] = json_sha256(record)
  atomic_write_bytes(csv_path, data)
  atomic_write_json(json_path, record)


class DamagedPoint(Exception):
  """A point file that cannot be verified; the message is one line: the file and why."""

  def __init__(self, path: str, why: str):
    super().__init__(f"{path}: {why}")
    self.path = path
    self.why = why


def _read_bytes(path: str) -> bytes | None:
  """The file's bytes; None when it does not exist; DamagedPoint when it cannot be read."""
  try:
    with open(path, "rb") as fh:
      return fh.read()
  except FileNotFoundError:
    return None
  except OSError as e:
    raise DamagedPoint(path, f"cannot be read ({e.strerror or e})") from None


def _parse_record(json_path: str, data: bytes, point_id: str) -> dict[str, Any]:
  """A point's JSON record from its bytes, checked against its own hash and its point id."""
  if not data:
    raise DamagedPoint(json_path, "is empty (0 bytes)")
  try:
    record = json.loads(data.decode("utf-8"))
  except UnicodeDecodeError:
    raise DamagedPoint(json_path, "is not UTF-8 text (garbled bytes)") from None
  except (ValueError, RecursionError) as e:
    raise DamagedPoint(json_path, f"is not valid JSON (cut or garbled: {e})") from None
  if not isinstance(record, dict):
    raise DamagedPoint(json_path, f"holds a JSON {type(record).__name__}, not a point record "
                       "(an object)")
  if "record_sha256" in record:
    content = {k: v for k, v in record.items() if k != "record_sha256"}
    if record["record_sha256"] != json_sha256(content):
      raise DamagedPoint(json_path, "its content does not match its recorded sha256 (edited "
                         "or garbled)")
  if record.get("point_id") != point_id:
    raise DamagedPoint(json_path, f"belongs to point {record.get('point_id')!r}")
  return record


def _csv_damage(data: bytes, expected_rows: int, point_id: str) -> str:
  """Why CSV bytes that fail their sha256 are damaged, as precisely as they show it."""
  if not data:
    return "is empty (0 bytes)"
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError:
    return "is not UTF-8 text (garbled bytes)"
  try:
    rows = list(csv.reader(io.StringIO(text)))
  except csv.Error as e:
    return f"is not valid CSV ({e})"
  if not rows or tuple(rows[0]) != CSV_COLUMNS:
    return "does not start with the point CSV header"
  others = sorted({r[0] for r in rows[1:] if r and r[0] != point_id})
  if others:
    return f"holds rows of point {others[0]!r}"
  cut = "" if text.endswith("\n") else ", cut mid-row"
  if len(rows) - 1 != expected_rows:
    return f"has {len(rows) - 1} rows where its JSON records {expected_rows} (truncated{cut})"
  return f"does not match the sha256 its JSON records (changed or garbled{cut})"


def _check_csv(csv_path: str, record: dict[str, Any], point_id: str) -> bytes:
  """The point's CSV bytes, verified against the row count and sha256 its JSON records."""
  expected_rows, expected_sha = record.get("csv_rows"), record.get("csv_sha256")
  if (not isinstance(expected_rows, int) or not isinstance(expected_sha, str)
      or "record_sha256" not in record):
    raise DamagedPoint(csv_path[:-4] + ".json", "records no CSV row count and checksums "
                       "(written by an older initjax): it cannot be verified")
  data = _read_bytes(csv_path)
  if data is None:
    raise DamagedPoint(csv_path, "is missing (its JSON is present)")
  if hashlib.sha256(data).hexdigest() != expected_sha:
    raise DamagedPoint(csv_path, _csv_damage(data, expected_rows, point_id))
  return data


def inspect_point(output_dir: str, config: SweepConfig, point: GridPoint
                  ) -> tuple[str, Any, dict[str, Any] | None, bytes | None]:
  """(state, detail, record, csv bytes) of one grid point's files, verified:

    ("done", {}, record, csv bytes)   finished with this config's settings, files verified
    ("missing", {}, None, None)       no JSON (never finished, or stopped before it)
    ("differs", {setting: (stored, now)}, record, None)  finished with other settings
    ("damaged", DamagedPoint, None, None)   a file fails verification (see the module doc); the
                                           exception's one-line message names the file and why
  """
  csv_path, json_path = point_paths(output_dir, point.point_id)
  try:
    data = _read_bytes(json_path)
    if data is None:
      return "missing", {}, None, None
    record = _parse_record(json_path, data, point.point_id)
    current = point_config(config, point)
    if record.get("fingerprint") != fingerprint(current):
      return "differs", config_difference(record.get("config"), current) or {
          "fingerprint": (record.get("fingerprint"), fingerprint(current))}, record, None
    return "done", {}, record, _check_csv(csv_path, record, point.point_id)
  except DamagedPoint as e:
    return "damaged", e, None, None


def config_difference(stored: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple]:
  """{setting: (stored value, current value)} for every setting that differs."""
  stored = stored if isinstance(stored, dict) else {}
  return {k: (stored.get(k), v) for k, v in current.items() if stored.get(k) != v}


def point_state(output_dir: str, config: SweepConfig,
                point: GridPoint) -> tuple[str, dict[str, tuple]]:
  """("done", {}), ("missing", {}) or ("differs", config_difference) for one grid point; a
  damaged point (`inspect_point`) is not finished: "missing"."""
  state, detail, _, _ = inspect_point(output_dir, config, point)
  if state == "damaged":
    return "missing", {}
  return state, detail


def describe_difference(diff: dict[str, tuple]) -> str:
  return ", ".join(f"{k} {a!r} (now {b!r})" if isinstance(a, str) or isinstance(b, str)
                   else f"{k} {a} (now {b})" for k, (a, b) in diff.items())


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
  steps (NaN at the others), test metrics, per-layer statistics (the architecture's, placed by
  `Model.layer_index`), diverged_step."""
  n = config.num_seeds
  nan = lambda *shape: np.full(shape, np.nan, np.float32)
  records = {"train_loss": nan(n, config.steps + 1), "test_loss": nan(n, len(eval_at)),
             "stats_loss": nan(n, len(stats_at)), "diverged_step": np.full((n,), -1, np.int32)}
  if task == "classification":
    records["test_accuracy"] = nan(n, len(eval_at))
  model = architectures.get(point.arch).model(point.activation, point_options(config, point))
  first = dict(model.layer_index)
  layered = {r["metric"] for r in rows if r["layer"] is not None}
  for metric in layered:
    last = max(r["layer"] for r in rows if r["metric"] == metric)
    records[metric] = nan(n, len(stats_at), last - first.get(metric, 0) + 1)
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
    elif metric in layered:
      records[metric][s, stats_slot[r["step"]], r["layer"] - first.get(metric, 0)] = v
    elif metric == "diverged_step":
      records[metric][s] = v
  return records


def load_point(output_dir: str, config: SweepConfig, point: GridPoint) -> PointResult:
  """A finished point read back from its files, verified (`inspect_point`), rows typed as
  computed, records for the figures.

  Raises:
    DamagedPoint: a file fails verification, or the point is not finished with these settings.
  """
  state, detail, record, data = inspect_point(output_dir, config, point)
  csv_path, json_path = point_paths(output_dir, point.point_id)
  if state == "damaged":
    raise detail
  if state != "done":
    raise DamagedPoint(json_path, "not finished" if state == "missing" else
                       f"computed with {describe_difference(detail)}")
  return _point_from_files(config, point, record, data, csv_path)


def _point_from_files(config: SweepConfig, point: GridPoint, record: dict[str, Any],
                      data: bytes, csv_path: str) -> PointResult:
  """A PointResult from a verified record and CSV bytes."""
  summary = record.get("summary")
  if not isinstance(summary, dict):
    raise DamagedPoint(csv_path[:-4] + ".json", "has no summary object")
  for name in ("median_final_train_loss", "test_accuracy_mean", "test_accuracy_std"):
    if name in summary and summary[name] is None:  # JSON keeps NaN as null
      summary[name] = float("nan")
  try:
    rows = [_parse_row(raw) for raw in csv.DictReader(io.StringIO(data.decode("utf-8")))]
  except (ValueError, KeyError, TypeError, csv.Error) as e:
    raise DamagedPoint(csv_path, f"has a row that cannot be read ({e})") from None
  if len(rows) != record["csv_rows"]:
    raise DamagedPoint(csv_path, f"has {len(rows)} rows where its JSON records "
                       f"{record['csv_rows']}")
  task = data_lib.dataset_info(config.dataset)["task"]
  spec = train_spec(config, point.optimizer, task)
  eval_at, stats_at = training.eval_steps(spec), training.stats_steps(spec)
  try:
    records = records_from_rows(rows, point, config, eval_at, stats_at, task)
  except (IndexError, KeyError, TypeError) as e:
    raise DamagedPoint(csv_path, f"has rows that do not fit the point's settings ({e!r})") from None
  return PointResult(point=point, records=records, eval_steps=eval_at, stats_steps=stats_at,
                     rows=rows, summary=summary)


def load_results(output_dir: str, config: SweepConfig
                 ) -> tuple[dict[str, PointResult], dict[str, str]]:
  """The finished grid points under output_dir, verified, in grid order, and {point_id: why}
  for the others ("not finished", "damaged: <file>: <why>", or the settings it was computed with
  that differ from `config`)."""
  results, missing = {}, {}
  for point in expand_grid(config):
    distributed.check_interrupted()
    state, detail, record, data = inspect_point(output_dir, config, point)
    if state == "done":
      try:
        results[point.point_id] = _point_from_files(
            config, point, record, data, point_paths(output_dir, point.point_id)[0])
        continue
      except DamagedPoint as e:
        state, detail = "damaged", e
    missing[point.point_id] = ("not finished" if state == "missing" else f"damaged: {detail}"
                               if state == "damaged" else
                               f"computed with {describe_difference(detail)}")
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
  except (OSError, ValueError, TypeError, RecursionError) as e:
    raise ValueError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
