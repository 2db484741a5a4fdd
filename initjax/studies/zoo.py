"""The standard models researchers write, measured and trained with initjax: what attention,
LayerNorm, recurrence and BatchNorm do to the He and Xavier conditions.

Three studies (`python -m experiments.zoo --model=...`), each on a model written as its users
write it (the flax examples' style), each returning tidy rows, a summary and a table:

  transformer  a pre-LayerNorm transformer encoder (`Encoder`: Flax's
               MultiHeadDotProductAttention, LayerNorm, a GELU MLP) over many random
               initializations, He vs Xavier vs Flax's default (LeCun, truncated), every layer's
               forward and backward variance and gains (`initjax.probe`)
  rnn          `nn.RNN` over a tanh `SimpleCell`, per time step, orthogonal vs He vs Xavier
               recurrent kernels, Var[dL/dh_t] from the last step back to the first against the
               vanilla RNN's mean field (`initjax.theory.recurrent`)
  resnet       a 1-D ResNet with BatchNorm (the flax imagenet example's blocks) trained on
               MNIST-1D many seeds at once, He vs Xavier, with its running statistics updated
               and used for evaluation (`initjax.models.networks`, `batch_training`)
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from initjax.core.errors import ConfigError, check_choice
from initjax.measurement import probe
from initjax.nn import models
from initjax.theory.recurrent import predict_rnn
from initjax.training import batch_training, loop
from initjax.training import data as data_lib

STUDIES = ("transformer", "rnn", "resnet")
COLUMNS = ("study", "init", "layer", "step", "seed", "quantity", "value")
TRANSFORMER_INITS = ("he_normal", "xavier_normal", None)       # None: Flax's own default
RNN_INITS = ("orthogonal", "he_normal", "xavier_normal")
RESNET_INITS = ("he_normal", "xavier_normal")
DEFAULT_SEEDS = {"transformer": 64, "rnn": 64, "resnet": 8}
DEFAULT_WIDTH = {"transformer": 64, "rnn": 64, "resnet": 32}


@dataclasses.dataclass(frozen=True)
class ZooConfig:
  """One study's settings (checked on construction; fields are the flags' names)."""
  model: str = "transformer"
  num_seeds: int = 0            # 0: the study's default, DEFAULT_SEEDS
  seed: int = 0
  layers: int = 4               # transformer blocks
  steps: int = 50               # rnn time steps; resnet: training steps = 10 x this
  train_steps: int = 300
  width: int = 0                # d_model, hidden units, channels; 0: DEFAULT_WIDTH

  def __post_init__(self):
    try:
      check_choice("model", self.model, STUDIES)
    except ValueError as e:
      raise ConfigError("model", str(e)) from None
    for name in ("num_seeds", "layers", "steps", "train_steps", "width"):
      value = getattr(self, name)
      least = 0 if name in ("num_seeds", "width") else 1
      if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(name, f"must be an integer >= {least}; got {value!r}")
    if not self.num_seeds:
      object.__setattr__(self, "num_seeds", DEFAULT_SEEDS[self.model])
    if not self.width:
      object.__setattr__(self, "width", DEFAULT_WIDTH[self.model])
    if self.model == "transformer" and self.width % 4:
      raise ConfigError("width", f"must be a multiple of the 4 attention heads; got {self.width}")


# ------------------------------------------------------------------------------------------------
# The models, as their users write them.

class EncoderBlock(nn.Module):
  """A pre-LayerNorm transformer encoder block."""
  d_model: int
  heads: int = 4

  @nn.compact
  def __call__(self, x):
    h = nn.LayerNorm()(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(h, h)
    h = nn.LayerNorm()(x)
    return x + nn.Dense(self.d_model)(nn.gelu(nn.Dense(4 * self.d_model)(h)))


class Encoder(nn.Module):
  num_layers: int
  d_model: int

  @nn.compact
  def __call__(self, x):
    for _ in range(self.num_layers):
      x = EncoderBlock(self.d_model)(x)
    return nn.LayerNorm()(x)


class LastState(nn.Module):
  """nn.RNN over a tanh SimpleCell; the loss is on the last hidden state."""
  hidden: int

  @nn.compact
  def __call__(self, x):
    return nn.RNN(nn.SimpleCell(self.hidden))(x)[:, -1]


class ResNetBlock(nn.Module):
  filters: int

  @nn.compact
  def __call__(self, x, train: bool = True):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
    y = nn.relu(norm()(nn.Conv(self.filters, (3,))(x)))
    y = norm()(nn.Conv(self.filters, (3,))(y))
    return nn.relu(x + y)


class ResNet1D(nn.Module):
  stage_sizes: list
  filters: int
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = True):
    h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(
        nn.Conv(self.filters, (3,))(x[..., None])))
    for blocks in self.stage_sizes:
      for _ in range(blocks):
        h = ResNetBlock(self.filters)(h, train)
    return nn.Dense(self.num_classes)(h.mean(axis=1))


# ------------------------------------------------------------------------------------------------

def _label(init) -> str:
  return "flax_default" if init is None else init


def _layer_rows(study: str, stats: dict, inits, quantities) -> list[dict]:
  rows = []
  for c, init in enumerate(inits):
    for q in quantities:
      values = stats[q][c]                                        # (seeds, layers)
      for i, layer in enumerate(stats["layers"]):
        for s in range(values.shape[0]):
          rows.append({"study": study, "init": _label(init), "layer": layer, "step": -1,
                       "seed": s, "quantity": q, "value": float(values[s, i])})
  return rows


def _readout(out, r):
  return jnp.sum(out * r)


def transformer(config: ZooConfig) -> dict[str, Any]:
  """Per layer of `Encoder`, over config.num_seeds initializations each of He, Xavier and
  Flax's default: median log10 Var[out] and Var[dL/d out], and the gains."""
  x = jax.random.normal(jax.random.key(config.seed), (8, 16, config.width))
  # A fixed random readout: dL/d out = r does not depend on the network, so the backward
  # variances follow the layers alone (least squares on a LayerNorm output would be constant).
  r = jax.random.normal(jax.random.key(config.seed + 2), x.shape)
  stats = probe.measure(Encoder(config.layers, config.width), x,
                        key=jax.random.key(config.seed + 1), num_seeds=config.num_seeds,
                        weight_init=list(TRANSFORMER_INITS), loss=functools.partial(_readout, r=r))
  quantities = ("var_out", "var_grad", "gain_forward", "gain_backward")
  summary = {}
  for c, init in enumerate(TRANSFORMER_INITS):
    summary[_label(init)] = {
        layer: {q: float(np.median(stats[q][c][:, i])) for q in quantities}
        for i, layer in enumerate(stats["layers"])}
  return {"rows": _layer_rows("transformer", stats, TRANSFORMER_INITS, quantities),
          "summary": summary, "layers": stats["layers"], "aliases": stats["aliases"]}


def rnn(config: ZooConfig) -> dict[str, Any]:
  """Per time step of `LastState`: mean over seeds of Var[h_t] and Var[dL/dh_t], measured and
  predicted, for orthogonal, He and Xavier recurrent kernels (LeCun input kernel, inputs scaled
  to mean square 1: the constant drive the mean field assumes)."""
  steps = config.steps
  x = jax.random.normal(jax.random.key(config.seed), (32, steps, 8))
  x = x / jnp.sqrt(jnp.mean(x ** 2, axis=-1, keepdims=True))
  maps = [{"*/h/kernel": init, "*/i/kernel": "lecun_normal"} for init in RNN_INITS]
  stats = probe.measure(LastState(config.width), x, key=jax.random.key(config.seed + 1),
                        num_seeds=config.num_seeds, weight_init=maps)
  cell = stats["steps"]["SimpleCell_0"]
  rows, summary = [], {}
  for c, init in enumerate(RNN_INITS):
    sigma2_h = 2.0 if init == "he_normal" else 1.0
    theory = predict_rnn(steps=steps, sigma2_h=sigma2_h, sigma2_x=1.0)
    measured = {"var_h": np.log10(stats["var_out"][c][:, cell].mean(0)),
                "var_dl_dh": np.log10(stats["var_grad"][c][:, cell].mean(0))}
    for q in ("var_h", "var_dl_dh"):
      for t in range(steps):
        rows.append({"study": "rnn", "init": init, "layer": "SimpleCell_0", "step": t,
                     "seed": -1, "quantity": f"log10_mean_{q}", "value": float(measured[q][t])})
        rows.append({"study": "rnn", "init": init, "layer": "SimpleCell_0", "step": t,
                     "seed": -1, "quantity": f"log10_theory_{q}", "value": float(theory[q][t])})
    t = np.arange(steps - 1)        # the last step is the loss's own
    summary[init] = {
        "decades_per_step_backward": -float(np.polyfit(t, measured["var_dl_dh"][:-1], 1)[0]),
        "theory_decades_per_step_backward": -float(np.polyfit(t, theory["var_dl_dh"][:-1], 1)[0]),
        "log10_var_grad_first_over_last": float(measured["var_dl_dh"][0]
                                                - measured["var_dl_dh"][-1]),
        "theory_log10_var_grad_first_over_last": float(theory["var_dl_dh"][0]
                                                       - theory["var_dl_dh"][-1]),
        "log10_var_h_last": float(measured["var_h"][-1]),
        "theory_log10_var_h_last": float(theory["var_h"][-1]), "chi": float(theory["chi"][-1])}
  return {"rows": rows, "summary": summary}


def resnet(config: ZooConfig, data: dict | None = None) -> dict[str, Any]:
  """`ResNet1D` with BatchNorm trained on MNIST-1D, config.num_seeds networks per initializer,
  all at once: the train loss, the test metrics in eval mode (running averages) and how far the
  running statistics moved from their initial (0, 1)."""
  data = data_lib.device_arrays(data_lib.load_mnist1d()) if data is None else data
  module = ResNet1D(stage_sizes=[1, 1], filters=config.width)
  spec = loop.TrainSpec(optimizer="adam", steps=config.train_steps,
                        eval_every=max(1, config.train_steps // 4),
                        stats_every=config.train_steps, batch_size=100)
  rows, summary = [], {}
  for i, init in enumerate(RESNET_INITS):
    keys = jax.random.split(jax.random.key(config.seed + 10 * i), config.num_seeds)
    net = models.networks(module, keys, data["x_train"][:4], weight_init=init,
                          train_kwargs={"train": True}, eval_kwargs={"train": False})
    out = batch_training.run_networks(
        net.model, net.params, jax.random.split(jax.random.key(config.seed + 99),
                                                config.num_seeds),
        np.full(config.num_seeds, 1e-3), data, spec, state_B=net.state, return_final=True)
    moved = _running_statistics(out["final_state"]["batch_stats"])
    final = np.median(out["train_loss"][:, -max(1, spec.steps // 20):], axis=1)
    for s in range(config.num_seeds):
      for q, v in (("final_loss", final[s]), ("test_accuracy", out["test_accuracy"][s, -1]),
                   ("bn_mean_change", moved["mean"][s]), ("bn_var_log10", moved["var"][s])):
        rows.append({"study": "resnet", "init": init, "layer": "", "step": spec.steps,
                     "seed": s, "quantity": q, "value": float(v)})
    summary[init] = {"final_loss_median": float(np.median(final)),
                     "test_accuracy_mean": float(np.mean(out["test_accuracy"][:, -1])),
                     "test_accuracy_std": float(np.std(out["test_accuracy"][:, -1])),
                     "bn_mean_change": float(np.mean(moved["mean"])),
                     "bn_var_log10_range": [float(np.min(moved["var"])),
                                            float(np.max(moved["var"]))],
                     "diverged": int(np.sum(out["diverged_step"] >= 0))}
  return {"rows": rows, "summary": summary}


def _running_statistics(batch_stats: dict) -> dict[str, np.ndarray]:
  """Per network: the mean |running mean| and the mean |log10 running var| over every
  BatchNorm channel (both 0 at Flax's initialization)."""
  means = [np.abs(np.asarray(v["mean"])).mean(axis=1) for v in _norms(batch_stats)]
  variances = [np.abs(np.log10(np.asarray(v["var"]))).mean(axis=1) for v in _norms(batch_stats)]
  return {"mean": np.mean(means, axis=0), "var": np.mean(variances, axis=0)}


def _norms(tree: dict) -> list[dict]:
  if "mean" in tree and "var" in tree:
    return [tree]
  return [n for v in tree.values() if isinstance(v, dict) for n in _norms(v)]


RUNS: dict[str, Callable[[ZooConfig], dict]] = {"transformer": transformer, "rnn": rnn,
                                                 "resnet": resnet}


def run(config: ZooConfig) -> dict[str, Any]:
  return RUNS[config.model](config)


def table(config: ZooConfig, result: dict) -> str:
  """The study's findings as a printed table."""
  s = result["summary"]
  if config.model == "transformer":
    inits = list(s)
    head = f"{'layer':26s}" + "".join(f"{i:>15s}" for i in inits)
    lines = ["median log10 Var[out] / log10 Var[dL/d out] over networks", head]
    for layer in result["layers"]:
      cells = "".join(f"  {math.log10(s[i][layer]['var_out']):+6.2f}/"
                      f"{math.log10(s[i][layer]['var_grad']):+6.2f}" for i in inits)
      short = layer.replace("EncoderBlock_", "block").replace(
          "MultiHeadDotProductAttention_0", "attention")
      lines.append(f"{short:26s}{cells}")
    return "\n".join(lines)
  if config.model == "rnn":
    lines = [f"{'recurrent init':15s} {'decades/step back':>18s} {'theory':>8s} "
             f"{'log10 first/last':>17s} {'theory':>8s} {'chi':>6s}"]
    for init, v in s.items():
      lines.append(f"{init:15s} {v['decades_per_step_backward']:18.3f} "
                   f"{v['theory_decades_per_step_backward']:8.3f} "
                   f"{v['log10_var_grad_first_over_last']:17.2f} "
                   f"{v['theory_log10_var_grad_first_over_last']:8.2f} {v['chi']:6.3f}")
    return "\n".join(lines)
  lines = [f"{'init':14s} {'final loss':>10s} {'test acc':>16s} {'|mean| BN':>10s} "
           f"{'|log10 var| BN':>16s} {'diverged':>8s}"]
  for init, v in s.items():
    lo, hi = v["bn_var_log10_range"]
    lines.append(f"{init:14s} {v['final_loss_median']:10.3f} {v['test_accuracy_mean']:8.3f} +- "
                 f"{v['test_accuracy_std']:.3f} {v['bn_mean_change']:10.3f} "
                 f"{lo:7.2f}..{hi:5.2f} {v['diverged']:8d}")
  return "\n".join(lines)


def plot(config: ZooConfig, result: dict):
  """The study's figure (a matplotlib Figure; the caller saves it)."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=(11, 4.2))
  s = result["summary"]
  if config.model == "transformer":
    layers = result["layers"]
    for k, (q, title) in enumerate((("var_out", "forward: Var[out]"),
                                    ("var_grad", "backward: Var[dL/d out]"))):
      ax = fig.add_subplot(1, 2, k + 1)
      for init in s:
        ax.plot([math.log10(s[init][layer][q]) for layer in layers], marker="o", label=init)
      ax.set_xticks(range(len(layers)))
      ax.set_xticklabels([layer.replace("EncoderBlock_", "B").replace(
          "MultiHeadDotProductAttention_0/", "") for layer in layers], rotation=90, fontsize=6)
      ax.set_ylabel("log10 (median over networks)")
      ax.set_title(title)
      ax.legend(fontsize=7)
  elif config.model == "rnn":
    ax = fig.add_subplot(1, 1, 1)
    rows = [r for r in result["rows"] if r["quantity"].endswith("var_dl_dh")]
    for init in s:
      for kind, style in (("mean", "-"), ("theory", "--")):
        pts = sorted((r["step"], r["value"]) for r in rows
                     if r["init"] == init and r["quantity"] == f"log10_{kind}_var_dl_dh")
        ax.plot(*zip(*pts), style, label=f"{init} ({'measured' if kind == 'mean' else kind})")
    ax.set_xlabel("time step t")
    ax.set_ylabel("log10 Var[dL/dh_t] (mean over networks)")
    ax.set_title("nn.RNN over a tanh SimpleCell: gradients through time")
    ax.legend(fontsize=7)
  else:
    ax = fig.add_subplot(1, 2, 1)
    for init in s:
      acc = [r["value"] for r in result["rows"] if r["init"] == init
             and r["quantity"] == "test_accuracy"]
      ax.hist(acc, alpha=0.6, label=init)
    ax.set_xlabel("test accuracy (eval mode: running statistics)")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    for init in s:
      moved = [r["value"] for r in result["rows"] if r["init"] == init
               and r["quantity"] == "bn_var_log10"]
      ax.hist(moved, alpha=0.6, label=init)
    ax.set_xlabel("mean |log10 running var| after training (0 at init)")
    ax.legend(fontsize=7)
  fig.tight_layout()
  return fig
