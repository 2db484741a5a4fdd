"""Dynamical isometry, measured: Jacobian spectra of critical random networks against the theory.

`run(config)` measures, for every activation (linear, tanh, ReLU) and weight distribution
(Gaussian, orthogonal) of a `SpectraConfig`, the spectrum of J_k J_k^T (`initjax.measurement.
isometry`) of `num_seeds` random MLPs at the critical point (chi_1 = 1: sigma2_w from
`initjax.theory.critical_weight_variance`, tanh with a small sigma2_b so that q* is small), with
inputs at the fixed point q*, at the depths asked for; and compares it with free probability
(`initjax.theory.spectra`): moments against depth, the spectral density at each depth, and for
linear Gaussian networks the exact finite-width second moment. `summary` and `plot_densities`,
`plot_moments` turn the result into JSON and matplotlib `Figure`s (no backend needed).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from initjax.core.errors import ConfigError
from initjax.measurement import isometry
from initjax.theory import phases, spectra

ACTIVATIONS = ("identity", "tanh", "relu")
INITIALIZER = {"gaussian": "lecun_normal", "orthogonal": "orthogonal"}
QUANTITIES = ("mean_s2", "m2_s2", "var_s2", "normalized_var", "max_s_median",
              "condition_median", "condition_resolved")
RESULT_COLUMNS = ("activation", "weights", "sigma2_w", "sigma2_b", "q_star", "width", "depth",
                  "quantity", "measured", "se", "theory", "theory_finite_width", "num_networks",
                  "num_flagged")
DENSITY_COLUMNS = ("activation", "weights", "depth", "log10_lambda_lo", "log10_lambda_hi",
                   "measured", "theory")
MAX_SEED = 2 ** 32 - 1


@dataclasses.dataclass(frozen=True)
class SpectraConfig:
  """Everything that defines one run (written to summary.json); checked on construction."""
  activations: tuple[str, ...] = ACTIVATIONS
  weights: tuple[str, ...] = spectra.WEIGHTS
  depths: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
  density_depths: tuple[int, ...] = (4, 16, 64, 256)
  width: int = 256
  num_seeds: int = 64
  tanh_sigma2_b: float = 1e-3
  seed: int = 0
  bins_per_decade: int = 10
  log10_lambda_min: float = -6.0
  log10_lambda_max: float = 4.0

  def __post_init__(self):
    for name in ("activations", "weights", "depths", "density_depths"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    for name, allowed in (("activations", ACTIVATIONS), ("weights", spectra.WEIGHTS)):
      values = getattr(self, name)
      if not values:
        raise ConfigError(name, f"needs at least one of: {', '.join(allowed)}")
      for v in values:
        if v not in allowed:
          raise ConfigError(name, f"unknown value {v!r}; allowed: {', '.join(allowed)}")
    for name in ("activations", "weights", "depths", "density_depths"):
      values = getattr(self, name)
      if len(set(values)) != len(values):
        raise ConfigError(name, "lists a value twice; list each value once")
    if not self.depths or any(isinstance(d, bool) or d < 1 for d in self.depths):
      raise ConfigError("depths", f"must be integers >= 1; got {list(self.depths)}")
    if any(d not in self.depths for d in self.density_depths):
      raise ConfigError("density_depths", f"must be among --depths ({list(self.depths)}); got "
                        f"{list(self.density_depths)}")
    for name, minimum in (("width", 1), ("num_seeds", 2), ("bins_per_decade", 1)):
      if getattr(self, name) < minimum:
        raise ConfigError(name, f"must be >= {minimum}; got {getattr(self, name)}")
    if not 0 <= self.seed <= MAX_SEED:
      raise ConfigError("seed", f"must be between 0 and {MAX_SEED}; got {self.seed}")
    if not (math.isfinite(self.tanh_sigma2_b) and self.tanh_sigma2_b > 0):
      raise ConfigError("tanh_sigma2_b", "must be a finite number > 0 (at 0 the tanh critical "
                        f"point has q* = 0, a linear network); got {self.tanh_sigma2_b}")
    if not self.log10_lambda_min < self.log10_lambda_max:
      raise ConfigError("log10_lambda_min", "must be below --log10_lambda_max")


@dataclasses.dataclass(frozen=True)
class Case:
  """One activation x weights at its critical point."""
  activation: str
  weights: str
  sigma2_w: float
  sigma2_b: float
  q_star: float
  input_variance: float

  @property
  def label(self) -> str:
    return f"{self.activation}/{self.weights}"


def cases(config: SpectraConfig) -> list[Case]:
  out = []
  for activation in config.activations:
    sigma2_b = config.tanh_sigma2_b if activation == "tanh" else 0.0
    sigma2_w = phases.critical_weight_variance(activation, sigma2_b)
    q_star = phases.depth_scales(activation, sigma2_w, sigma2_b).q_star
    v = spectra.fixed_point_input_variance(activation, sigma2_w, sigma2_b)
    out += [Case(activation, w, float(sigma2_w), float(sigma2_b), float(q_star), float(v))
            for w in config.weights]
  return out


def bin_edges(config: SpectraConfig) -> np.ndarray:
  n = int(round((config.log10_lambda_max - config.log10_lambda_min) * config.bins_per_decade))
  return np.linspace(config.log10_lambda_min, config.log10_lambda_max, n + 1)


def measure_case(config: SpectraConfig, case: Case) -> dict[str, Any]:
  spec = isometry.NetworkSpec(input_dim=config.width, width=config.width,
                              depth=max(config.depths), output_dim=1,
                              activation=case.activation, bias_variance=case.sigma2_b,
                              batch_size=1)
  key = jax.random.fold_in(jax.random.key(config.seed), ACTIVATIONS.index(case.activation))
  return isometry.measure(key, spec, weight_init=INITIALIZER[case.weights],
                          scales=[case.sigma2_w], input_variances=[case.input_variance],
                          svd_layers=config.depths, num_seeds=config.num_seeds,
                          dtype=jnp.float32)


def _theory_moments(config: SpectraConfig, case: Case) -> spectra.JacobianMoments:
  return spectra.moments(case.activation, case.sigma2_w, case.sigma2_b, case.weights,
                         max(config.depths), input_variance=case.input_variance)


def case_rows(config: SpectraConfig, case: Case, out: dict[str, Any]
              ) -> tuple[list[dict], dict[int, dict]]:
  """Tidy rows (one per depth x quantity) and the summaries per depth."""
  theory = _theory_moments(config, case)
  finite = (spectra.linear_gaussian_moments(config.width, max(config.depths), case.sigma2_w)
            if (case.activation, case.weights) == ("identity", "gaussian") else None)
  rows, per_depth = [], {}
  base = {"activation": case.activation, "weights": case.weights, "sigma2_w": case.sigma2_w,
          "sigma2_b": case.sigma2_b, "q_star": case.q_star, "width": config.width}
  for i, k in enumerate(out["svd_layers"]):
    s = isometry.summarize(out["singular_values"][0, :, :, i], config.width)
    per_depth[int(k)] = s
    m1, nv = theory.mean[k - 1], theory.normalized_var[k - 1]
    predicted = {"mean_s2": m1, "m2_s2": m1 ** 2 * (1 + nv), "var_s2": m1 ** 2 * nv,
                 "normalized_var": nv}
    fw = {}
    if finite is not None:
      fw = {"m2_s2": finite[k - 1], "var_s2": finite[k - 1] - m1 ** 2,
            "normalized_var": finite[k - 1] / m1 ** 2 - 1}
    for q in QUANTITIES:
      rows.append({**base, "depth": int(k), "quantity": q, "measured": s.get(q),
                   "se": s.get(f"{q}_se"), "theory": predicted.get(q),
                   "theory_finite_width": fw.get(q), "num_networks": s["num_networks"],
                   "num_flagged": s["num_flagged"]})
  return rows, per_depth


def density_rows(config: SpectraConfig, case: Case, out: dict[str, Any]) -> list[dict]:
  """Measured and predicted density of log10 lambda per bin, at every density depth."""
  edges = bin_edges(config)
  rows = []
  lam = np.logspace(edges[0], edges[-1], 40 * (len(edges) - 1) + 1)
  for k in config.density_depths:
    i = list(out["svd_layers"]).index(k)
    measured = isometry.histogram(out["singular_values"][0, :, :, i], config.width, edges)
    dens = spectra.density(case.activation, case.sigma2_w, case.sigma2_b, case.weights, k,
                           lam=lam, q_star=case.q_star)
    theory = (np.full(len(edges) - 1, np.nan) if dens.point_mass is not None
              else spectra.bin_masses(dens, edges))
    for j in range(len(edges) - 1):
      rows.append({"activation": case.activation, "weights": case.weights, "depth": int(k),
                   "log10_lambda_lo": float(edges[j]), "log10_lambda_hi": float(edges[j + 1]),
                   "measured": float(measured[j]), "theory": float(theory[j])})
  return rows


def variance_slope(depths: np.ndarray, values: np.ndarray, max_depth: float) -> float:
  """Least-squares slope through the origin of the normalized variance against depth, over the
  depths <= max_depth (the theory: s = slope x L exactly)."""
  ok = (depths <= max_depth) & np.isfinite(values)
  if not ok.any():
    return float("nan")
  d, v = depths[ok].astype(float), values[ok]
  return float(np.sum(d * v) / np.sum(d * d))


def run(config: SpectraConfig) -> dict[str, Any]:
  """Every case measured and compared: {"cases", "rows", "density_rows", "slopes", "per_depth",
  "log10_m1", "seconds"}."""
  rows, dens_rows, slopes, per_depth, log10_m1, seconds = [], [], {}, {}, {}, {}
  fit_depth = config.width / 8
  for case in cases(config):
    start = time.perf_counter()
    out = measure_case(config, case)
    seconds[case.label] = time.perf_counter() - start
    logging.info("%s: %d networks, depth %d, width %d in %.1f s", case.label, config.num_seeds,
                 max(config.depths), config.width, seconds[case.label])
    new_rows, per_depth[case.label] = case_rows(config, case, out)
    rows += new_rows
    dens_rows += density_rows(config, case, out)
    log10_m1[case.label] = isometry.log10_mean_m1(out["log10_m1"][0])
    depths = np.array(sorted(per_depth[case.label]))
    nv = np.array([per_depth[case.label][k].get("normalized_var", np.nan) for k in depths])
    slopes[case.label] = {
        "measured": variance_slope(depths, nv, fit_depth),
        "theory": _theory_moments(config, case).slope, "fit_depths": [
            int(k) for k in depths if k <= fit_depth]}
  return {"cases": cases(config), "rows": rows, "density_rows": dens_rows, "slopes": slopes,
          "per_depth": per_depth, "log10_m1": log10_m1, "seconds": seconds}


def slope_table(result: dict[str, Any]) -> str:
  """The normalized variance's growth per layer, measured against theory, as text."""
  lines = [f"{'case':<22} {'sigma2_w':>9} {'q*':>8} {'slope measured':>15} {'theory':>8}"
           "   (normalized variance of s^2 per layer)"]
  for c in result["cases"]:
    sl = result["slopes"][c.label]
    lines.append(f"{c.label:<22} {c.sigma2_w:>9.4f} {c.q_star:>8.4f} {sl['measured']:>15.3f} "
                 f"{sl['theory']:>8.3f}")
  return "\n".join(lines)


def summary(config: SpectraConfig, result: dict[str, Any]) -> dict[str, Any]:
  per_case = {}
  for c in result["cases"]:
    per_case[c.label] = {
        **dataclasses.asdict(c), "variance_slope": result["slopes"][c.label],
        "per_depth": result["per_depth"][c.label],
        "log10_mean_s2_every_layer": result["log10_m1"][c.label]}
  return {"config": dataclasses.asdict(config), "cases": per_case,
          "definitions": {
              "spectrum": "eigenvalues lambda = s^2 of J_k J_k^T, J_k = dh_k/dx at one input "
                          "point per network, pooled over networks",
              "normalized_var": "var_s2 / mean_s2^2; theory: L (mu_2 / mu_1^2 - 1 + s_W), "
                                "s_W = 1 Gaussian, 0 orthogonal",
              "variance_slope": "least-squares slope through 0 of normalized_var against depth "
                                "over depths <= width / 8"},
          "seconds": result["seconds"], "jax_version": jax.__version__,
          "backend": jax.default_backend()}


def plot_densities(config: SpectraConfig, result: dict[str, Any]):
  """One panel per case: the density of log10 s^2 at each density depth, measured (steps)
  and predicted (lines)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  cs = result["cases"]
  cols = len(config.weights)
  fig = Figure(figsize=(5.5 * cols, 3.2 * len(cs) // cols))
  axes = np.atleast_2d(fig.subplots(len(cs) // cols, cols, squeeze=False))
  colors = matplotlib.colormaps["viridis"]
  for ax, c in zip(axes.ravel(), cs):
    for j, k in enumerate(config.density_depths):
      rows = [r for r in result["density_rows"] if r["activation"] == c.activation
              and r["weights"] == c.weights and r["depth"] == k]
      lo = np.array([r["log10_lambda_lo"] for r in rows])
      hi = np.array([r["log10_lambda_hi"] for r in rows])
      color = colors(j / max(1, len(config.density_depths) - 1))
      ax.stairs([r["measured"] for r in rows], np.append(lo, hi[-1]), color=color, lw=1.2,
                label=f"L = {k}")
      theory = np.array([r["theory"] for r in rows], float)
      if np.isnan(theory).all() and (c.activation, c.weights) == ("identity", "orthogonal"):
        ax.axvline(k * math.log10(c.sigma2_w), color=color, ls="--", lw=1.0)  # one atom
      else:
        ax.plot(0.5 * (lo + hi), theory, color=color, ls="--", lw=1.0)
    ax.set_title(f"{c.label} (sigma_w^2 = {c.sigma2_w:.3f}, q* = {c.q_star:.3g})", fontsize=9)
    ax.set_xlabel("log10 s^2")
    ax.set_ylabel("density per decade")
    ax.legend(fontsize=7)
  fig.suptitle(f"Spectrum of J J^T, {config.num_seeds} networks of width {config.width} per "
               "case (steps: measured; dashed: free probability)", fontsize=10)
  fig.tight_layout()
  return fig


def plot_moments(config: SpectraConfig, result: dict[str, Any]):
  """Normalized variance of s^2 against depth (log-log), measured and predicted."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=(6.5, 4.6))
  ax = fig.subplots()
  colors = matplotlib.colormaps["tab10"]
  for i, c in enumerate(result["cases"]):
    rows = [r for r in result["rows"] if r["activation"] == c.activation
            and r["weights"] == c.weights and r["quantity"] == "normalized_var"]
    d = np.array([r["depth"] for r in rows])
    meas = np.array([np.nan if r["measured"] is None else r["measured"] for r in rows], float)
    ax.plot(d, meas, "o-", color=colors(i), label=c.label, ms=4)
    ax.plot(d, [r["theory"] for r in rows], "--", color=colors(i), lw=1)
    fw = [r["theory_finite_width"] for r in rows]
    if any(v is not None for v in fw):
      ax.plot(d, fw, ":", color=colors(i), lw=1.5)
  ax.set_xscale("log")
  ax.set_yscale("symlog", linthresh=1e-2)
  ax.set_ylim(bottom=0.0)
  ax.set_xlabel("depth L")
  ax.set_ylabel("Var[s^2] / E[s^2]^2")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title(f"width {config.width}: measured (points), free probability (dashed), exact "
               "finite width (dotted, linear Gaussian)", fontsize=8)
  fig.tight_layout()
  return fig
