"""The coordinate check (Yang et al. 2022, Tensor Programs V; `mup.coord_check`): does every
layer's activation stay of order one as the network trains, at every width?

For a list of widths and parametrizations (`initjax.training.parametrization`), `run` trains a
few steps of many seeds of a model built by a factory `width -> CoordModel` and records, at
every step s = 0..S (the parameters after s updates) and for every layer, on a fixed batch:

  l1        mean |x| over the batch and the layer's units (mup's "l1")
  std       the standard deviation of x
  delta_l1  mean |x_s - x_0|: the size of what training has changed so far

All seeds and parametrizations of one width are one compiled program, their initialization
included (vmapped: they differ only in values); widths are one program each. `slopes` fits, per
parametrization, layer kind, step and statistic, the slope of ln(size) against ln(width): under
a parametrization that keeps every layer's update of order one (muP) it stays near 0 at every
step; under the standard one (He/Xavier and one learning rate) the hidden layers' grows towards
1 after the first step (an update of order one to each of n inputs' weights) and the output's
beyond.

Factories: `mlp(...)` (initjax's MLP: layers f_0 (input), f_1..f_{K-1} (hidden), out
(output)), `flax(make, x)` (a linen module per width; every submodule with a kernel is a layer,
its output captured with `capture_intermediates`), or a `CoordModel` written by hand.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from initjax.core import _jax_internals
from initjax.core.errors import ConfigError
from initjax.nn.networks import init_mlp, trace_mlp
from initjax.nn.redraw import path_name
from initjax.training import parametrization as pz
from initjax.training.optimizers import check_optimizer, get_optimizer

COLUMNS = ("width", "parametrization", "layer", "kind", "step", "seed", "statistic", "value")
STATISTICS = ("l1", "std", "delta_l1")


@dataclasses.dataclass(frozen=True)
class CoordModel:
  """One width of a model, as pure functions.

  Attributes:
    init: `key -> params`, the standard (SP) initialization at this width.
    apply: `(params, x) -> logits`.
    activations: `(params, x) -> {layer name: array}`, every layer's output.
    layer_params: {layer name: the path name (`initjax.nn.redraw.path_name`) of the parameter
      whose kind is the layer's kind, its kernel}.
  """
  init: Callable[[jax.Array], Any]
  apply: Callable[[Any, jax.Array], jax.Array]
  activations: Callable[[Any, jax.Array], dict[str, jax.Array]]
  layer_params: Mapping[str, str]


def mlp(input_dim: int, depth: int, output_dim: int, activation: str = "relu",
        weight_init: Any = "he_normal") -> Callable[[int], CoordModel]:
  """initjax's MLP with `depth` hidden layers, as a factory `width -> CoordModel`. Layers: f_0
  (the input layer's output), f_1..f_{K-1} (hidden layers' outputs, pre-activations) and out."""

  def factory(width: int) -> CoordModel:
    def activations(params, x):
      trace = trace_mlp(params, x, activation)
      out = {f"f_{k}": trace["f"][k] for k in range(depth)}
      out["out"] = trace["f_out"]
      return out

    layers = {"f_0": "omega_0", **{f"f_{k}": "omega_hidden" for k in range(1, depth)},
              "out": "omega_out"}
    return CoordModel(
        init=functools.partial(init_mlp, input_dim=input_dim, width=width, depth=depth,
                               output_dim=output_dim, weight_init=weight_init),
        apply=lambda p, x: trace_mlp(p, x, activation)["f_out"], activations=activations,
        layer_params=layers)

  return factory


def _flatten_intermediates(tree: Mapping, prefix: str = "") -> dict[str, jax.Array]:
  out = {}
  for name, value in tree.items():
    if name == "__call__":
      if prefix:
        out[prefix] = value[0]
    else:
      out.update(_flatten_intermediates(value, f"{prefix}/{name}" if prefix else name))
  return out


def flax(make: Callable[[int], Any], x_example: jax.Array) -> Callable[[int], CoordModel]:
  """A Flax linen model per width (`make(width) -> nn.Module`, its "params" collection) as a
  factory `width -> CoordModel`: every submodule that holds a kernel is a layer, named by its
  path ("Dense_0"), its output captured with `capture_intermediates`."""

  def factory(width: int) -> CoordModel:
    module = make(width)
    shapes = jax.eval_shape(lambda k: module.init(k, x_example)["params"], jax.random.key(0))
    names = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]]
    layer_params = {n.rpartition("/")[0]: n for n in names
                    if n.rpartition("/")[2] in ("kernel", "w", "weight")}

    def activations(params, x):
      _, state = module.apply({"params": params}, x, capture_intermediates=True,
                              mutable=["intermediates"])
      found = _flatten_intermediates(state["intermediates"])
      return {name: found[name] for name in layer_params}

    return CoordModel(init=lambda k: module.init(k, x_example)["params"],
                      apply=lambda p, x: module.apply({"params": p}, x),
                      activations=activations, layer_params=layer_params)

  return factory


@dataclasses.dataclass(frozen=True)
class CoordCheckConfig:
  """A coordinate check's settings (each field named as its flag)."""
  widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
  parametrizations: tuple[str, ...] = ("sp", "mup")
  optimizer: str = "adam"
  learning_rate: float = 1e-2
  steps: int = 4
  num_seeds: int = 4
  batch_size: int = 100
  stats_batch_size: int = 256
  base_width: int = 0          # 0: the narrowest width
  depth: int = 3
  activation: str = "relu"
  seed: int = 0

  def __post_init__(self):
    for field in ("widths", "parametrizations"):
      object.__setattr__(self, field, tuple(getattr(self, field)))
    if len(set(self.widths)) < 2:
      raise ConfigError("widths", f"needs at least two different widths; got "
                        f"{list(self.widths)}")
    if any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in self.widths):
      raise ConfigError("widths", f"must be integers >= 1; got {list(self.widths)}")
    object.__setattr__(self, "widths", tuple(sorted(set(self.widths))))
    if not self.parametrizations:
      raise ConfigError("parametrizations", "needs at least one of: "
                        + ", ".join(pz.parametrization_names()))
    for p in self.parametrizations:
      if p not in pz.PARAMETRIZATIONS:
        raise ConfigError("parametrizations", f"unknown value {p!r}; allowed: "
                          + ", ".join(pz.parametrization_names()))
    try:
      check_optimizer(self.optimizer)
      pz.optimizer_family(self.optimizer)
    except ValueError as e:
      raise ConfigError("optimizer", str(e)) from None
    if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
      raise ConfigError("learning_rate", f"must be a finite number > 0; got "
                        f"{self.learning_rate!r}")
    for field in ("steps", "num_seeds", "batch_size", "stats_batch_size", "depth"):
      v = getattr(self, field)
      if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ConfigError(field, f"must be an integer >= 1; got {v!r}")
    if not isinstance(self.base_width, int) or self.base_width < 0:
      raise ConfigError("base_width", f"must be an integer >= 1 (0: the narrowest width); "
                        f"got {self.base_width!r}")

  @property
  def base(self) -> int:
    return self.base_width or self.widths[0]


def _stats(acts: dict, acts0: dict) -> dict[str, jax.Array]:
  out = {}
  for name, a in acts.items():
    out[f"{name}\tl1"] = jnp.mean(jnp.abs(a))
    out[f"{name}\tstd"] = jnp.std(a)
    out[f"{name}\tdelta_l1"] = jnp.mean(jnp.abs(a - acts0[name]))
  return out


def train_and_record(params, init_scale, multiplier, lr_scale, learning_rate, *,
                     model: CoordModel, optimizer: str, steps: int, batch_size: int,
                     x_train, y_train, x_stats) -> tuple[dict[str, jax.Array], jax.Array]:
  """One network: SP params rescaled by the plan, `steps` updates on successive minibatches;
  returns ({"layer\\tstatistic": (S+1,)}, the minibatch losses (S,))."""
  params = jax.tree.map(lambda x, s: x * s, params, init_scale)
  opt = optax.chain(get_optimizer(optimizer, learning_rate), pz.scale_updates(lr_scale))
  eff = lambda p: jax.tree.map(lambda x, s: x * s, p, multiplier)
  acts0 = model.activations(eff(params), x_stats)
  n_batches = x_train.shape[0] // batch_size

  def loss_fn(p, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model.apply(eff(p), x), y).mean()

  def step(carry, t):
    p, s = carry
    rec = _stats(model.activations(eff(p), x_stats), acts0)
    start = (t % n_batches) * batch_size
    x = jax.lax.dynamic_slice_in_dim(x_train, start, batch_size)
    y = jax.lax.dynamic_slice_in_dim(y_train, start, batch_size)
    loss, g = jax.value_and_grad(loss_fn)(p, x, y)
    u, s = opt.update(g, s, p)
    return (optax.apply_updates(p, u), s), (rec, loss)

  (p, _), (recs, losses) = jax.lax.scan(step, (params, opt.init(params)),
                                        jnp.arange(steps))
  last = _stats(model.activations(eff(p), x_stats), acts0)
  return {k: jnp.concatenate([v, last[k][None]]) for k, v in recs.items()}, losses


def _check_layers(model: CoordModel, kinds_named: dict[str, str]) -> dict[str, str]:
  out = {}
  for layer, param in model.layer_params.items():
    if param not in kinds_named:
      raise ValueError(f"layer {layer!r} names parameter {param!r}, which the model does not "
                       f"have; its parameters: {', '.join(kinds_named)}")
    out[layer] = kinds_named[param]
  return out


def run(config: CoordCheckConfig, data: dict[str, Any],
        factory: Callable[[int], CoordModel] | None = None,
        overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
  """Trains `num_seeds` networks per (width, parametrization) for `steps` steps and records
  every layer's activation size at every step.

  Args:
    config: the settings.
    data: x_train, y_train (classification), as `initjax.data.load_mnist1d` returns.
    factory: `width -> CoordModel`; default initjax's MLP of `config.depth` hidden layers.
    overrides: {parameter path pattern: kind}, `parametrization.classify`'s overrides.

  Returns:
    {"rows": tidy rows (COLUMNS), "kinds": {parameter path: kind}, "layer_kinds": {layer:
    kind}, "records": {(width, parametrization): {"layer\\tstatistic": (S_seeds, S+1)}},
    "losses": {(width, parametrization): (seeds, S)}, "base_width"}.

  Raises:
    ValueError: the factory's layers do not change with width, and the other errors of
      `parametrization.classify` and `plan`.
  """
  x_train, y_train = jnp.asarray(data["x_train"]), jnp.asarray(data["y_train"])
  if factory is None:
    factory = mlp(int(x_train.shape[1]), config.depth, int(data.get("output_dim", 10)),
                  config.activation)
  x_stats = x_train[:config.stats_batch_size]
  shapes = [jax.eval_shape(factory(w).init, jax.random.key(0)) for w in config.widths[:2]]
  kinds = pz.classify(*shapes, overrides=overrides)
  kinds_named = pz.kinds_by_name(kinds)
  keys_S = jax.random.split(jax.random.key(config.seed), config.num_seeds)
  records, losses, layer_kinds = {}, {}, None
  for width in config.widths:
    model = factory(width)
    layer_kinds_w = _check_layers(model, kinds_named)
    if layer_kinds is None:
      layer_kinds = layer_kinds_w
    plans = [pz.plan(p, config.optimizer, kinds, width, config.base)
             for p in config.parametrizations]
    stack = lambda field: jax.tree.map(lambda *v: jnp.asarray(v, x_train.dtype),
                                       *[getattr(p, field) for p in plans])
    one = functools.partial(train_and_record, model=model, optimizer=config.optimizer,
                            steps=config.steps, batch_size=config.batch_size, x_train=x_train,
                            y_train=y_train, x_stats=x_stats)
    over_seeds = jax.vmap(one, in_axes=(0, None, None, None, None))
    over_plans = jax.vmap(over_seeds, in_axes=(None, 0, 0, 0, None))
    program = jax.jit(lambda keys, *a: over_plans(jax.vmap(model.init)(keys), *a))
    args = (keys_S, stack("init_scale"), stack("multiplier"), stack("lr_scale"),
            config.learning_rate)
    with _jax_internals.unrolled_threefry_on_cpu():   # compiles in ~1/8 the time on a CPU
      compiled = program.lower(*args).compile()
    recs, loss = jax.device_get(compiled(*args))
    for i, name in enumerate(config.parametrizations):
      records[(width, name)] = {k: np.asarray(v[i]) for k, v in recs.items()}
      losses[(width, name)] = np.asarray(loss[i])
  return {"rows": rows(records, layer_kinds), "kinds": kinds_named, "layer_kinds": layer_kinds,
          "records": records, "losses": losses, "base_width": config.base,
          "widths": list(config.widths), "parametrizations": list(config.parametrizations),
          "steps": config.steps}


def rows(records: dict, layer_kinds: dict[str, str]) -> list[dict[str, Any]]:
  """The tidy rows: one per width x parametrization x layer x step x seed x statistic."""
  out = []
  for (width, name), recs in records.items():
    for key, v_SxT in recs.items():
      layer, statistic = key.split("\t")
      for seed in range(v_SxT.shape[0]):
        for step in range(v_SxT.shape[1]):
          out.append({"width": width, "parametrization": name, "layer": layer,
                      "kind": layer_kinds[layer], "step": step, "seed": seed,
                      "statistic": statistic, "value": float(v_SxT[seed, step])})
  return out


def _fit(log_w: np.ndarray, values: np.ndarray) -> float | None:
  if not np.all(np.isfinite(values)) or np.any(values <= 0):
    return None
  return float(np.polyfit(log_w, np.log(values), 1)[0])


def slopes(result: dict, statistic: str = "l1") -> dict[str, dict[str, dict[str, Any]]]:
  """{parametrization: {kind: {"slope": [per step], "slope_se": [per step], "layers":
  {layer: [per step]}}}}: least-squares slopes of ln(size) against ln(width).

  A layer's slope is fitted to the mean over seeds at each width; a kind's slope is the mean of
  its layers' slopes; `slope_se` is the standard error of the kind's slope over seeds (each
  seed's slope of its own sizes, averaged over the kind's layers; std over seeds / sqrt(seeds)).
  None where a size is not finite and > 0 (a diverged network).
  """
  widths = np.array(result["widths"], float)
  log_w = np.log(widths)
  out: dict[str, dict[str, dict[str, Any]]] = {}
  for name in result["parametrizations"]:
    by_kind: dict[str, dict[str, Any]] = {}
    for layer, kind in result["layer_kinds"].items():
      v_WxSxT = np.stack([result["records"][(int(w), name)][f"{layer}\t{statistic}"]
                          for w in widths])
      steps = v_WxSxT.shape[2]
      entry = by_kind.setdefault(kind, {"layers": {}, "_per_seed": []})
      entry["layers"][layer] = [_fit(log_w, v_WxSxT[:, :, t].mean(axis=1)) for t in
                                range(steps)]
      entry["_per_seed"].append([[_fit(log_w, v_WxSxT[:, s, t]) for t in range(steps)]
                                 for s in range(v_WxSxT.shape[1])])
    for kind, entry in by_kind.items():
      per_layer = list(entry["layers"].values())
      per_seed = entry.pop("_per_seed")       # layers x seeds x steps
      entry["slope"], entry["slope_se"] = [], []
      for t in range(len(per_layer[0])):
        layer_t = [s[t] for s in per_layer]
        entry["slope"].append(None if None in layer_t else float(np.mean(layer_t)))
        seed_t = [[per_seed[i][s][t] for i in range(len(per_seed))]
                  for s in range(len(per_seed[0]))]
        if any(None in x for x in seed_t) or len(seed_t) < 2:
          entry["slope_se"].append(None)
        else:
          means = np.array([np.mean(x) for x in seed_t])
          entry["slope_se"].append(float(means.std(ddof=1) / math.sqrt(len(means))))
    out[name] = by_kind
  return out


def summary(config: CoordCheckConfig, result: dict) -> dict[str, Any]:
  """The full config, the classification, the slopes per statistic and the final losses."""
  return {
      "config": dataclasses.asdict(config), "base_width": result["base_width"],
      "parameter_kinds": result["kinds"], "layer_kinds": result["layer_kinds"],
      "slopes": {s: slopes(result, s) for s in STATISTICS},
      "num_nonfinite": int(sum(int((~np.isfinite(v)).sum()) for r in result["records"].values()
                               for v in r.values())),
      "final_train_loss_mean": {f"{w} {p}": float(np.mean(v[:, -1]))
                                for (w, p), v in result["losses"].items()},
      "definitions": {
          "slope": "least-squares slope of ln(activation size) against ln(width) per recorded "
                   "step s = 0..steps (the parameters after s updates), the mean over the "
                   "kind's layers; 0 = the same size at every width, 1 = proportional to width",
          "slope_se": "standard error of that slope over seeds",
          "l1": "mean |x| over the fixed batch and the layer's units (mup's coord check)",
          "delta_l1": "mean |x_s - x_0|: what training has changed in the layer's output"}}


def plot(result: dict, statistic: str = "l1", max_panels: int = 5):
  """Activation size against width on log axes: one row per parametrization, one panel per
  step (the first `max_panels` steps), one line per layer (mean over seeds)."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  names, widths = result["parametrizations"], result["widths"]
  steps = list(range(min(result["steps"] + 1, max_panels)))
  fig = Figure(figsize=(2.6 * len(steps), 2.4 * len(names)))
  axes = fig.subplots(len(names), len(steps), squeeze=False, sharey="row")
  for row, name in zip(axes, names):
    for ax, t in zip(row, steps):
      for i, layer in enumerate(result["layer_kinds"]):
        v = [np.mean(result["records"][(w, name)][f"{layer}\t{statistic}"][:, t])
             for w in widths]
        ax.loglog(widths, v, "o-", ms=3, color=f"C{i % 10}", label=layer)
      ax.set_title(f"{name}, step {t}", fontsize=9)
      ax.set_xlabel("width", fontsize=8)
    row[0].set_ylabel(f"{statistic} of the layer's output", fontsize=8)
    row[0].legend(fontsize=6)
  fig.tight_layout()
  return fig
