"""The ratios (every figure of merit as one number), the targets they are held to, the JSON.

Every ratio is a ratio of medians measured in one process (or, for the fractions of peak, over
the matmul ceiling of the same run); a ratio whose contenders are absent (PyTorch not installed,
a section skipped or failed) is None.
"""
from __future__ import annotations

import json
import math
from typing import Any

# key -> (operator, threshold). The targets are for a 2-core CPU (the measurement they were set
# on); on other machines the ratios are reported the same way and checked against the same
# numbers, for information.
TARGETS: dict[str, tuple[str, float]] = {
    "propagation_vs_numpy_loop": (">=", 4.0),
    "propagation_vs_jit_loop": (">=", 2.0),
    "propagation_fraction_of_matmul_peak": (">=", 0.5),
    "training_vs_torch_loop_w100": (">=", 2.5),
    "training_vs_torch_vmap_w100": (">=", 1.8),
    "training_vs_torch_loop_w32": (">=", 6.0),
    "training_vs_torch_vmap_w32": (">=", 4.0),
    "training_fraction_of_matmul_peak": (">=", 0.65),
    "cnn_training_vs_torch_loop": (">", 1.0),
    "cnn_training_vs_seed_loop": (">", 1.0),
    "cnn_training_vs_torch_best": (">=", 1.5),   # issue 19: the best of loop, vmap, processes
    "cnn_batchnorm_training_vs_torch_best": (">=", 1.5),   # issue 19: "with or without"
    "rnn_training_vs_torch_loop": (">=", 1.0),    # issue 19
    "lstm_training_vs_torch_loop": (">=", 1.0),
    "compile_time_200_over_10_layers": ("<=", 1.5),
    "compile_time_200_over_10_layers_training": ("<=", 1.5),
    "peak_rss_gb_10000_seeds": ("<", 4.0),
    "probe_vs_torch_hooks": (">=", 3.0),
    "probe_compiles_per_comparison": ("<=", 1.0),
    "rnn_probe_compile_200_over_50_steps": ("<=", 1.5),
    "isometry_vs_numpy_loop": (">=", 1.0),
    "isometry_measure_s": ("<=", 180.0),   # issue 21: 128 networks, depth 128, width 256
}

OURS = "initjax run_networks"
ONE_DEVICE = "initjax train_networks (1 device)"
SEED_LOOP = "initjax train_network_jit, network by network"
TORCH_LOOP, TORCH_VMAP = "torch loop (", "torch.func vmap ("
TORCH_PROCESSES = "torch loop, one process per core"


def ratio(a: float | None, b: float | None) -> float | None:
  if a is None or b is None or not b or not math.isfinite(a) or not math.isfinite(b):
    return None
  return float(a / b)


def _rows(section: Any) -> dict:
  return section if isinstance(section, dict) and "error" not in section else {}


def _best(rows: dict, prefix: str, key: str) -> float | None:
  """The highest `key` among the rows whose name starts with `prefix` (best thread count)."""
  values = [r[key] for name, r in rows.items()
            if name.startswith(prefix) and isinstance(r, dict) and r.get(key) is not None]
  return max(values) if values else None


def matmul_peak(res: dict) -> float | None:
  """The ceiling: the higher of the matmul measurements taken in this run."""
  mm = res.get("matmul", {})
  return max((v for v in (mm.get("gflops"), mm.get("gflops_after_propagation")) if v),
             default=None)


def propagation_ratios(res: dict, peak: float | None) -> dict[str, float | None]:
  prop = _rows(res.get("propagation"))
  sizes = sorted(prop, key=int)
  small = prop[sizes[0]] if sizes else {}
  large = prop[sizes[-1]] if sizes else {}
  rate = "items_per_s"

  def r(rows, name):
    return rows.get(name, {}).get(rate)

  def numpy_best(rows):
    return max(filter(None, [_best(rows, "numpy loop float64 (notebook", rate),
                             _best(rows, "numpy loop float32 (notebook", rate)]), default=None)

  ours_small, ours_large = r(small, "initjax.measure"), r(large, "initjax.measure")
  return {
      "propagation_vs_numpy_loop": ratio(ours_small, numpy_best(small)),
      "propagation_vs_numpy_loop_default_rng": ratio(
          ours_small, _best(small, "numpy loop float32 (default_rng", rate)),
      "propagation_vs_jit_loop": ratio(ours_small, r(small, "jax.jit per seed (jax.grad)")),
      "propagation_vs_jit_loop_network_statistics": ratio(
          ours_small, r(small, "jax.jit per seed (network_statistics)")),
      "propagation_vs_torch_loop": ratio(ours_small, _best(small, "torch loop", rate)),
      "propagation_large_vs_numpy_loop": ratio(ours_large, numpy_best(large)),
      "propagation_large_vs_jit_loop": ratio(ours_large, r(large, "jax.jit per seed (jax.grad)")),
      "propagation_fraction_of_matmul_peak": ratio(
          large.get("initjax.measure", {}).get("gflops"), peak),
  }


def _against_torch(rows: dict, prefix: str, suffix: str = "") -> dict[str, float | None]:
  """initjax's training rate over each PyTorch arrangement's best (loop, vmap, processes)."""
  rate = "network_steps_per_s"
  ours = rows.get(OURS, {}).get(rate)
  return {f"{prefix}_vs_torch_{name}{suffix}": ratio(ours, _best(rows, row, rate))
          for name, row in (("loop", TORCH_LOOP), ("vmap", TORCH_VMAP),
                            ("processes", TORCH_PROCESSES))}


def training_ratios(res: dict, peak: float | None) -> dict[str, float | None]:
  rate = "network_steps_per_s"
  train = _rows(res.get("training"))
  out: dict[str, float | None] = {}
  for slot in ("w100", "w32"):
    out.update(_against_torch(_rows(train.get(slot)), "training", f"_{slot}"))
  w100 = _rows(train.get("w100"))
  seq = w100.get(SEED_LOOP, {}).get(rate)
  out["training_fraction_of_matmul_peak"] = ratio(w100.get(OURS, {}).get("gflops"), peak)
  out["training_vs_sequential"] = ratio(w100.get(ONE_DEVICE, {}).get(rate), seq)
  out["training_all_cores_vs_sequential"] = ratio(w100.get(OURS, {}).get(rate), seq)
  cnn = _rows(res.get("cnn"))
  ours = cnn.get(OURS, {}).get(rate)
  seed_loop = cnn.get(SEED_LOOP, {}).get(rate)
  out.update(_against_torch(cnn, "cnn_training"))
  out["cnn_training_vs_torch_best"] = ratio(ours, _best(cnn, "torch", rate))   # any arrangement
  bn = _rows(res.get("cnn_batchnorm"))
  out.update(_against_torch(bn, "cnn_batchnorm_training"))
  out["cnn_batchnorm_training_vs_torch_best"] = ratio(bn.get(OURS, {}).get(rate),
                                                      _best(bn, "torch", rate))
  out["cnn_training_vs_seed_loop"] = ratio(ours, seed_loop)
  out["cnn_training_1_device_vs_seed_loop"] = ratio(cnn.get(ONE_DEVICE, {}).get(rate), seed_loop)
  recurrent = _rows(res.get("recurrent"))
  for cell in ("rnn", "lstm"):
    out.update(_against_torch(_rows(recurrent.get(cell)), f"{cell}_training"))
  return out


def other_ratios(res: dict) -> dict[str, float | None]:
  comp = _rows(res.get("compile"))

  def comp_ratio(section):
    c = comp.get(section, {})
    depths = sorted(c, key=int)
    if len(depths) < 2:
      return None
    return ratio(c[depths[-1]].get("median_s"), c[depths[0]].get("median_s"))

  sweep = _rows(res.get("sweep_start"))
  return {
      "compile_time_200_over_10_layers": comp_ratio("propagation"),
      "compile_time_200_over_10_layers_training": comp_ratio("training"),
      "peak_rss_gb_10000_seeds": _rows(res.get("memory")).get("peak_rss_gb"),
      "sweep_warm_over_cold": sweep.get("warm_over_cold"),
  }


def model_ratios(res: dict) -> dict[str, float | None]:
  m = _rows(res.get("models"))
  probe = _rows(m.get("probe"))
  rnn = _rows(m.get("rnn_compile"))
  steps = sorted(rnn, key=int)
  bn = _rows(m.get("bn_resnet"))
  comparison = _rows(m.get("comparison"))
  return {
      "probe_vs_torch_hooks": ratio(probe.get("initjax probe.measure", {}).get("networks_per_s"),
                                    _best(probe, "torch loop with hooks", "networks_per_s")),
      "probe_compiles_per_comparison": comparison.get("compiles_one_call"),
      "rnn_probe_compile_200_over_50_steps": ratio(
          rnn[steps[-1]]["median_s"], rnn[steps[0]]["median_s"]) if len(steps) > 1 else None,
      "bn_resnet_training_vs_torch_loop": ratio(
          bn.get(OURS, {}).get("network_steps_per_s"),
          _best(bn, TORCH_LOOP, "network_steps_per_s")),
  }


def isometry_ratios(res: dict, peak: float | None) -> dict[str, float | None]:
  rows = _rows(res.get("isometry"))
  ours = rows.get("initjax isometry.measure", {})
  rate = "networks_per_s"
  return {
      "isometry_vs_numpy_loop": ratio(ours.get(rate), _best(rows, "numpy loop", rate)),
      "isometry_vs_jit_loop": ratio(
          ours.get(rate), rows.get("jax.jit per network (jacobian_spectra)", {}).get(rate)),
      "isometry_measure_s": ours.get("median_s"),
      "isometry_fraction_of_matmul_peak": ratio(ours.get("gflops"), peak),
  }


def compute_ratios(res: dict) -> dict[str, float | None]:
  peak = matmul_peak(res)
  return {**propagation_ratios(res, peak), **training_ratios(res, peak), **other_ratios(res),
          **model_ratios(res), **isometry_ratios(res, peak)}


def met(value: float | None, op: str, threshold: float) -> bool | None:
  if value is None:
    return None
  return {">=": value >= threshold, ">": value > threshold, "<=": value <= threshold,
          "<": value < threshold}[op]


def evaluate_targets(ratios: dict[str, float | None]) -> dict[str, dict]:
  """{key: {"target": ">= 2.5", "value", "met": True/False/None (not measured)}}."""
  return {k: {"target": f"{op} {threshold}", "value": ratios.get(k),
              "met": met(ratios.get(k), op, threshold)} for k, (op, threshold) in TARGETS.items()}


def write_json(res: dict, path: str) -> None:
  def clean(v):   # NaN/inf are not JSON: None
    if isinstance(v, float) and not math.isfinite(v):
      return None
    if isinstance(v, dict):
      return {k: clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
      return [clean(x) for x in v]
    return v
  with open(path, "w", encoding="utf-8") as fh:
    json.dump(clean(res), fh, indent=1, default=float)
