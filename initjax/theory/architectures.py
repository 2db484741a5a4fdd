"""The built-in architectures by name, one record each: the book's MLP, a residual MLP, a 1-D CNN,
and the recurrent rnn, lstm and gru (`initjax.nn.recurrent`).

An `Architecture` knows how to initialize a network (any initializer: He vs Xavier is one
argument), which `initjax.models.Model` trains it (with its per-layer statistics), and what the
mean-field theory predicts for its per-layer variances. The experiments' `--arch`/`--archs`
flags take these names; a new architecture is one entry in `ARCHITECTURES`.

Options (`ArchOptions`, the same for every architecture so that a flag set can carry them):
the residual MLP's branch scale (`initjax.residual.BRANCH_SCALES`), the CNN's kernel size and
padding (`initjax.convolutional.PADDINGS`), the recurrent networks' recurrent-kernel initializer
(`recurrent_init`, a registered name), and the normalization of the pre-activations
(`initjax.nn.normalization.NORMS`: none, batchnorm, layernorm; an architecture lists the norms it
has in `Architecture.norms`). "width" is the CNN's number of channels. A batch-normalized
network has state (running statistics): `init_states` draws it. For the recurrent
architectures "depth" is the number of time steps T (the depth of the network unrolled in time):
an input of shape (T, D), or any shape whose values are read as T steps (MNIST-1D's 40 values as
40 steps of one value); their statistics and theory are per time step t = 1..T.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import numpy as np

from initjax.core.errors import check_choice
from initjax.nn import convolutional, models, networks, normalization, recurrent, residual
from initjax.nn.initializers import compute_fans, expected_variance, initializer_names
from initjax.theory.batchnorm import predict_normalized_mlp
from initjax.theory.convolutional import predict_cnn
from initjax.theory.recurrent import predict_rnn
from initjax.theory.residual import predict_resmlp
from initjax.theory.variance import predict_mlp


def recurrent_init_names() -> list[str]:
  """The initializers a recurrent kernel may take: the registered ones that draw weights."""
  return [n for n in initializer_names() if n not in ("zeros", "constant")]


@dataclasses.dataclass(frozen=True)
class ArchOptions:
  branch_scale: str = "one"       # resmlp: "one", "invsqrt", "skipinit"
  kernel_size: int = 5            # cnn
  padding: str = "circular"       # cnn: "circular" (theory exact) or "zero"
  recurrent_init: str = "orthogonal"   # rnn, lstm, gru: the recurrent kernels' initializer
  norm: str = "none"              # mlp, cnn: "none", "batchnorm", "layernorm"

  def __post_init__(self):
    check_choice("branch scale", self.branch_scale, residual.BRANCH_SCALES)
    check_choice("recurrent_init", self.recurrent_init, recurrent_init_names())
    check_choice("norm", self.norm, normalization.NORMS)
    check_choice("padding", self.padding, convolutional.PADDINGS)
    if not isinstance(self.kernel_size, int) or self.kernel_size < 1:
      raise ValueError(f"kernel_size must be an integer >= 1; got {self.kernel_size!r}")


@dataclasses.dataclass(frozen=True)
class Architecture:
  """One architecture: how to build, train and predict it.

  Attributes:
    name: the registry name.
    init: (key, *, input_shape, width, depth, output_dim, weight_init, bias_init, options)
      -> params of one network.
    model: (activation, options) -> the `Model` that trains it (cached: one compiled program).
    predict: (*, input_shape, width, depth, output_dim, sigma2_w, sigma2_b, activation,
      options) -> {"var_h": log10 per layer, "var_dl_dh": log10 per layer} (mean field, least
      squares against y = 0); sigma2_w per fan-in (fan_in Var[W]), one value per weight of
      `kernel_shapes`, in its order.
    kernel_shapes: (input_shape, width, depth, output_dim, options) -> the Flax-layout shape of
      every weight, in forward order (what an initializer is called with).
    first_layer: the layer index k of the first entry of var_h / var_dl_dh.
    inputs: (key, shape, depth, dtype) -> the measurement's inputs; None: standard normal.
    unscaled: parameters that a measurement's weight-variance multiplier leaves alone (the
      recurrent kernels, drawn by `ArchOptions.recurrent_init`).
    norms: the values of `ArchOptions.norm` it is built with.
    init_state: (params, options) -> the state of one network (or of a batch: leading axis)
      for a model with state (batch statistics); None: stateless, ().
  """
  name: str
  init: Callable[..., Any]
  model: Callable[[str, ArchOptions], models.Model]
  predict: Callable[..., dict[str, np.ndarray]]
  kernel_shapes: Callable[..., list[tuple[int, ...]]]
  first_layer: int
  inputs: Callable[..., Any] | None = None
  unscaled: tuple[str, ...] = ()
  norms: tuple[str, ...] = ("none",)
  init_state: Callable[..., Any] | None = None


def _flat_dim(input_shape) -> int:
  return int(np.prod(input_shape))


# ------------------------------------------------------------------------------------------------
# mlp

def _mlp_init(key, *, input_shape, width, depth, output_dim, weight_init, bias_init=None,
              options=ArchOptions()):
  params = networks.init_mlp(key, input_dim=_flat_dim(input_shape), width=width, depth=depth,
                             output_dim=output_dim, weight_init=weight_init, bias_init=bias_init)
  return normalization.init_norm_params(params, options.norm)


def _mlp_state(params, options=ArchOptions()):
  return normalization.init_norm_state(params, options.norm)


def _mlp_model(activation: str, options: ArchOptions) -> models.Model:
  return models.normalized_mlp(activation, options.norm)


def _mlp_shapes(input_shape, width, depth, output_dim, options=ArchOptions()):
  del options
  return [(_flat_dim(input_shape), width)] + [(width, width)] * (depth - 1) + [(width, output_dim)]


def _mlp_predict(*, input_shape, width, depth, output_dim, sigma2_w, sigma2_b=0.0,
                 activation="relu", options=ArchOptions(), batch_size=100):
  fans = [s[0] for s in _mlp_shapes(input_shape, width, depth, output_dim, options)]
  s2 = np.broadcast_to(np.asarray(sigma2_w, np.float64), (len(fans),))
  if options.norm != "none":    # batchnorm: over a batch of `batch_size` inputs (the probe's 100)
    return predict_normalized_mlp(width=width, depth=depth, output_dim=output_dim,
                                  sigma2_out=float(s2[-1]), activation=activation,
                                  norm=options.norm, batch_size=batch_size)
  p = predict_mlp(input_dim=_flat_dim(input_shape), width=width, depth=depth,
                  output_dim=output_dim, sigma2_omega=list(s2 / np.asarray(fans)),
                  sigma2_beta=sigma2_b, activation=activation)
  return {"var_h": p.log10_var_h, "var_dl_dh": p.log10_var_dl_dh}


# ------------------------------------------------------------------------------------------------
# resmlp

def _resmlp_init(key, *, input_shape, width, depth, output_dim, weight_init, bias_init=None,
                 options=ArchOptions()):
  return residual.init_resmlp(key, input_dim=_flat_dim(input_shape), width=width, depth=depth,
                              output_dim=output_dim, weight_init=weight_init,
                              bias_init=bias_init, scale=options.branch_scale)


def _resmlp_apply(params, x, activation, scale):
  return residual.apply_resmlp(params, x.reshape(x.shape[0], -1), activation, scale)


def _resmlp_stats(params, x, y, loss_fn, activation, scale):
  return residual.resmlp_layer_statistics(params, x.reshape(x.shape[0], -1), y, loss_fn,
                                          activation, scale)


@functools.lru_cache(maxsize=None)
def _resmlp_model(activation: str, options: ArchOptions) -> models.Model:
  kw = {"activation": activation, "scale": options.branch_scale}
  return models.Model(name=f"resmlp-{options.branch_scale}",
                      apply=functools.partial(_resmlp_apply, **kw),
                      layer_statistics=functools.partial(_resmlp_stats, **kw),
                      layer_index=(("var_h", 0), ("var_dl_dh", 0)), stacked=("omega", "beta"))


def _resmlp_shapes(input_shape, width, depth, output_dim, options=ArchOptions()):
  del options
  return [(_flat_dim(input_shape), width)] + [(width, width)] * depth + [(width, output_dim)]


def _resmlp_predict(*, input_shape, width, depth, output_dim, sigma2_w, sigma2_b=0.0,
                    activation="relu", options=ArchOptions()):
  p = predict_resmlp(input_dim=_flat_dim(input_shape), width=width, depth=depth,
                     output_dim=output_dim, sigma2_w=sigma2_w, sigma2_b=sigma2_b,
                     activation=activation, scale=options.branch_scale)
  return {"var_h": p["var_h"], "var_dl_dh": p["var_dl_dh"]}


# ------------------------------------------------------------------------------------------------
# cnn

def _cnn_init(key, *, input_shape, width, depth, output_dim, weight_init, bias_init=None,
              options=ArchOptions()):
  params = convolutional.init_cnn(key, input_shape=tuple(input_shape), channels=width,
                                  depth=depth, output_dim=output_dim,
                                  kernel_size=options.kernel_size, weight_init=weight_init,
                                  bias_init=bias_init)
  return normalization.init_norm_params(params, options.norm)


_CNN_LAYERS = (("var_f", 0), ("var_h", 1), ("var_dl_dh", 1), ("var_dl_df", 0),
               ("channel_sq_mean", 1), ("channel_var", 1))


def _normalized_cnn_model(activation: str, options: ArchOptions) -> models.Model:
  kw = {"activation": activation, "padding": options.padding, "norm": options.norm}
  stateful = options.norm == "batchnorm"
  return models.Model(
      name=f"cnn-k{options.kernel_size}-{options.padding}-{options.norm}",
      apply=functools.partial(normalization.apply_normalized_cnn, **kw),
      layer_statistics=functools.partial(normalization.cnn_layer_statistics, **kw),
      layer_index=_CNN_LAYERS,
      stacked=("kernel_hidden", "beta_hidden", "norm_scale_hidden", "norm_shift_hidden"),
      apply_train=functools.partial(normalization.apply_cnn_train, **kw) if stateful else None,
      apply_eval=functools.partial(normalization.apply_cnn_eval, **kw) if stateful else None)


@functools.lru_cache(maxsize=None)
def _cnn_model(activation: str, options: ArchOptions) -> models.Model:
  if options.norm != "none":
    return _normalized_cnn_model(activation, options)
  kw = {"activation": activation, "padding": options.padding}
  return models.Model(name=f"cnn-k{options.kernel_size}-{options.padding}",
                      apply=functools.partial(convolutional.apply_cnn, **kw),
                      layer_statistics=functools.partial(convolutional.cnn_layer_statistics,
                                                         **kw),
                      layer_index=(("var_f", 0), ("var_h", 1), ("var_dl_dh", 1),
                                   ("var_dl_df", 0), ("channel_sq_mean", 1),
                                   ("channel_var", 1)),
                      stacked=("kernel_hidden", "beta_hidden"))


def _cnn_shapes(input_shape, width, depth, output_dim, options=ArchOptions()):
  length, c_in = (input_shape[0], 1) if len(input_shape) == 1 else tuple(input_shape)
  s = options.kernel_size
  return ([(s, c_in, width)] + [(s, width, width)] * (depth - 1)
          + [(length * width, output_dim)])


def _cnn_predict(*, input_shape, width, depth, output_dim, sigma2_w, sigma2_b=0.0,
                 activation="relu", options=ArchOptions(), batch_size=100):
  del batch_size
  if options.norm != "none":   # no mean-field theory here for a normalized CNN: NaN
    nan = np.full(depth, np.nan)
    return {"var_f": nan, "var_h": nan, "var_dl_dh": nan}
  p = predict_cnn(length=int(input_shape[0]), channels=width, depth=depth,
                  output_dim=output_dim, kernel_size=options.kernel_size,
                  sigma2_w=sigma2_w, sigma2_b=sigma2_b, activation=activation,
                  padding=options.padding)
  return {"var_f": p["var_f"], "var_h": p["var_h"], "var_dl_dh": p["var_dl_dh"]}


# ------------------------------------------------------------------------------------------------
# rnn, lstm, gru (depth = time steps T)

def _recurrent_init(key, *, input_shape, width, depth, output_dim, weight_init, bias_init=None,
                    options=ArchOptions(), cell="rnn"):
  _, d = recurrent.sequence_shape(tuple(input_shape), depth)
  return recurrent.init_recurrent(key, cell=cell, input_dim=d, width=width,
                                  output_dim=output_dim, weight_init=weight_init,
                                  recurrent_init=options.recurrent_init, bias_init=bias_init)


@functools.lru_cache(maxsize=None)
def _cell_model(cell: str, activation: str) -> models.Model:
  return models.Model(name=f"{cell}-{activation}",
                      apply=functools.partial(recurrent.apply_recurrent, activation=activation),
                      layer_statistics=functools.partial(recurrent.recurrent_layer_statistics,
                                                         activation=activation),
                      layer_index=(("var_f", 1), ("var_h", 1), ("var_dl_dh", 1)))


def _recurrent_model(activation: str, options: ArchOptions, cell: str = "rnn") -> models.Model:
  del options   # the recurrent initializer changes the draws, not the program
  return _cell_model(cell, activation)


def _recurrent_shapes(input_shape, width, depth, output_dim, options=ArchOptions(), cell="rnn"):
  """Input kernels (D, H) and recurrent kernels (H, H), one per gate, then the readout."""
  del options
  size = _flat_dim(input_shape)
  d = -(-size // depth)    # a depth that does not divide the input is refused by init
  gates = recurrent.GATES[cell]
  return [(d, width)] * gates + [(width, width)] * gates + [(width, output_dim)]


def _recurrent_predict(*, input_shape, width, depth, output_dim, sigma2_w, sigma2_b=0.0,
                       activation="tanh", options=ArchOptions(), cell="rnn"):
  """The vanilla RNN's mean field (`initjax.theory.recurrent`, readout loss, inputs of mean
  square 1 per step); sigma2_w: the input kernel's and the readout's are its first and last
  entries, the recurrent kernel's comes from `options.recurrent_init` (fan_in Var[W_h]). The
  LSTM and GRU have no prediction here: NaN."""
  if cell != "rnn":
    nan = np.full(depth, np.nan)
    return {"var_f": nan, "var_h": nan, "var_dl_dh": nan}
  s2 = np.broadcast_to(np.asarray(sigma2_w, np.float64), (3,))
  sigma2_h = width * expected_variance(options.recurrent_init, (width, width))
  p = predict_rnn(steps=depth, sigma2_h=sigma2_h, sigma2_x=float(s2[0]), sigma2_b=sigma2_b,
                  activation=activation, loss="readout_least_squares", width=width,
                  output_dim=output_dim, sigma2_out=float(s2[-1]), sigma2_b_out=sigma2_b)
  return {"var_f": p["var_f"], "var_h": p["var_h"], "var_dl_dh": p["var_dl_dh"]}


def _recurrent_architecture(cell: str) -> Architecture:
  return Architecture(cell, functools.partial(_recurrent_init, cell=cell),
                      functools.partial(_recurrent_model, cell=cell),
                      functools.partial(_recurrent_predict, cell=cell),
                      functools.partial(_recurrent_shapes, cell=cell), first_layer=1,
                      inputs=recurrent.unit_step_inputs, unscaled=("kernel_h",))


RECURRENT = recurrent.CELLS


def is_recurrent(name: str) -> bool:
  return name in RECURRENT


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("mlp", _mlp_init, _mlp_model, _mlp_predict, _mlp_shapes, first_layer=1,
                 norms=normalization.NORMS, init_state=_mlp_state),
    Architecture("resmlp", _resmlp_init, _resmlp_model, _resmlp_predict, _resmlp_shapes,
                 first_layer=0),
    Architecture("cnn", _cnn_init, _cnn_model, _cnn_predict, _cnn_shapes, first_layer=1,
                 norms=normalization.NORMS, init_state=_mlp_state),
    *(_recurrent_architecture(cell) for cell in RECURRENT),
)}


def architecture_names() -> list[str]:
  return list(ARCHITECTURES)


def check_norm(arch: Architecture, norm: str) -> str:
  """ValueError unless `arch` is built with normalization `norm`."""
  check_choice("norm", norm, normalization.NORMS)
  if norm not in arch.norms:
    raise ValueError(f"norm {norm!r} is not built for --arch={arch.name} (it has: "
                     f"{', '.join(arch.norms)})")
  return norm


def init_states(arch: Architecture, params: Any, options: ArchOptions = ArchOptions()) -> Any:
  """The initial state of one network or of a batch of them (`init_networks`): batchnorm's
  running statistics; () for a stateless network."""
  if arch.init_state is None:
    return ()
  return arch.init_state(params, options)


def get(name: str) -> Architecture:
  return ARCHITECTURES[check_choice("architecture", name, architecture_names())]


def init_networks(arch: Architecture, keys_B: jax.Array, weight_init: Any, *, input_shape,
                  width: int, depth: int, output_dim: int, bias_init: Any = None,
                  options: ArchOptions = ArchOptions()) -> Any:
  """B networks of `arch` from B keys, stacked on a leading axis (eager, one network at a time:
  each random primitive then compiles once per shape for every initializer and seed)."""
  nets = [arch.init(k, input_shape=input_shape, width=width, depth=depth, output_dim=output_dim,
                    weight_init=weight_init, bias_init=bias_init, options=options)
          for k in keys_B]
  return jax.tree.map(lambda *leaves: jax.numpy.stack(leaves), *nets)


def parameter_count(arch: Architecture, input_shape, width: int, depth: int, output_dim: int,
                    options: ArchOptions = ArchOptions()) -> int:
  """Weights and biases of one network, without listing a very deep network's layers: the
  built-in architectures' hidden layers are alike, so the count is affine in depth (checked on
  depths 1 to 3; otherwise every layer is counted)."""
  def count(k):
    return sum(math.prod(s) + s[-1] for s in arch.kernel_shapes(input_shape, width, k,
                                                                output_dim, options))
  n1, n2, n3 = count(1), count(2), count(3)
  if n3 - n2 != n2 - n1:
    return count(depth)
  return n1 + (depth - 1) * (n2 - n1)


def predict_for_init(arch: Architecture, weight_init: str, *, input_shape, width: int,
                     depth: int, output_dim: int, scale: float = 1.0, sigma2_b: float = 0.0,
                     activation: str = "relu", options: ArchOptions = ArchOptions(),
                     init_kwargs: dict | None = None,
                     batch_size: int | None = None) -> dict[str, np.ndarray]:
  """`arch.predict` for a registered initializer times a variance multiplier `scale`: each
  weight's per-fan-in sigma2_w = scale x fan_in x the variance the initializer draws for its
  shape (He: 2 everywhere; Xavier: 2 fan_in / (fan_in + fan_out)). `batch_size`: the inputs a
  batch-normalized network is normalized over (when not 100)."""
  shapes = arch.kernel_shapes(input_shape, width, depth, output_dim, options)
  sigma2_w = [scale * compute_fans(s)[0] * expected_variance(weight_init, s, **(init_kwargs or {}))
              for s in shapes]
  return arch.predict(input_shape=input_shape, width=width, depth=depth, output_dim=output_dim,
                      sigma2_w=sigma2_w, sigma2_b=sigma2_b, activation=activation,
                      options=options, **({} if batch_size is None else
                                          {"batch_size": batch_size}))
