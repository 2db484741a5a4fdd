"""Glorot & Bengio 2010: per-layer activation and back-propagated gradient distributions of deep
tanh and sigmoid MLPs, at initialization and during training, under the "standard"
U[-1/sqrt(n), 1/sqrt(n)] initialization and their normalized one.

`run(config)` trains `num_seeds` networks per (activation, init) on MNIST-1D, all seeds of one
activation in one vmapped, compiled program (`initjax.batch_training.run_networks`), and records
at every `stats_every` steps, on the first `stats_batch_size` training examples, for every
hidden layer k = 1..K of the book's MLP:

  * h_k = a[f_{k-1}]: mean, standard deviation, quantiles, a histogram over the activation's
    range, and the fractions within 5% of the range of either end (saturated_low / _high:
    sigmoid at 0 and 1, tanh and softsign at -1 and 1);
  * the back-propagated gradient dl/df_{k-1} (Glorot & Bengio's dCost/ds, the gradient with
    respect to the layer's pre-activation, exact from `jax.grad`): variance and quantiles;
  * the weight gradient dl/dOmega_j of every weight matrix j = 0..K: its variance.

Their analysis (linear regime, layers of equal width n): Var[h_k] changes by n Var[W] per layer
forward and Var[dl/df_k] by n Var[W] per layer backward, so the standard init (n Var = 1/3)
shrinks activations towards the output and gradients towards the input by log10 3 = 0.477
decades per layer, while the normalized init (n Var = 1 on square layers) keeps both, and the
weight gradients Var[h_k] Var[dl/df_k] stay about the same across layers under either.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initjax.core.errors import ConfigError
from initjax.nn import models, networks
from initjax.training import batch_training, loop
from initjax.studies.sweep.group import weight_initializer
from initjax.training import data as data_lib

# Glorot & Bengio's "standard" init: U[-1/sqrt(fan_in), 1/sqrt(fan_in)], Var = 1 / (3 fan_in).
STANDARD = "he_uniform:gain=0.5773502691896258"
NORMALIZED = "xavier_uniform"
RANGES = {"tanh": (-1.0, 1.0), "softsign": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
BINS = 40
SATURATION = 0.05   # within 5% of the range of either end
COLUMNS = ("activation", "init", "seed", "step", "layer", "quantity", "value")
HISTOGRAM_COLUMNS = ("activation", "init", "step", "layer", "bin_low", "bin_high",
                     "fraction", "num_seeds")


@dataclasses.dataclass(frozen=True)
class SaturationConfig:
  activations: tuple[str, ...] = ("tanh", "sigmoid")
  inits: tuple[str, ...] = (STANDARD, NORMALIZED)
  depth: int = 5
  width: int = 256
  num_seeds: int = 4
  steps: int = 2000
  stats_every: int = 100
  learning_rate: float = 0.01
  optimizer: str = "momentum"
  batch_size: int = 100
  stats_batch_size: int = 256
  seed: int = 0
  data_dir: str = ""

  def __post_init__(self):
    for field in ("activations", "inits"):
      object.__setattr__(self, field, tuple(getattr(self, field)))
    if not self.activations:
      raise ConfigError("activations", f"needs at least one of: {', '.join(RANGES)}")
    for a in self.activations:
      if a not in RANGES:
        raise ConfigError("activations", f"unknown value {a!r}; allowed: {', '.join(RANGES)} "
                          "(bounded activations, whose saturation is defined)")
    if not self.inits:
      raise ConfigError("inits", "needs at least one initializer")
    for i in self.inits:
      try:
        weight_initializer(i)
      except (KeyError, TypeError, ValueError) as e:
        raise ConfigError("inits", f"{i!r}: {e}") from None
    for field, minimum in (("depth", 2), ("width", 1), ("num_seeds", 1), ("steps", 1),
                           ("stats_every", 1), ("batch_size", 1), ("stats_batch_size", 2)):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(field, f"must be an integer >= {minimum}; got {value!r}")
    if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
      raise ConfigError("learning_rate", f"must be a finite number > 0; got {self.learning_rate}")

  def spec(self) -> loop.TrainSpec:
    return loop.TrainSpec(optimizer=self.optimizer, steps=self.steps, batch_size=self.batch_size,
                          eval_every=self.steps, stats_every=self.stats_every,
                          stats_batch_size=self.stats_batch_size)


def distribution_statistics(params, x_NxD, y, loss_fn, activation: str) -> dict[str, jax.Array]:
  """One network's per-layer distributions on the batch (x, y) (the module docstring); hidden
  layers k = 1..K on the second axis, weights j = 0..K for the weight gradients."""
  depth = params["omega_hidden"].shape[0] + 1
  n, width = x_NxD.shape[0], params["omega_0"].shape[0]
  zeros_KxNxD = jnp.zeros((depth, n, width), x_NxD.dtype)
  offsets = {"f": zeros_KxNxD, "h": zeros_KxNxD,
             "f_out": jnp.zeros((n, params["omega_out"].shape[0]), x_NxD.dtype)}

  def loss_of(p, o):
    trace = networks.trace_mlp(p, x_NxD, activation, o)
    return loss_fn(trace["f_out"], y), trace["h"]

  (loss, h_KxNxD), (g_params, g_offsets) = jax.value_and_grad(
      loss_of, argnums=(0, 1), has_aux=True)(params, offsets)
  h_KxM = h_KxNxD.reshape(depth, -1)
  g_KxM = g_offsets["f"].reshape(depth, -1)
  lo, hi = RANGES[activation]
  edge = SATURATION * (hi - lo)
  qs = jnp.asarray(QUANTILES, h_KxM.dtype)
  hist_KxB = jax.vmap(lambda v: jnp.histogram(v, bins=BINS, range=(lo, hi))[0])(h_KxM)
  weight_var = jnp.concatenate([
      jnp.var(g_params["omega_0"])[None], jnp.var(g_params["omega_hidden"], axis=(1, 2)),
      jnp.var(g_params["omega_out"])[None]])
  return {"h_mean": jnp.mean(h_KxM, axis=1), "h_std": jnp.std(h_KxM, axis=1),
          "h_quantiles": jnp.quantile(h_KxM, qs, axis=1).T,
          "h_histogram": hist_KxB / h_KxM.shape[1],
          "saturated_low": jnp.mean(h_KxM <= lo + edge, axis=1),
          "saturated_high": jnp.mean(h_KxM >= hi - edge, axis=1),
          "dl_df_var": jnp.var(g_KxM, axis=1),
          "dl_df_quantiles": jnp.quantile(g_KxM, qs, axis=1).T,
          "weight_grad_var": weight_var, "loss": loss}


@functools.lru_cache(maxsize=None)
def model(activation: str) -> models.Model:
  """The book's MLP recording `distribution_statistics` while it trains."""
  return models.Model(
      name=f"mlp-{activation}-distributions",
      apply=functools.partial(networks.apply_mlp, activation=activation),
      layer_statistics=functools.partial(distribution_statistics, activation=activation),
      stacked=("omega_hidden", "beta_hidden"))


SCALARS = ("h_mean", "h_std", "saturated_low", "saturated_high", "dl_df_var")


def run(config: SaturationConfig, data: dict[str, Any] | None = None) -> dict[str, Any]:
  """Trains every (activation, init) x seed; returns {"records": {(activation, init): records
  with a leading seed axis}, "steps": the recorded steps, "rows", "histogram_rows"}."""
  data = data if data is not None else data_lib.get_dataset(
      "mnist1d", data_dir=config.data_dir or None)
  spec = config.spec()
  root = jax.random.PRNGKey(config.seed)
  out: dict[tuple[str, str], dict[str, np.ndarray]] = {}
  for activation in config.activations:
    params, keys = [], []
    for j, init in enumerate(config.inits):
      k_init, k_data = jax.random.split(jax.random.fold_in(root, j))
      draw = functools.partial(networks.init_mlp, input_dim=data["x_train"].shape[1],
                               width=config.width, depth=config.depth,
                               output_dim=data["output_dim"], weight_init=weight_initializer(init))
      params.append(jax.vmap(draw)(jax.random.split(k_init, config.num_seeds)))
      keys.append(jax.random.split(k_data, config.num_seeds))
    params_B = jax.tree.map(lambda *a: jnp.concatenate(a), *params)
    lrs = np.full((config.num_seeds * len(config.inits),), config.learning_rate, np.float32)
    records = batch_training.run_networks(model(activation), params_B, jnp.concatenate(keys),
                                          lrs, data_lib.device_arrays(data), spec)
    n = config.num_seeds
    for j, init in enumerate(config.inits):
      out[(activation, init)] = {k: np.asarray(v[j * n:(j + 1) * n]) for k, v in records.items()}
  steps = loop.stats_steps(spec)
  return {"records": out, "steps": steps, "rows": rows(config, out, steps),
          "histogram_rows": histogram_rows(config, out, steps)}


def rows(config: SaturationConfig, records: dict, steps: np.ndarray) -> list[dict[str, Any]]:
  """Tidy rows: one per (activation, init, seed, step, layer, quantity). Layers: hidden layer k
  for the activation and gradient statistics (dl_df_var of layer k is dl/df_{k-1}, the gradient
  at the input of its activation), weight j (0 = the input layer's, K = the output's) for
  weight_grad_var."""
  out = []
  for (activation, init), r in records.items():
    for s in range(config.num_seeds):
      diverged = int(r["diverged_step"][s])
      for t, step in enumerate(steps):
        lost = 0 <= diverged <= step
        for quantity in SCALARS + ("weight_grad_var",):
          for i, v in enumerate(r[quantity][s, t]):
            layer = i if quantity == "weight_grad_var" else i + 1
            out.append({"activation": activation, "init": init, "seed": s, "step": int(step),
                        "layer": layer, "quantity": quantity,
                        "value": math.nan if lost else float(v)})
        for quantity in ("h_quantiles", "dl_df_quantiles"):
          for i, values in enumerate(r[quantity][s, t]):
            for q, v in zip(QUANTILES, values):
              out.append({"activation": activation, "init": init, "seed": s,
                          "step": int(step), "layer": i + 1,
                          "quantity": f"{quantity[:-9]}q{round(q * 100):02d}",
                          "value": math.nan if lost else float(v)})
  return out


def histogram_rows(config: SaturationConfig, records: dict,
                   steps: np.ndarray) -> list[dict[str, Any]]:
  """The activation histograms averaged over the seeds that had not diverged by that step."""
  out = []
  for (activation, init), r in records.items():
    lo, hi = RANGES[activation]
    edges = np.linspace(lo, hi, BINS + 1)
    diverged = r["diverged_step"]
    for t, step in enumerate(steps):
      alive = ~((diverged >= 0) & (diverged <= step))
      if not alive.any():
        continue
      mean_LxB = r["h_histogram"][alive, t].mean(axis=0)
      for k, fractions in enumerate(mean_LxB):
        for b, fraction in enumerate(fractions):
          out.append({"activation": activation, "init": init, "step": int(step),
                      "layer": k + 1, "bin_low": float(edges[b]), "bin_high": float(edges[b + 1]),
                      "fraction": float(fraction), "num_seeds": int(alive.sum())})
  return out


def _slope(values_L: np.ndarray) -> float:
  """Least-squares slope of log10 values against the layer index (decades per layer)."""
  return float(np.polyfit(np.arange(len(values_L)), np.log10(values_L), 1)[0])


def summary(config: SaturationConfig, result: dict) -> dict[str, Any]:
  """Per (activation, init): at initialization, the slopes of log10 Var[h_k] and of log10
  Var[dl/df_k] over the hidden layers (median over seeds), the spread of the hidden weights'
  gradient variances; during training, the top hidden layer's mean activation and saturation
  per recorded step (median over seeds)."""
  out = {}
  for (activation, init), r in result["records"].items():
    var_h = np.median(r["h_std"][:, 0] ** 2, axis=0)            # (K,) at step 0
    var_g = np.median(r["dl_df_var"][:, 0], axis=0)
    w = np.median(r["weight_grad_var"][:, 0, 1:-1], axis=0)     # the square hidden weights
    top_mean = np.median(r["h_mean"][:, :, -1], axis=0)         # (T,)
    top_low = np.median(r["saturated_low"][:, :, -1], axis=0)
    out[f"{activation} {init}"] = {
        "activation": activation, "init": init,
        "forward_slope_at_init": _slope(var_h),
        "backward_slope_at_init": _slope(var_g),
        "log10_var_h_at_init": np.log10(var_h).tolist(),
        "log10_var_dl_df_at_init": np.log10(var_g).tolist(),
        "hidden_weight_grad_log10_spread_at_init": float(np.log10(w.max() / w.min()))
        if w.size else 0.0,
        "top_layer_mean_activation": top_mean.tolist(),
        "top_layer_saturated_low": top_low.tolist(),
        "num_diverged": int((r["diverged_step"] >= 0).sum()),
        "final_train_loss_median": float(np.median(r["train_loss"][:, -1]))}
  return {"config": dataclasses.asdict(config), "steps": result["steps"].tolist(),
          "standard_init": STANDARD, "normalized_init": NORMALIZED,
          "settings": out,
          "definitions": {
              "forward_slope_at_init": "decades per hidden layer of Var[h_k], k = 1..K, at step "
                                       "0 (least squares; median over seeds per layer)",
              "backward_slope_at_init": "decades per hidden layer of Var[dl/df_{k-1}] at step 0 "
                                        "(positive: gradients shrink towards the input)",
              "hidden_weight_grad_log10_spread_at_init": "log10 of max / min of Var[dl/dOmega] "
                                                         "over the square hidden weights",
              "top_layer_mean_activation": "per recorded step, the mean of h_K (median over "
                                           "seeds)",
              "top_layer_saturated_low": "per recorded step, the fraction of h_K within 5% of "
                                         "the range of its lower end (median over seeds)"}}


def plot(result: dict):
  """One row per (activation, init): the mean and 5-95% range of every hidden layer's
  activation during training (Glorot & Bengio's Fig. 2), its histogram at initialization
  (Fig. 6) and the back-propagated gradient's variance per layer during training (Fig. 7)."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  settings = list(result["records"].items())
  fig = Figure(figsize=(13, 2.7 * len(settings)))
  axes = fig.subplots(len(settings), 3, squeeze=False)
  steps = result["steps"]
  for row, ((activation, init), r) in zip(axes, settings):
    label = "standard" if init == STANDARD else "normalized" if init == NORMALIZED else init
    depth = r["h_mean"].shape[2]
    lo, hi = RANGES[activation]
    centers = np.linspace(lo, hi, BINS + 1)
    centers = (centers[1:] + centers[:-1]) / 2
    q05, q95 = QUANTILES.index(0.05), QUANTILES.index(0.95)
    with np.errstate(all="ignore"):
      for k in range(depth):
        color = f"C{k}"
        mean = np.nanmedian(r["h_mean"][:, :, k], axis=0)
        row[0].plot(steps, mean, color=color, label=f"layer {k + 1}")
        row[0].fill_between(steps, np.nanmedian(r["h_quantiles"][:, :, k, q05], axis=0),
                            np.nanmedian(r["h_quantiles"][:, :, k, q95], axis=0), color=color,
                            alpha=0.12)
        row[1].plot(centers, np.nanmean(r["h_histogram"][:, 0, k], axis=0), color=color)
        row[2].semilogy(steps, np.nanmedian(r["dl_df_var"][:, :, k], axis=0), color=color)
    row[0].set_title(f"{activation}, {label}: activation (mean, 5-95%)", fontsize=9)
    row[1].set_title("activation histogram at initialization", fontsize=9)
    row[2].set_title("Var[dl/df] (back-propagated gradient)", fontsize=9)
    row[0].set_xlabel("step")
    row[1].set_xlabel("h")
    row[2].set_xlabel("step")
    row[0].legend(fontsize=6, ncol=2)
  fig.tight_layout()
  return fig
