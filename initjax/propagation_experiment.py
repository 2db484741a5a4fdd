"""The weight-initialization figure as an experiment: configurations, tidy results, slopes, plot.

`run_propagation(config)` measures every configuration (the fixed sigma2_Omega values of the
book's figure, which share one compiled program, and named initializers such as he_normal)
over many seeds, compares each layer with `initjax.theory`, and returns tidy rows and a summary;
`write_outputs` writes results.csv, summary.json and the two-panel figure atomically.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initjax import propagation, theory
from initjax.results import atomic_savefig, atomic_write_csv, atomic_write_json

log = logging.getLogger(__name__)

RESULT_COLUMNS = (
    "init", "sigma2", "activation", "depth", "width", "input_dim", "batch_size", "bias_variance",
    "dtype", "layer", "quantity", "mean", "median", "q05", "q95", "log10_mean", "log10_median",
    "log10_q05", "log10_q95", "theory", "log10_theory", "num_seeds", "num_flagged", "flagged")


@dataclasses.dataclass(frozen=True)
class PropagationConfig:
  """Everything that defines one run of the experiment (written to summary.json)."""
  sigma2: tuple[float, ...] = (0.001, 0.01, 0.02, 0.1, 1.0)
  inits: tuple[str, ...] = ("he_normal", "xavier_normal")
  depth: int = 50
  width: int = 100
  input_dim: int = 100
  output_dim: int = 1
  activation: str = "relu"
  bias_variance: float = 0.0
  num_seeds: int = 200
  batch_size: int = 100
  seed: int = 0
  dtype: str = "float32"
  seed_chunk: int = 0          # 0: chosen from the network size
  num_devices: int = 0         # 0: all local devices (seeds are sharded over them)

  def spec(self) -> propagation.NetworkSpec:
    return propagation.NetworkSpec(
        input_dim=self.input_dim, width=self.width, depth=self.depth,
        output_dim=self.output_dim, activation=self.activation,
        bias_variance=self.bias_variance, batch_size=self.batch_size).validate()


@dataclasses.dataclass
class Setting:
  """One curve of the figure: an initializer times a weight-variance multiplier."""
  label: str
  init: str          # "normal" for a fixed sigma2_Omega, else a registered initializer
  sigma2: float      # sigma2_Omega of the hidden layers
  scale: float       # multiplier passed to propagation.measure


def settings_for(config: PropagationConfig) -> list[Setting]:
  from initjax.initializers import expected_variance  # pylint: disable=import-outside-toplevel
  out = [Setting(f"sigma2={s:g}", "normal", float(s), float(s)) for s in config.sigma2]
  for name in config.inits:
    s2 = expected_variance(name, (config.width, config.width))
    out.append(Setting(name, name, float(s2), 1.0))
  return out


def _theory(config: PropagationConfig, setting: Setting) -> theory.MLPPrediction:
  return propagation.theory_for(config.spec(), setting.init, setting.scale,
                                {"variance": 1.0} if setting.init == "normal" else None)


def _lin(log10_value: float) -> float:
  """10**x in float64; NaN where that is not representable (the log10 column still holds it)."""
  if not math.isfinite(log10_value) or log10_value > 307.0 or log10_value < -307.0:
    return float("nan")
  return 10.0 ** log10_value


def run_propagation(config: PropagationConfig) -> dict[str, Any]:
  """Measures every setting and returns {"rows", "settings", "slopes", "timing"}."""
  spec = config.spec()
  settings = settings_for(config)
  dtype = jnp.dtype(config.dtype)
  key = jax.random.key(config.seed)
  measured: dict[str, dict[str, np.ndarray]] = {}
  timing = {}
  fixed = [s for s in settings if s.init == "normal"]
  groups: list[tuple[str, list[Setting]]] = []
  if fixed:
    groups.append(("normal", fixed))
  groups += [(s.init, [s]) for s in settings if s.init != "normal"]
  chunk = config.seed_chunk or propagation.default_seed_chunk(spec, itemsize=dtype.itemsize)
  log.info("%d setting(s) x %d seeds; %d network(s) vmapped per step (--seed_chunk), %d device(s)",
           len(settings), config.num_seeds, chunk,
           config.num_devices or jax.local_device_count())
  for init_name, group in groups:
    start = time.perf_counter()
    kwargs = {"weight_init": "normal" if init_name == "normal" else init_name,
              "scales": [s.scale for s in group]}
    out = propagation.measure(key, spec, num_seeds=config.num_seeds, dtype=dtype,
                              seed_chunk=config.seed_chunk or None,
                              num_devices=config.num_devices or None, **kwargs)
    timing[init_name] = time.perf_counter() - start
    for i, s in enumerate(group):
      measured[s.label] = {q: v[i] for q, v in out.items()}
    log.info("measured %s (%d setting(s) x %d seeds) in %.1f s", init_name, len(group),
             config.num_seeds, timing[init_name])

  rows, slopes = [], {}
  for s in settings:
    pred = _theory(config, s).as_dict()
    slopes[s.label] = layer_slopes(config.depth, measured[s.label], pred)
    flagged_total = 0
    for q in propagation.QUANTITIES:
      layers = propagation.layer_indices(q, config.depth)
      summary = propagation.summarize_seeds(measured[s.label][q])
      flagged_total += int(summary["num_flagged"].sum())
      for j, k in enumerate(layers):
        lt = float(pred[q][j])
        rows.append({
            "init": s.init, "sigma2": s.sigma2, "activation": config.activation,
            "depth": config.depth, "width": config.width, "input_dim": config.input_dim,
            "batch_size": config.batch_size, "bias_variance": config.bias_variance,
            "dtype": config.dtype, "layer": int(k), "quantity": q,
            "mean": _lin(summary["log10_mean"][j]), "median": _lin(summary["log10_median"][j]),
            "q05": _lin(summary["log10_q05"][j]), "q95": _lin(summary["log10_q95"][j]),
            "log10_mean": summary["log10_mean"][j], "log10_median": summary["log10_median"][j],
            "log10_q05": summary["log10_q05"][j], "log10_q95": summary["log10_q95"][j],
            "theory": _lin(lt), "log10_theory": lt, "num_seeds": config.num_seeds,
            "num_flagged": int(summary["num_flagged"][j]),
            "flagged": bool(summary["num_flagged"][j] > 0),
        })
    if flagged_total:
      log.warning("%s: %d (seed, layer, quantity) values could not be measured in %s (overflow, "
                  "underflow to zero or NaN); they are flagged in results.csv and left out of "
                  "the summaries. Try --dtype=float64 or a ReLU network with zero bias "
                  "(exact in log space).", s.label, flagged_total, config.dtype)
  return {"rows": rows, "settings": settings, "slopes": slopes, "timing": timing,
          "measured": measured}


def layer_slopes(depth: int, measured: dict[str, np.ndarray], pred: dict[str, np.ndarray]
            ) -> dict[str, float]:
  """Change of log10 variance per layer: forward along h_1..h_K, backward along dl/dh_K..h_1.

  Measured slopes are fitted to the across-seed median; positive means growing in the
  direction of travel (forward: with k; backward: towards the input).
  """
  k = propagation.layer_indices("var_h", depth)
  med_h = np.array([np.median(c[np.isfinite(c)]) if np.isfinite(c).any() else np.nan
                    for c in measured["var_h"].T])
  med_g = np.array([np.median(c[np.isfinite(c)]) if np.isfinite(c).any() else np.nan
                    for c in measured["var_dl_dh"].T])
  return {
      "forward_measured": propagation.slope_per_layer(k, med_h),
      "forward_theory": propagation.slope_per_layer(k, pred["var_h"]),
      "backward_measured": -propagation.slope_per_layer(k, med_g),
      "backward_theory": -propagation.slope_per_layer(k, pred["var_dl_dh"]),
  }


def slope_table(result: dict[str, Any]) -> str:
  """The per-layer slopes, measured against theory, as a fixed-width text table."""
  lines = [f"{'setting':<16} {'fwd measured':>13} {'fwd theory':>11} {'bwd measured':>13} "
           f"{'bwd theory':>11}   (decades of variance per layer)"]
  for s in result["settings"]:
    sl = result["slopes"][s.label]
    lines.append(f"{s.label:<16} {sl['forward_measured']:>+13.3f} {sl['forward_theory']:>+11.3f} "
                 f"{sl['backward_measured']:>+13.3f} {sl['backward_theory']:>+11.3f}")
  return "\n".join(lines)


def summary_dict(config: PropagationConfig, result: dict[str, Any]) -> dict[str, Any]:
  per_setting = {}
  for s in result["settings"]:
    rows = [r for r in result["rows"] if r["init"] == s.init and r["sigma2"] == s.sigma2]
    per_setting[s.label] = {
        "init": s.init, "sigma2_omega": s.sigma2,
        "log10_change_per_layer": result["slopes"][s.label],
        "num_flagged": int(sum(r["num_flagged"] for r in rows)),
        "last_layer_log10_median": {
            q: next((r["log10_median"] for r in rows
                     if r["quantity"] == q and r["layer"] == (config.depth if q != "var_dl_dh"
                                                              else 1)), None)
            for q in ("var_h", "var_dl_dh")},
    }
  return {"config": dataclasses.asdict(config), "settings": per_setting,
          "seconds": result["timing"], "jax_version": jax.__version__,
          "backend": jax.default_backend()}


def plot(config: PropagationConfig, result: dict[str, Any]):
  """The book's two panels: forward Var[h_k] and backward Var[dl/dh_k] against layer k.

  Solid: across-seed median, band: 5-95% of seeds, dashed: theory. y is log10 of the variance
  (a linear axis in decades, so values beyond float64 would still plot).
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=False)
  colors = plt.get_cmap("tab10")
  panels = (("var_h", "a) Forward pass: Var[h_k]"),
            ("var_dl_dh", "b) Backward pass: Var[dl/dh_k]"))
  for ax, (q, title) in zip(axes, panels):
    for i, s in enumerate(result["settings"]):
      rows = [r for r in result["rows"]
              if r["init"] == s.init and r["sigma2"] == s.sigma2 and r["quantity"] == q]
      k = np.array([r["layer"] for r in rows])
      med = np.array([r["log10_median"] for r in rows], dtype=float)
      lo = np.array([r["log10_q05"] for r in rows], dtype=float)
      hi = np.array([r["log10_q95"] for r in rows], dtype=float)
      th = np.array([r["log10_theory"] for r in rows], dtype=float)
      c = colors(i % 10)
      label = s.label if s.init == "normal" else f"{s.label} ({s.sigma2:.3g})"
      ax.plot(k, med, color=c, lw=2.4 if s.init != "normal" else 1.6,
              ls=":" if s.init != "normal" else "-", label=label)
      ax.fill_between(k, lo, hi, color=c, alpha=0.25, lw=0)
      ax.plot(k, th, color=c, lw=1.0, ls="--")
      bad = [r["layer"] for r in rows if r["flagged"]]
      if bad:
        ax.plot(bad, np.interp(bad, k, np.nan_to_num(th)), "x", color=c, ms=4)
    ax.set_title(title)
    ax.set_xlabel("layer k")
    ax.set_ylabel("log10 variance")
    ax.set_xlim(0, config.depth)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8, loc="upper left")
  fig.suptitle(f"{config.activation}, {config.depth} hidden layers x {config.width} units, "
               f"{config.num_seeds} random networks per setting, {config.batch_size} inputs each "
               f"(median, 5-95% band; dashed: theory)", fontsize=9)
  fig.tight_layout()
  return fig


def write_outputs(output_dir: str, config: PropagationConfig, result: dict[str, Any]
                  ) -> list[str]:
  """Writes results.csv, summary.json and propagation.png atomically; returns the paths."""
  import os  # pylint: disable=import-outside-toplevel
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  paths = [os.path.join(output_dir, n) for n in ("results.csv", "summary.json",
                                                 "propagation.png")]
  atomic_write_csv(paths[0], result["rows"], RESULT_COLUMNS)
  atomic_write_json(paths[1], summary_dict(config, result))
  fig = plot(config, result)
  atomic_savefig(fig, paths[2], dpi=110)
  plt.close(fig)
  return paths


def config_from_values(**kwargs) -> PropagationConfig:
  """Builds a validated config; raises ValueError naming the bad field and what is allowed."""
  from initjax.initializers import initializer_names  # pylint: disable=import-outside-toplevel
  cfg = PropagationConfig(**kwargs)
  if any(not s > 0 for s in cfg.sigma2):
    raise ValueError("sigma2: values must be > 0")
  unknown = [n for n in cfg.inits if n not in initializer_names()]
  if unknown:
    raise ValueError(f"inits: unknown {unknown}; valid: {', '.join(initializer_names())}")
  if cfg.dtype not in ("float32", "float64"):
    raise ValueError("dtype: must be float32 or float64")
  cfg.spec()
  return cfg

