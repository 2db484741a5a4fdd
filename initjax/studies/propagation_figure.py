"""The book's weight-initialization figure, measured over many random networks, as data.

`run(config)` measures every setting of a `FigureConfig` (fixed sigma2_Omega values, which share
one compiled program, and named initializers such as he_normal) with `initjax.propagation`,
compares each layer with `initjax.theory`, and returns tidy rows, slopes and timings;
`summary(config, result)` is the JSON-ready summary and `plot(config, result)` the two-panel
figure (a matplotlib `Figure`, no backend needed).
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

from initjax.core import progress
from initjax.core.errors import ConfigError
from initjax.measurement import propagation
from initjax.nn import activations, normalization
from initjax.nn.initializers import draws_plain_normal, expected_variance
from initjax.theory import architectures, finite_width

OUTPUT_FILES = ("results.csv", "summary.json", "propagation.png")
# Above this depth the figure says how long its finite-width theory will take: measured, a
# 20000-layer ReLU setting's spread took 8.1 s and its two quantiles 6.6 s (2-core CPU).
LONG_THEORY_LAYERS = 5000
THEORY_SECONDS_PER_LAYER = 4e-4
RESULT_COLUMNS = (
    "arch", "init", "sigma2", "activation", "depth", "width", "input_dim", "batch_size",
    "bias_variance", "dtype", "layer", "quantity", "mean", "median", "q05", "q95", "log10_mean",
    "log10_median", "log10_q05", "log10_q95", "theory", "log10_theory", "log10_theory_q05",
    "log10_theory_q95", "num_seeds", "num_flagged", "flagged", "recurrent_init", "norm")
DTYPES = ("float32", "float64")
MAX_SEED = 2 ** 32 - 1  # jax.random.key keeps 32 bits: seed 2**32 would repeat seed 0


def weight_initializer_names() -> list[str]:
  """The registered initializers that draw weights (not zeros or a constant)."""
  from initjax.nn.initializers import initializer_names  # pylint: disable=import-outside-toplevel
  return [n for n in initializer_names() if n not in ("zeros", "constant")]


@dataclasses.dataclass(frozen=True)
class FigureConfig:
  """Everything that defines one run of the figure (written to summary.json); checked once, on
  construction (`ConfigError` names the field)."""
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
  num_devices: int = 0         # 0: all local devices (seeds are spread over them)
  arch: str = "mlp"            # initjax.architectures; input_dim is a CNN's sequence length
  branch_scale: str = "one"
  kernel_size: int = 5
  padding: str = "circular"
  # rnn/lstm/gru: the recurrent kernels' initializers, one curve each per setting (empty:
  # orthogonal); depth is the number of time steps, input_dim the values per step.
  recurrent_init: tuple[str, ...] = ()
  norm: str = "none"           # mlp: batchnorm (over the batch_size inputs) or layernorm

  def __post_init__(self):
    object.__setattr__(self, "sigma2", tuple(float(s) for s in self.sigma2))
    object.__setattr__(self, "inits", tuple(self.inits))
    object.__setattr__(self, "recurrent_init", tuple(self.recurrent_init))
    if any(not (math.isfinite(s) and s > 0) for s in self.sigma2):
      raise ConfigError("sigma2", "values must be finite numbers > 0")
    allowed = weight_initializer_names()
    unknown = [n for n in self.inits if n not in allowed]
    if unknown:
      raise ConfigError("inits", f"unknown value {unknown[0]!r}; allowed: {', '.join(allowed)}")
    for name in ("sigma2", "inits"):  # a repeated value would be one curve measured twice
      values = getattr(self, name)
      if len(set(values)) != len(values):
        raise ConfigError(name, "lists a value twice; list each value once")
    if not self.sigma2 and not self.inits:
      raise ConfigError("sigma2", "sigma2 and inits are both empty: nothing to measure")
    if self.activation not in activations.ACTIVATIONS:
      raise ConfigError("activation", f"unknown value {self.activation!r}; allowed: "
                        f"{', '.join(activations.activation_names())}")
    if self.dtype not in DTYPES:
      raise ConfigError("dtype", f"must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
    for name in ("depth", "width", "input_dim", "output_dim", "num_seeds", "batch_size"):
      if getattr(self, name) < 1:
        raise ConfigError(name, f"must be >= 1; got {getattr(self, name)}")
    for name in ("seed_chunk", "num_devices", "seed"):
      if getattr(self, name) < 0:
        raise ConfigError(name, f"must be >= 0; got {getattr(self, name)}")
    if self.seed > MAX_SEED:
      raise ConfigError("seed", f"must be <= {MAX_SEED} (PRNG keys keep 32 bits); got {self.seed}")
    if not (math.isfinite(self.bias_variance) and self.bias_variance >= 0):
      raise ConfigError("bias_variance", f"must be a finite number >= 0; got {self.bias_variance}")
    if self.arch not in architectures.ARCHITECTURES:
      raise ConfigError("arch", f"unknown value {self.arch!r}; allowed: "
                        f"{', '.join(architectures.architecture_names())}")
    if self.arch != "mlp" and self.dtype != "float32":
      raise ConfigError("dtype", "float64 is a cross-check of the MLP's log-space path; "
                        f"--arch={self.arch} runs in float32")
    self._check_recurrent()
    try:
      self.options()
    except ValueError as e:
      field = next((f for f in ("kernel_size", "padding", "norm") if f in str(e)),
                   "branch_scale")
      raise ConfigError(field, str(e)) from None
    try:
      architectures.check_norm(architectures.get(self.arch), self.norm)
    except ValueError as e:
      raise ConfigError("norm", str(e)) from None
    try:
      normalization.check_batch(self.norm, self.batch_size)
    except ValueError as e:
      raise ConfigError("norm/batch_size", str(e)) from None
    if self.norm != "none" and self.dtype != "float32":
      raise ConfigError("dtype", f"--norm={self.norm} runs in float32")

  def _check_recurrent(self) -> None:
    recurrent = architectures.is_recurrent(self.arch)
    if self.recurrent_init and not recurrent:
      raise ConfigError("recurrent_init", "applies to the recurrent architectures only (--arch="
                        f"{', '.join(architectures.RECURRENT)}); got --arch={self.arch}")
    allowed = architectures.recurrent_init_names()
    for name in self.recurrent_init:
      if name not in allowed:
        raise ConfigError("recurrent_init", f"unknown value {name!r}; allowed: "
                          f"{', '.join(allowed)}")
    if len(set(self.recurrent_init)) != len(self.recurrent_init):
      raise ConfigError("recurrent_init", "lists a value twice; list each value once")
    if recurrent:
      defaults = FigureConfig.__dataclass_fields__
      for name in ("kernel_size", "padding", "branch_scale"):
        if getattr(self, name) != defaults[name].default:
          owner = "resmlp" if name == "branch_scale" else "cnn"
          raise ConfigError(name, f"is an option of --arch={owner}; --arch={self.arch} takes "
                            f"--recurrent_init (allowed: {', '.join(allowed)})")

  def recurrent_inits(self) -> tuple[str, ...]:
    """The recurrent kernels' initializers of the curves ("" for an architecture without)."""
    if not architectures.is_recurrent(self.arch):
      return ("",)
    return self.recurrent_init or ("orthogonal",)

  def input_shape(self) -> tuple[int, ...]:
    """One input: (input_dim,), or (depth, input_dim) time steps for a recurrent architecture."""
    if architectures.is_recurrent(self.arch):
      return (self.depth, self.input_dim)
    return (self.input_dim,)

  def options(self) -> architectures.ArchOptions:
    return architectures.ArchOptions(branch_scale=self.branch_scale,
                                     kernel_size=self.kernel_size, padding=self.padding,
                                     norm=self.norm)

  @property
  def book_mlp(self) -> bool:
    """The book's plain MLP, measured in log space (`propagation.measure`); every other
    network through its architecture record (`propagation.measure_architecture`)."""
    return self.arch == "mlp" and self.norm == "none"

  def spec(self) -> propagation.NetworkSpec:
    return propagation.NetworkSpec(
        input_dim=self.input_dim, width=self.width, depth=self.depth,
        output_dim=self.output_dim, activation=self.activation,
        bias_variance=self.bias_variance, batch_size=self.batch_size)


@dataclasses.dataclass
class Setting:
  """One curve of the figure: an initializer times a weight-variance multiplier."""
  label: str
  init: str          # "normal" for a fixed sigma2_Omega, else a registered initializer
  sigma2: float      # sigma2_Omega of the hidden layers
  scale: float       # multiplier passed to propagation.measure
  recurrent_init: str = ""   # rnn/lstm/gru: the recurrent kernels' initializer (not scaled)

  def same(self, row: dict[str, Any]) -> bool:
    """Whether a result row belongs to this setting."""
    return (row["init"] == self.init and row["sigma2"] == self.sigma2
            and row.get("recurrent_init", "") == self.recurrent_init)

  @property
  def init_kwargs(self) -> dict[str, Any]:
    return {"variance": 1.0} if self.init == "normal" else {}


def settings_for(config: FigureConfig) -> list[Setting]:
  from initjax.nn.initializers import expected_variance  # pylint: disable=import-outside-toplevel
  out = [Setting(f"sigma2={s:g}", "normal", float(s), float(s)) for s in config.sigma2]
  for name in config.inits:
    s2 = expected_variance(name, (config.width, config.width))
    out.append(Setting(name, name, float(s2), 1.0))
  if not architectures.is_recurrent(config.arch):
    return out
  many = len(out) > 1
  return [dataclasses.replace(s, label=f"{s.label}, rec {r}" if many else f"rec {r}",
                              recurrent_init=r)
          for r in config.recurrent_inits() for s in out]


def _lin(log10_value: float) -> float:
  """10**x in float64; NaN where that is not representable (the log10 column still holds it)."""
  if not math.isfinite(log10_value) or log10_value > 307.0 or log10_value < -307.0:
    return float("nan")
  return 10.0 ** log10_value


def _measure_groups(settings: list[Setting]) -> list[tuple[str, list[Setting]]]:
  """Settings that share a compiled program: every plain-normal one (fixed sigma2, He, Xavier,
  LeCun normal) in one group, each other initializer in its own."""
  plain = [s for s in settings if draws_plain_normal(s.init)]
  return ([("plain normal", plain)] if plain else []) + [
      (s.init, [s]) for s in settings if not draws_plain_normal(s.init)]


def measure_settings(config: FigureConfig, settings: list[Setting]
                     ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
  """{label: {quantity: (seeds, layers) log10 values}} and seconds per measured group. Every
  setting uses the same keys (paired draws)."""
  spec, dtype = config.spec(), jnp.dtype(config.dtype)
  key = jax.random.key(config.seed)
  measured, timing = {}, {}
  groups = (_measure_groups(settings) if config.book_mlp else
            [(s.init, [s]) for s in settings if s.init != "normal"]
            + [("normal", [s for s in settings if s.init == "normal" and s.recurrent_init == r])
               for r in dict.fromkeys(s.recurrent_init for s in settings)])
  for name, group in groups:
    if not group:
      continue
    start = time.perf_counter()
    common = dict(num_seeds=config.num_seeds, dtype=dtype, seed_chunk=config.seed_chunk or None,
                  num_devices=config.num_devices or None)
    if not config.book_mlp:
      out = propagation.measure_architecture(
          key, config.arch, activation=config.activation, options=_options(config, group[0]),
          input_shape=config.input_shape(), width=config.width, depth=config.depth,
          output_dim=config.output_dim, batch_size=config.batch_size,
          bias_variance=config.bias_variance, weight_init=name,
          scales=[s.scale for s in group], **common)
    elif name == "plain normal":
      variances = [[s.scale * expected_variance(s.init, shape, **s.init_kwargs)
                    for shape in propagation.kernel_shapes(spec)] for s in group]
      out = propagation.measure(key, spec, layer_variances=variances, **common)
    else:
      out = propagation.measure(key, spec, weight_init=name, scales=[s.scale for s in group],
                                **common)
    name = f"{name}, rec {group[0].recurrent_init}" if group[0].recurrent_init else name
    timing[name] = time.perf_counter() - start
    for i, s in enumerate(group):
      measured[s.label] = {q: v[i] for q, v in out.items()}
    logging.info("measured %s (%d setting(s) x %d seeds) in %.1f s", name, len(group),
                 config.num_seeds, timing[name])
  return measured, timing


def _options(config: FigureConfig, setting: Setting) -> architectures.ArchOptions:
  if not setting.recurrent_init:
    return config.options()
  return dataclasses.replace(config.options(), recurrent_init=setting.recurrent_init)


def _layers(config: FigureConfig, quantity: str, count: int) -> np.ndarray:
  """The layer index k of each of `count` values of `quantity`."""
  if config.book_mlp:
    return propagation.layer_indices(quantity, config.depth)
  model = architectures.get(config.arch).model(config.activation, config.options())
  return np.arange(count) + model.first_layer(quantity)


def _theory(config: FigureConfig, setting: Setting) -> dict[str, np.ndarray]:
  """Mean-field log10 variances per quantity, and the MLP's finite-width 5-95% band of Var[h_k]
  (`initjax.finite_width`) as "var_h_q05"/"var_h_q95"."""
  if not config.book_mlp:
    return architectures.predict_for_init(
        architectures.get(config.arch), setting.init, input_shape=config.input_shape(),
        width=config.width, depth=config.depth, output_dim=config.output_dim,
        scale=setting.scale, sigma2_b=config.bias_variance, activation=config.activation,
        options=_options(config, setting), init_kwargs=setting.init_kwargs,
        **({"batch_size": config.batch_size} if config.norm == "batchnorm" else {}))
  spec = config.spec()
  pred = propagation.theory_for(spec, setting.init, setting.scale, setting.init_kwargs).as_dict()
  sigma2 = [setting.scale * expected_variance(setting.init, shape, **setting.init_kwargs)
            for shape in propagation.kernel_shapes(spec)]
  try:
    band = finite_width.log_variance_spread(
        input_dim=config.input_dim, width=config.width, depth=config.depth,
        output_dim=config.output_dim, sigma2_omega=sigma2, sigma2_beta=config.bias_variance,
        activation=config.activation, batch_size=config.batch_size, quantity="var_h")
    pred["var_h_q05"], pred["var_h_q95"] = band.log10_quantiles((0.05, 0.95))
  except ValueError:     # no spread to predict (a layer's variance vanishes or overflows)
    pass
  return pred


def setting_rows(config: FigureConfig, setting: Setting, measured: dict[str, np.ndarray],
                 pred: dict[str, np.ndarray]) -> list[dict[str, Any]]:
  """Tidy rows of one setting: one per quantity x layer, across-seed summaries and theory
  (empty where the theory says nothing: the CNN's channel statistics, say)."""
  rows = []
  nan = np.full(max(v.shape[-1] for v in measured.values()), np.nan)
  for q in [q for q in propagation.QUANTITIES if q in measured] + sorted(
      set(measured) - set(propagation.QUANTITIES)):
    summary = propagation.summarize_seeds(measured[q])
    theory_q = pred.get(q, nan)
    low, high = pred.get(f"{q}_q05", nan), pred.get(f"{q}_q95", nan)
    for j, k in enumerate(_layers(config, q, measured[q].shape[-1])):
      lt = float(theory_q[j])
      rows.append({
          "arch": config.arch, "init": setting.init, "sigma2": setting.sigma2,
          "activation": config.activation, "depth": config.depth, "width": config.width,
          "input_dim": config.input_dim, "batch_size": config.batch_size,
          "bias_variance": config.bias_variance, "dtype": config.dtype, "layer": int(k),
          "quantity": q,
          "mean": _lin(summary["log10_mean"][j]), "median": _lin(summary["log10_median"][j]),
          "q05": _lin(summary["log10_q05"][j]), "q95": _lin(summary["log10_q95"][j]),
          "log10_mean": summary["log10_mean"][j], "log10_median": summary["log10_median"][j],
          "log10_q05": summary["log10_q05"][j], "log10_q95": summary["log10_q95"][j],
          "theory": _lin(lt), "log10_theory": lt, "log10_theory_q05": float(low[j]),
          "log10_theory_q95": float(high[j]), "num_seeds": config.num_seeds,
          "num_flagged": int(summary["num_flagged"][j]),
          "flagged": bool(summary["num_flagged"][j] > 0), "recurrent_init": setting.recurrent_init,
          "norm": config.norm,
      })
  return rows


def run(config: FigureConfig) -> dict[str, Any]:
  """Measures every setting; returns {"rows", "settings", "slopes", "timing", "measured",
  "flagged"} where flagged is {label: values that could not be measured (overflow, underflow to
  zero or NaN)}, each left out of the summaries and flagged in its rows."""
  settings = settings_for(config)
  measured, timing = measure_settings(config, settings)
  rows, slopes, flagged = [], {}, {}
  if config.book_mlp and config.depth >= LONG_THEORY_LAYERS:
    logging.info("the finite-width theory of %d setting(s) x %d layers takes roughly %s (about "
                 "%.1f ms per layer and setting on a 2-core CPU); its progress follows",
                 len(settings), config.depth, progress.duration(
                     len(settings) * (config.depth * THEORY_SECONDS_PER_LAYER + 7.0)),
                 1e3 * THEORY_SECONDS_PER_LAYER)
  theories = progress.Progress("the theory of each setting", len(settings), "settings")
  for i, s in enumerate(settings):
    theories.update(i)
    pred = _theory(config, s)
    slopes[s.label] = propagation.layer_slopes(config.depth, measured[s.label], pred)
    new_rows = setting_rows(config, s, measured[s.label], pred)
    flagged[s.label] = sum(r["num_flagged"] for r in new_rows)
    rows += new_rows
  return {"rows": rows, "settings": settings, "slopes": slopes, "timing": timing,
          "measured": measured, "flagged": flagged}


def slope_table(result: dict[str, Any]) -> str:
  """The per-layer slopes, measured against theory, as a fixed-width text table."""
  w = max([16] + [len(s.label) for s in result["settings"]])
  lines = [f"{'setting':<{w}} {'fwd measured':>13} {'fwd theory':>11} {'bwd measured':>13} "
           f"{'bwd theory':>11}   (decades of variance per layer)"]
  for s in result["settings"]:
    sl = result["slopes"][s.label]
    lines.append(f"{s.label:<{w}} {sl['forward_measured']:>+13.3f} {sl['forward_theory']:>+11.3f} "
                 f"{sl['backward_measured']:>+13.3f} {sl['backward_theory']:>+11.3f}")
  return "\n".join(lines)


def summary(config: FigureConfig, result: dict[str, Any]) -> dict[str, Any]:
  """The JSON summary: configuration, per-setting slopes and last-layer levels, timings."""
  per_setting = {}
  for s in result["settings"]:
    rows = [r for r in result["rows"] if s.same(r)]
    per_setting[s.label] = {
        "init": s.init, "sigma2_omega": s.sigma2, **(
            {"recurrent_init": s.recurrent_init} if s.recurrent_init else {}),
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


def plot(config: FigureConfig, result: dict[str, Any]):
  """The book's two panels: forward Var[h_k] and backward Var[dl/dh_k] against layer k.

  Solid: across-seed median, band: 5-95% of seeds, dashed: theory. y is log10 of the variance
  (a linear axis in decades, so values beyond float64 would still plot). Returns a matplotlib
  `Figure` (save it with `initjax.results.atomic_savefig`).
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  fig = Figure(figsize=(12, 4.8))
  axes = fig.subplots(1, 2, sharey=False)
  colors = matplotlib.colormaps["tab10"]
  panels = (("var_h", "a) Forward pass: Var[h_k]"),
            ("var_dl_dh", "b) Backward pass: Var[dl/dh_k]"))
  if architectures.is_recurrent(config.arch):
    panels = (("var_h", "a) Forward in time: Var[h_t]"),
              ("var_dl_dh", "b) Backward from the last step: Var[dL/dh_t]"))
  for ax, (q, title) in zip(axes, panels):
    for i, s in enumerate(result["settings"]):
      rows = [r for r in result["rows"] if s.same(r) and r["quantity"] == q]
      k = np.array([r["layer"] for r in rows])
      column = lambda name, rows=rows: np.array([r[name] for r in rows], dtype=float)
      c = colors(i % 10)
      label = (s.label if s.init == "normal" or s.recurrent_init
               else f"{s.label} ({s.sigma2:.3g})")
      ax.plot(k, column("log10_median"), color=c, lw=2.4 if s.init != "normal" else 1.6,
              ls=":" if s.init != "normal" else "-", label=label)
      ax.fill_between(k, column("log10_q05"), column("log10_q95"), color=c, alpha=0.25, lw=0)
      ax.plot(k, column("log10_theory"), color=c, lw=1.0, ls="--")
      for edge in ("log10_theory_q05", "log10_theory_q95"):   # finite-width theory band
        if np.isfinite(column(edge)).any():
          ax.plot(k, column(edge), color=c, lw=0.8, ls=(0, (1, 2)))
      bad = [r["layer"] for r in rows if r["flagged"]]
      if bad:
        ax.plot(bad, np.interp(bad, k, np.nan_to_num(column("log10_theory"))), "x", color=c,
                ms=4)
    ax.set_title(title)
    ax.set_xlabel("time step t" if architectures.is_recurrent(config.arch) else "layer k")
    ax.set_ylabel("log10 variance")
    ax.set_xlim(0, config.depth)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8, loc="upper left")
  alpha = {"one": "alpha = 1", "invsqrt": "alpha = 1/sqrt(depth)",
           "skipinit": "alpha = 0 at initialization"}.get(config.branch_scale, config.branch_scale)
  what = {"mlp": "MLP", "resmlp": f"residual MLP ({alpha})",
          "cnn": f"CNN (kernel {config.kernel_size}, {config.padding} padding)"}.get(
              config.arch, config.arch.upper())
  if config.norm != "none":
    what += {"batchnorm": f" with batch normalization over the {config.batch_size} inputs",
             "layernorm": " with layer normalization"}[config.norm]
  units = "channels" if config.arch == "cnn" else "units"
  if architectures.is_recurrent(config.arch):
    theory = ("mean field of the vanilla RNN" if config.arch == "rnn" else
              "no mean-field prediction for gated cells")
    fig.suptitle(f"{what}, {config.activation}, {config.width} units, {config.depth} time steps "
                 f"of {config.input_dim} value(s) (mean square 1), readout of h_T; "
                 f"{config.num_seeds} random networks per setting, {config.batch_size} "
                 f"sequences each\n(thick: median over networks, band: their 5-95%; dashed: "
                 f"{theory})", fontsize=9)
    fig.tight_layout()
    return fig
  band = "; dotted thin: the theory's 5-95% band at this width" if config.book_mlp else ""
  fig.suptitle(f"{what}, {config.activation}, depth {config.depth} x {config.width} {units}, "
               f"{config.num_seeds} random networks per setting, {config.batch_size} inputs each\n"
               f"(thick: median over networks, band: their 5-95%; dashed: theory{band})",
               fontsize=9)
  fig.tight_layout()
  return fig
