"""Learning-rate transfer (Yang et al. 2022, Tensor Programs V, Fig. 1): the training loss after
a fixed budget against the learning rate, one curve per width, per parametrization; under muP
the best learning rate found on a narrow network stays the best on a wide one, under the
standard parametrization it moves.

The training is a sweep (`initjax.studies.sweep`: widths x learning rates x parametrizations,
resumable and splittable into batch tasks); `config` builds its `SweepConfig`, `summary` reads
the finished points: per parametrization and width, each learning rate's final training loss
(`sweep.summary.final_train_loss`, the mean minibatch loss over the last 5% of the steps;
the median over the seeds that did not diverge; +inf where half of the seeds or more diverged),
the best learning rate, and the spread of the best learning rates over the widths in decades
(log10 max / min).

`run_model` does the same for any model given as a factory `width -> CoordModel` (a Flax module
through `coord_check.flax`): all seeds, learning rates and parametrizations of a width are one
compiled program (the learning rate is a value), trained as the coordinate check trains.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initjax.core import _jax_internals
from initjax.studies import coord_check
from initjax.studies.sweep.config import SweepConfig
from initjax.studies.sweep.group import PointResult
from initjax.training import parametrization as pz


def config(widths: Sequence[int], learning_rates: Sequence[float], *,
           parametrizations: Sequence[str] = ("sp", "mup"), optimizer: str = "adam",
           depth: int = 3, steps: int = 500, num_seeds: int = 2, base_width: int = 0,
           init: str = "he_normal", activation: str = "relu", seed: int = 0,
           batch_size: int = 100, data_dir: str = "") -> SweepConfig:
  """The sweep of a learning-rate transfer experiment (test metrics and per-layer statistics
  only at the start and the end)."""
  return SweepConfig(inits=(init,), depths=(depth,), widths=tuple(widths),
                     activations=(activation,), optimizers=(optimizer,),
                     learning_rates=((optimizer, tuple(float(lr) for lr in learning_rates)),),
                     num_seeds=num_seeds, steps=steps, batch_size=batch_size, seed=seed,
                     eval_every=steps, stats_every=steps, log_every=max(1, steps // 50),
                     parametrizations=tuple(parametrizations), base_width=base_width,
                     data_dir=data_dir)


def _final_loss(result: PointResult) -> float:
  """The point's median final training loss over its seeds (from its summary, which the point
  files keep whole), +inf where half of the seeds or more diverged."""
  s = result.summary
  loss = s["median_final_train_loss"]
  if 2 * s["num_diverged"] >= s["num_seeds"] or not math.isfinite(loss):
    return math.inf
  return float(loss)


def summary(sweep_config: SweepConfig, results: dict[str, PointResult]) -> dict[str, Any]:
  """{"parametrizations": {name: {"widths": {width: {"learning_rates", "final_train_loss",
  "best_learning_rate", "best_final_train_loss"}}, "best_learning_rates": [per width],
  "best_lr_spread_decades"}}, "config", "definitions"}."""
  by: dict[str, dict[int, dict[float, float]]] = {}
  for r in results.values():
    p = r.point
    by.setdefault(p.parametrization, {}).setdefault(p.width, {})[p.learning_rate] = \
        _final_loss(r)
  out = _curves_summary(by, sweep_config.parametrizations)
  return {"config": sweep_config.to_dict(), "base_width": sweep_config.base(),
          "parametrizations": out,
          "definitions": {
              "final_train_loss": "median over the seeds that did not diverge of the mean "
                                  "minibatch training loss over the last 5% of the steps; "
                                  "null: half of the seeds or more diverged",
              "best_learning_rate": "the grid's learning rate of the lowest final_train_loss "
                                    "at that width",
              "best_at_grid_edge": "the best learning rate is the grid's smallest or largest: "
                                   "the true optimum may lie outside the grid",
              "best_lr_spread_decades": "log10(max / min) of the best learning rates over the "
                                        "widths: 0 = the same learning rate is best at every "
                                        "width"}}


def plot(s: dict[str, Any]):
  """One panel per parametrization: final training loss against learning rate (log axis), one
  curve per width, the best learning rate of each width marked."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  names = list(s["parametrizations"])
  fig = Figure(figsize=(4.2 * len(names), 3.4))
  axes = fig.subplots(1, len(names), squeeze=False, sharey=True)[0]
  for ax, name in zip(axes, names):
    entry = s["parametrizations"][name]
    for i, (width, w) in enumerate(entry["widths"].items()):
      loss = [np.nan if x is None else x for x in w["final_train_loss"]]
      ax.semilogx(w["learning_rates"], loss, "o-", ms=3, color=f"C{i % 10}",
                  label=f"width {width}")
      if w["best_final_train_loss"] is not None:
        ax.plot([w["best_learning_rate"]], [w["best_final_train_loss"]], "*", ms=10,
                color=f"C{i % 10}")
    spread = entry["best_lr_spread_decades"]
    ax.set_title(f"{name}: best lr spread {spread:.2f} decades" if spread is not None
                 else name, fontsize=9)
    ax.set_xlabel("learning rate (at the base width)", fontsize=8)
  axes[0].set_ylabel("final training loss", fontsize=8)
  axes[0].legend(fontsize=6)
  fig.tight_layout()
  return fig


def _curves_summary(by: dict[str, dict[int, dict[float, float]]],
                    names: Sequence[str]) -> dict[str, Any]:
  """Per parametrization: each width's loss curve over the learning rates, its best rate, and
  the best rates' spread over the widths."""
  out = {}
  for name in names:
    per_width = by.get(name, {})
    widths = {}
    for width in sorted(per_width):
      curve = per_width[width]
      lrs = sorted(curve)
      losses = [curve[lr] for lr in lrs]
      best = int(np.argmin(losses))
      widths[width] = {"learning_rates": lrs,
                       "final_train_loss": [None if math.isinf(x) else x for x in losses],
                       "best_learning_rate": lrs[best],
                       "best_final_train_loss": None if math.isinf(losses[best])
                       else losses[best],
                       "best_at_grid_edge": best in (0, len(lrs) - 1)}
    bests = [w["best_learning_rate"] for w in widths.values()]
    out[name] = {"widths": widths, "best_learning_rates": bests,
                 "best_lr_spread_decades": float(np.log10(max(bests) / min(bests)))
                 if bests else None}
  return out


def final_loss(losses_S: np.ndarray) -> float:
  """The mean minibatch loss over the last 5% of the steps (at least one) of each seed, the
  median over the seeds whose losses stayed finite; +inf where half of them or more did not."""
  losses_S = np.asarray(losses_S, np.float64)
  tail = max(1, int(round(0.05 * losses_S.shape[-1])))
  finite = np.all(np.isfinite(losses_S), axis=-1)
  if 2 * int((~finite).sum()) >= losses_S.shape[0]:
    return math.inf
  return float(np.median(losses_S[finite, -tail:].mean(axis=-1)))


def run_model(factory: Callable[[int], coord_check.CoordModel], data: dict[str, Any], *,
              widths: Sequence[int], learning_rates: Sequence[float],
              parametrizations: Sequence[str] = ("sp", "mup"), optimizer: str = "adam",
              steps: int = 200, num_seeds: int = 2, batch_size: int = 100,
              base_width: int = 0, seed: int = 0,
              overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
  """Learning-rate transfer of any model: `factory(width)` at every width, trained `steps`
  steps at every learning rate under every parametrization, `num_seeds` seeds each.

  Returns {"parametrizations": {name: {"widths": {width: {"learning_rates",
  "final_train_loss", "best_learning_rate", "best_final_train_loss", "best_at_grid_edge"}},
  "best_learning_rates", "best_lr_spread_decades"}}, "losses": {(width, parametrization):
  (learning rates, seeds, steps) minibatch losses}, "base_width", "kinds"}, the layout of
  `summary`.

  Raises:
    ConfigError (as `coord_check.CoordCheckConfig` does) for fewer than two widths, an unknown
    parametrization or optimizer; ValueError for a factory whose layers do not change with
    width; ValueError for an empty or non-positive learning-rate list.
  """
  lrs = [float(lr) for lr in learning_rates]
  if not lrs or not all(math.isfinite(lr) and lr > 0 for lr in lrs):
    raise ValueError(f"learning_rates must be finite numbers > 0, at least one; got {lrs}")
  cfg = coord_check.CoordCheckConfig(
      widths=tuple(widths), parametrizations=tuple(parametrizations), optimizer=optimizer,
      learning_rate=lrs[0], steps=steps, num_seeds=num_seeds, batch_size=batch_size,
      base_width=base_width, seed=seed)
  x_train, y_train = jnp.asarray(data["x_train"]), jnp.asarray(data["y_train"])
  x_stats = x_train[:8]
  shapes = [jax.eval_shape(factory(w).init, jax.random.key(0)) for w in cfg.widths[:2]]
  kinds = pz.classify(*shapes, overrides=overrides)
  kinds_named = pz.kinds_by_name(kinds)
  keys_S = jax.random.split(jax.random.key(cfg.seed), cfg.num_seeds)
  lrs_L = jnp.asarray(lrs, x_train.dtype)
  by: dict[str, dict[int, dict[float, float]]] = {name: {} for name in cfg.parametrizations}
  losses = {}
  for width in cfg.widths:
    model = factory(width)
    coord_check._check_layers(model, kinds_named)
    plans = [pz.plan(p, cfg.optimizer, kinds, width, cfg.base)
             for p in cfg.parametrizations]
    stack = lambda field: jax.tree.map(lambda *v: jnp.asarray(v, x_train.dtype),
                                       *[getattr(p, field) for p in plans])
    one = functools.partial(coord_check.train_and_record, model=model, optimizer=cfg.optimizer,
                            steps=cfg.steps, batch_size=cfg.batch_size, x_train=x_train,
                            y_train=y_train, x_stats=x_stats)
    loss_only = lambda *a: one(*a)[1]
    over_seeds = jax.vmap(loss_only, in_axes=(0, None, None, None, None))
    over_lrs = jax.vmap(over_seeds, in_axes=(None, None, None, None, 0))
    over_plans = jax.vmap(over_lrs, in_axes=(None, 0, 0, 0, None))
    program = jax.jit(lambda keys, *a: over_plans(jax.vmap(model.init)(keys), *a))
    args = (keys_S, stack("init_scale"), stack("multiplier"), stack("lr_scale"), lrs_L)
    with _jax_internals.unrolled_threefry_on_cpu():
      compiled = program.lower(*args).compile()
    loss_PxLxSxT = np.asarray(jax.device_get(compiled(*args)))
    for i, name in enumerate(cfg.parametrizations):
      losses[(width, name)] = loss_PxLxSxT[i]
      by[name][width] = {lr: final_loss(loss_PxLxSxT[i, j]) for j, lr in enumerate(lrs)}
  return {"parametrizations": _curves_summary(by, cfg.parametrizations), "losses": losses,
          "base_width": cfg.base, "kinds": kinds_named}
