"""The settings of a training sweep, checked once, on construction."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from initjax.core.errors import ConfigError
from initjax.nn import normalization
from initjax.nn.activations import activation_names
from initjax.nn.initializers import get_initializer, initializer_names
from initjax.theory import architectures
from initjax.training import data as data_lib
from initjax.training.optimizers import DEFAULT_LEARNING_RATES, optimizer_names
from initjax.training.parametrization import parametrization_names

SIGMA2_W_PREFIX = "sigma2_w="


def fan_in_variance(init: str) -> float | None:
  """The per-fan-in weight variance of an init spec "sigma2_w=<value>" (a plain normal with
  Var[W] = value / fan_in, the mean-field convention), or None for a registered name."""
  if not init.startswith(SIGMA2_W_PREFIX):
    return None
  try:
    value = float(init[len(SIGMA2_W_PREFIX):])
  except ValueError:
    return float("nan")
  return value


def _value(text: str):
  for convert in (int, float):
    try:
      return convert(text)
    except ValueError:
      pass
  return text


def init_arguments(init: str) -> tuple[str, dict[str, Any]] | None:
  """(registered name, keyword arguments) of an init spec "NAME" or "NAME:KEY=VALUE[:...]"
  (`initjax.initializers.get_initializer(NAME, KEY=VALUE)`, e.g. "orthogonal:gain=1.09", the
  critical orthogonal init of tanh at sigma2_b = 1e-3: gain^2 = sigma2_w); None for
  "sigma2_w=<value>". Values are integers, numbers or words, as written."""
  if init.startswith(SIGMA2_W_PREFIX):
    return None
  name, *pairs = init.split(":")
  kwargs = {}
  for pair in pairs:
    key, sep, value = pair.partition("=")
    if not sep or not key:
      raise ValueError(f"{init!r}: expected NAME:KEY=VALUE, got {pair!r}")
    kwargs[key] = _value(value)
  return name, kwargs


def _check_named_init(init: str) -> None:
  """ConfigError("inits", ...) unless `init` is NAME or NAME:KEY=VALUE of a registered
  initializer that accepts those arguments."""
  try:
    name, kwargs = init_arguments(init)
  except ValueError as e:
    raise ConfigError("inits", str(e)) from None
  if name not in initializer_names():
    raise ConfigError("inits", f"unknown value {init!r}; allowed: "
                      f"{', '.join(initializer_names())} (NAME or NAME:KEY=VALUE), or "
                      "sigma2_w=<value>")
  try:
    get_initializer(name, **kwargs)
  except (TypeError, ValueError) as e:
    raise ConfigError("inits", f"{init!r}: {e}") from None


MAX_SEED = 2 ** 32 - 1  # jax.random.PRNGKey keeps 32 bits: seed 2**32 would repeat seed 0


def _check_names(field: str, values, allowed) -> None:
  if not values:
    raise ConfigError(field, f"needs at least one of: {', '.join(allowed)}")
  for v in values:
    if v not in allowed:
      raise ConfigError(field, f"unknown value {v!r}; allowed: {', '.join(allowed)}")


def _check_unique(field: str, values) -> None:
  """A value listed twice would train the same grid point twice."""
  seen = set()
  for v in values:
    if v in seen:
      raise ConfigError(field, f"{v!r} is listed twice; list each value once")
    seen.add(v)


def _check_int(field: str, value: Any, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ConfigError(field, f"must be an integer >= {minimum}; got {value!r}")


def _check_learning_rate(lr: Any) -> None:
  if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
    raise ConfigError("learning_rates", f"learning rates must be finite numbers > 0; got {lr}")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """Every setting of a sweep; the entry point's flags, one to one.

  learning_rates: ((optimizer, (lr, ...)), ...); an optimizer missing from it uses
  `initjax.optimizers.DEFAULT_LEARNING_RATES` (momentum 0.01, adam 0.001, ...).
  inits: registered initializer names, NAME:KEY=VALUE (its keyword arguments, e.g.
  "orthogonal:gain=1.09"), or "sigma2_w=<value>": a plain normal of variance value / fan_in
  (the mean-field sigma_w^2, as `experiments.phase_diagram` uses).
  init_learning_rates: ((init, optimizer, lr), ...); an init listed for an optimizer trains at
  that learning rate only, instead of at every rate of `learning_rates` (the phase diagram's
  learning rate chosen per sigma2_w).
  archs: `initjax.architectures` names; branch_scale, kernel_size and padding are the residual
  MLP's and the CNN's options. recurrent_inits: the recurrent kernels' initializers of the
  recurrent architectures (rnn, lstm, gru), one more grid axis for them (empty: orthogonal);
  their depth is the number of time steps, each example's values read as depth steps.
  bias_variance: biases drawn from N(0, bias_variance) (0: zeros).
  norms: normalizations of the hidden pre-activations (`initjax.nn.normalization.NORMS`), a grid
  axis; every architecture listed must have every norm listed.

  Raises:
    ConfigError(field, message listing what is allowed) on construction.
  """
  inits: tuple[str, ...] = ("he_normal", "xavier_normal")
  depths: tuple[int, ...] = (10, 30)
  widths: tuple[int, ...] = (100,)
  activations: tuple[str, ...] = ("relu",)
  optimizers: tuple[str, ...] = ("momentum", "adam")
  learning_rates: tuple[tuple[str, tuple[float, ...]], ...] = ()
  num_seeds: int = 8
  steps: int = 1000
  batch_size: int = 100
  dataset: str = "mnist1d"
  seed: int = 0
  log_every: int = 10
  eval_every: int = 100
  stats_every: int = 250
  stats_batch_size: int = 256
  loss_threshold: float = 1.5
  data_dir: str = ""
  archs: tuple[str, ...] = ("mlp",)
  bias_variance: float = 0.0
  branch_scale: str = "one"
  kernel_size: int = 5
  padding: str = "circular"
  init_learning_rates: tuple[tuple[str, str, float], ...] = ()
  # abc-parametrizations (`initjax.training.parametrization`), each a grid axis; muP and ntk
  # scale with width / base_width (0: the narrowest width). sp points keep their names.
  parametrizations: tuple[str, ...] = ("sp",)
  base_width: int = 0

  recurrent_inits: tuple[str, ...] = ()
  norms: tuple[str, ...] = ("none",)

  def __post_init__(self):
    object.__setattr__(self, "parametrizations", tuple(self.parametrizations))
    _check_names("parametrizations", self.parametrizations, parametrization_names())
    _check_unique("parametrizations", self.parametrizations)
    _check_int("base_width", self.base_width, 0)
    if set(self.parametrizations) != {"sp"} and set(self.archs) != {"mlp"}:
      raise ConfigError("parametrizations", "a parametrization other than sp needs "
                        "--archs=mlp (the book's MLP); got archs "
                        f"{', '.join(self.archs)}")
    if set(self.parametrizations) != {"sp"} and tuple(self.norms) != ("none",):
      raise ConfigError("parametrizations", "a parametrization other than sp needs "
                        f"--norms=none; got norms {', '.join(self.norms)}")
    for field in ("inits", "depths", "widths", "activations", "optimizers", "archs",
                  "recurrent_inits", "norms"):
      object.__setattr__(self, field, tuple(getattr(self, field)))
    object.__setattr__(self, "learning_rates", tuple(
        (o, tuple(lrs)) for o, lrs in self.learning_rates))
    if not self.inits:
      raise ConfigError("inits", f"needs at least one of: {', '.join(initializer_names())}")
    for init in self.inits:
      value = fan_in_variance(init)
      if value is None:
        _check_named_init(init)
      if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError("inits", f"{init!r}: sigma2_w must be a finite number > 0")
    _check_names("archs", self.archs, architectures.architecture_names())
    try:
      self.arch_options()
    except ValueError as e:
      field = "kernel_size" if "kernel_size" in str(e) else (
          "padding" if "padding" in str(e) else "branch_scale")
      raise ConfigError(field, str(e)) from None
    if isinstance(self.bias_variance, bool) or not (
        isinstance(self.bias_variance, (int, float)) and math.isfinite(self.bias_variance)
        and self.bias_variance >= 0):
      raise ConfigError("bias_variance", f"must be a finite number >= 0; got {self.bias_variance}")
    self._check_norms()
    _check_names("activations", self.activations, activation_names())
    _check_names("optimizers", self.optimizers, optimizer_names())
    _check_names("dataset", [self.dataset], data_lib.dataset_names())
    for field in ("depths", "widths"):
      values = getattr(self, field)
      if not values:
        raise ConfigError(field, "needs at least one value")
      for v in values:
        _check_int(field, v, 1)
    for field in ("inits", "depths", "widths", "activations", "optimizers", "archs"):
      _check_unique(field, getattr(self, field))
    _check_unique("learning_rates", [o for o, _ in self.learning_rates])
    for optimizer, lrs in self.learning_rates:
      if optimizer not in self.optimizers:
        raise ConfigError("learning_rates", f"optimizer {optimizer!r} is not in --optimizers "
                          f"({', '.join(self.optimizers)})")
      for lr in lrs:
        _check_learning_rate(lr)
      _check_unique("learning_rates", lrs)
    self._check_init_learning_rates()
    self._check_recurrent()
    for field in ("num_seeds", "steps", "batch_size", "log_every", "eval_every", "stats_every",
                  "stats_batch_size"):
      _check_int(field, getattr(self, field), 1)
    _check_int("seed", self.seed, 0)
    if self.seed > MAX_SEED:
      raise ConfigError("seed", f"must be <= {MAX_SEED} (PRNG keys keep 32 bits); got {self.seed}")
    n_train = data_lib.dataset_info(self.dataset)["n_train"]
    for field in ("batch_size", "stats_batch_size"):
      if getattr(self, field) > n_train:
        raise ConfigError(field, f"must be <= {n_train} (training examples of "
                          f"{self.dataset}); got {getattr(self, field)}")
    if not isinstance(self.data_dir, str):
      raise ConfigError("data_dir", f"must be a path (a string); got {self.data_dir!r}")
    if not (isinstance(self.loss_threshold, (int, float)) and not isinstance(
        self.loss_threshold, bool) and math.isfinite(self.loss_threshold)
            and self.loss_threshold > 0):
      raise ConfigError("loss_threshold",
                        f"must be a finite number > 0; got {self.loss_threshold}")

  def _check_recurrent(self) -> None:
    recurrent = [a for a in self.archs if architectures.is_recurrent(a)]
    allowed = architectures.recurrent_init_names()
    if self.recurrent_inits and not recurrent:
      raise ConfigError("recurrent_inits", "apply to the recurrent architectures only "
                        f"(--archs={', '.join(architectures.RECURRENT)}); got "
                        f"--archs={','.join(self.archs)}")
    for name in self.recurrent_inits:
      if name not in allowed:
        raise ConfigError("recurrent_inits", f"unknown value {name!r}; allowed: "
                          f"{', '.join(allowed)}")
    _check_unique("recurrent_inits", self.recurrent_inits)
    if recurrent and len(recurrent) == len(self.archs):
      for name, owner in (("kernel_size", "cnn"), ("padding", "cnn"), ("branch_scale", "resmlp")):
        if getattr(self, name) != SweepConfig.__dataclass_fields__[name].default:
          raise ConfigError(name, f"is an option of --archs={owner}; --archs="
                            f"{','.join(self.archs)} take --recurrent_inits (allowed: "
                            f"{', '.join(allowed)})")
    if recurrent:
      size = data_lib.dataset_info(self.dataset)["input_size"]
      fits = [d for d in range(1, size + 1) if size % d == 0]
      for depth in self.depths:
        if isinstance(depth, (int, np.integer)) and depth not in fits:
          raise ConfigError("depths", f"{','.join(recurrent)} read each {self.dataset} example "
                            f"({size} values) as depth time steps: depth must divide {size}, "
                            f"one of {', '.join(map(str, fits))}; got {depth}")

  def recurrent_inits_for(self, arch: str) -> tuple[str, ...]:
    """The recurrent initializers of the grid for `arch` ("" for an architecture without)."""
    if not architectures.is_recurrent(arch):
      return ("",)
    return self.recurrent_inits or ("orthogonal",)

  def base(self) -> int:
    """The width at which every parametrization is the standard one."""
    return self.base_width or min(self.widths)

  def arch_options(self, norm: str = "none") -> architectures.ArchOptions:
    """The architecture options of the sweep, with a grid point's normalization."""
    return architectures.ArchOptions(branch_scale=self.branch_scale,
                                     kernel_size=self.kernel_size, padding=self.padding,
                                     norm=norm)

  def _check_norms(self) -> None:
    _check_names("norms", self.norms, normalization.NORMS)
    _check_unique("norms", self.norms)
    for arch in self.archs:
      for norm in self.norms:
        try:
          architectures.check_norm(architectures.get(arch), norm)
        except ValueError as e:
          raise ConfigError("norms", str(e)) from None
    if "batchnorm" in self.norms:
      for field in ("batch_size", "stats_batch_size"):
        if isinstance(getattr(self, field), int) and getattr(self, field) < 2:
          raise ConfigError(f"norms/{field}", "batchnorm needs at least 2 examples per batch "
                            f"(the batch variance of one example is 0); got {getattr(self, field)}")

  def _check_init_learning_rates(self) -> None:
    entries = []
    for entry in self.init_learning_rates:
      if not (isinstance(entry, (tuple, list)) and len(entry) == 3
              and isinstance(entry[0], str) and isinstance(entry[1], str)):
        raise ConfigError("init_learning_rates", "entries must be [init, optimizer, learning "
                          f"rate]; got {entry!r}")
      init, optimizer, lr = entry
      if init not in self.inits:
        raise ConfigError("init_learning_rates", f"init {init!r} is not in --inits")
      if optimizer not in self.optimizers:
        raise ConfigError("init_learning_rates", f"optimizer {optimizer!r} is not in "
                          f"--optimizers ({', '.join(self.optimizers)})")
      _check_learning_rate(lr)
      entries.append((init, optimizer, float(lr)))
    _check_unique("init_learning_rates", [(i, o) for i, o, _ in entries])
    object.__setattr__(self, "init_learning_rates", tuple(entries))

  def learning_rates_for(self, optimizer: str) -> tuple[float, ...]:
    given = dict(self.learning_rates)
    return tuple(given.get(optimizer, (DEFAULT_LEARNING_RATES[optimizer],)))

  def grid_learning_rates(self, optimizer: str, init: str | None = None) -> tuple[float, ...]:
    """The learning rates the grid trains `init` at with `optimizer` (`init_learning_rates`
    first); without an init, every rate that some init trains at, in grid order."""
    pinned = {(i, o): lr for i, o, lr in self.init_learning_rates}
    if init is not None:
      return ((pinned[init, optimizer],) if (init, optimizer) in pinned
              else self.learning_rates_for(optimizer))
    rates = [lr for lr in self.learning_rates_for(optimizer)
             if any((i, optimizer) not in pinned for i in self.inits)]
    rates += sorted({lr for (_, o), lr in pinned.items() if o == optimizer} - set(rates))
    return tuple(rates)

  def to_dict(self) -> dict[str, Any]:
    """Plain JSON-ready dict; learning_rates resolved per optimizer."""
    d = dataclasses.asdict(self)
    d["learning_rates"] = {o: list(self.learning_rates_for(o)) for o in self.optimizers}
    if not self.recurrent_inits:    # a sweep without recurrent nets keeps its dict as before
      del d["recurrent_inits"]
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "SweepConfig":
    """The inverse of `to_dict` (unknown keys are ignored); a value of the wrong kind is a
    ConfigError naming its field."""
    if not isinstance(d, dict):
      raise ConfigError("config", f"must be a JSON object; got {type(d).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields}
    for field in ("inits", "depths", "widths", "activations", "optimizers", "archs",
                  "recurrent_inits", "norms"):
      if field in kwargs and not isinstance(kwargs[field], tuple):
        raise ConfigError(field, f"must be a list; got {kwargs[field]!r}")
    rates = d.get("learning_rates") or {}
    if not isinstance(rates, dict) or not all(
        isinstance(lrs, list) and all(isinstance(lr, (int, float)) and not isinstance(lr, bool)
                                      for lr in lrs) for lrs in rates.values()):
      raise ConfigError("learning_rates", "must be an object {optimizer: [learning rates]}")
    kwargs["learning_rates"] = tuple((o, tuple(float(lr) for lr in lrs))
                                     for o, lrs in rates.items())
    return cls(**kwargs)
