"""A network as pure functions: what training and measurement need to know of a model.

A `Model` is a hashable record (a static argument of the compiled programs): its forward pass
`apply(params, x) -> out`, optionally the per-layer statistics recorded while it trains, the
names of its top-level parameters that are stacked over layers (run with `lax.scan`) and, for a
model with state (batch statistics, dropout), its train- and eval-mode forward passes
`apply_train(params, state, x, rng) -> (out, new_state)` and `apply_eval(params, state, x)`.
Models that differ only in their parameter values share one compiled training program.

  * `mlp(activation)`: the book's MLP of `initjax.networks` (records Var[h_k], Var[dl/dh_k] and
    Var[dl/df_k] per layer).
  * `normalized_mlp(activation, norm)`: the same MLP with batch or layer normalization of its
    pre-activations (`initjax.nn.normalization`; batchnorm is a model with state).
  * `networks(model, keys_B, x, weight_init=...)`: B initializations of a model written with
    Flax linen or nnx, Equinox (`equinox(make)`) or pure functions, with its state and its
    kernels redrawn as `initjax.probe` redraws them (fans from what each layer contracts):
    (Model, params_B, state_B) for `batch_training.run_networks`.
  * `from_flax(module, train_kwargs, eval_kwargs)`: a `flax.linen.Module` as a Model
    (parameters: its "params" collection).
  * `from_functions(apply, name)`: any pure `apply(params, x) -> out`.
  * `nnx_networks(make, keys_B)`: a stateless `flax.nnx.Module` (class or factory
    `rngs -> module`) as a Model, and the parameters of B initializations of it.

Builders are cached, so asking twice for the same model returns the same record (and the same
compiled program).
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from initjax.core.errors import ModelError
from initjax.nn import activations, adapters, normalization, redraw
from initjax.nn.networks import apply_mlp, trace_mlp
from initjax.nn.adapters import equinox  # noqa: F401 (re-exported: models.equinox(make))

Params = Any
LossFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Model:
  """A network as pure functions of (params, x).

  Attributes:
    name: for logs and error messages.
    apply: the forward pass, `apply(params, x_NxD) -> out_NxO` for one network.
    layer_statistics: optional `(params, x, y, loss_fn) -> {name: (L,) array}`, per-layer
      statistics of one network on a batch, recorded during training (see `layer_index`).
    layer_index: {statistic name: the layer index of its first entry} for the tidy results
      (the MLP's Var[h_k] starts at k = 1, its Var[dl/df_k] at k = 0).
    stacked: names of top-level parameters stacked over layers (leading axis = layer). In a
      batch of networks they are stored layer-major (the network axis second), so that the scan
      over layers needs no transpose at every step.
    apply_train: for a model with state or randomness, `(params, state, x, rng) -> (out,
      new_state)` in train mode (dropout on, batch statistics used and updated); None: `apply`.
    apply_eval: `(params, state, x) -> out` in eval mode (running averages, no dropout).
  """
  name: str
  apply: Callable[[Params, jax.Array], jax.Array]
  layer_statistics: Callable[..., dict[str, jax.Array]] | None = None
  layer_index: tuple[tuple[str, int], ...] = ()
  stacked: tuple[str, ...] = ()
  apply_train: Callable[..., tuple[Any, Any]] | None = None
  apply_eval: Callable[..., Any] | None = None

  def first_layer(self, statistic: str) -> int:
    return dict(self.layer_index).get(statistic, 0)

  @property
  def stateful(self) -> bool:
    return self.apply_train is not None


def forward_train(model: Model, params: Params, state: Any, x: jax.Array,
                  rng: jax.Array | None) -> tuple[Any, Any]:
  """(out, new state) of one training step's forward pass."""
  if model.apply_train is None:
    return model.apply(params, x), state
  return model.apply_train(params, state, x, rng)


def forward_eval(model: Model, params: Params, state: Any, x: jax.Array) -> Any:
  """The output in eval mode (what test metrics are computed on)."""
  if model.apply_eval is None:
    return model.apply(params, x)
  return model.apply_eval(params, state, x)


def _mlp_apply(params, x, activation):
  return apply_mlp(params, x, activation)


def mlp_layer_statistics(params: Params, x_NxD: jax.Array, y: jax.Array, loss_fn: LossFn,
                         activation: str) -> dict[str, jax.Array]:
  """Var[h_k], Var[dl/dh_k] (k = 1..K) and Var[dl/df_k] (k = 0..K-1) of the book's MLP, each
  pooled over units and examples, and the loss, on the batch (x, y).

  dl/df_k and dl/dh_k are exact: gradients of the loss with respect to zero offsets added to
  every f_k and h_k in `trace_mlp` (as `initjax.gradients.layer_gradients`).
  """
  depth = params["omega_hidden"].shape[0] + 1
  n, width = x_NxD.shape[0], params["omega_0"].shape[0]
  zeros_KxNxD = jnp.zeros((depth, n, width), x_NxD.dtype)
  offsets = {"f": zeros_KxNxD, "h": zeros_KxNxD,
             "f_out": jnp.zeros((n, params["omega_out"].shape[0]), x_NxD.dtype)}

  def loss_of(o):
    trace = trace_mlp(params, x_NxD, activation, o)
    return loss_fn(trace["f_out"], y), trace["h"]

  (loss, h_KxNxD), g = jax.value_and_grad(loss_of, has_aux=True)(offsets)
  return {"var_h": jnp.var(h_KxNxD, axis=(1, 2)), "var_dl_dh": jnp.var(g["h"], axis=(1, 2)),
          "var_dl_df": jnp.var(g["f"], axis=(1, 2)), "loss": loss}


@functools.lru_cache(maxsize=None)
def mlp(activation: str = "relu") -> Model:
  """The book's MLP (`initjax.networks`) with `activation`."""
  name = activations.get(activation).name
  return Model(name=f"mlp-{name}",
               apply=functools.partial(_mlp_apply, activation=activation),
               layer_statistics=functools.partial(mlp_layer_statistics, activation=activation),
               layer_index=(("var_h", 1), ("var_dl_dh", 1), ("var_dl_df", 0)),
               stacked=("omega_hidden", "beta_hidden"))


@functools.lru_cache(maxsize=None)
def normalized_mlp(activation: str = "relu", norm: str = "none") -> Model:
  """The book's MLP with `norm` ("none": `mlp(activation)`, the same record) applied to its
  hidden pre-activations (`initjax.nn.normalization`). Batchnorm trains with the batch's
  statistics and updates running averages (its state: `normalization.init_norm_state`) that
  evaluation uses; its per-layer statistics use the batch's statistics, as at initialization."""
  if normalization.check_norm(norm) == "none":
    return mlp(activation)
  name = activations.get(activation).name
  kw = {"activation": activation, "norm": norm}
  stateful = norm == "batchnorm"
  return Model(name=f"mlp-{name}-{norm}",
               apply=functools.partial(normalization.apply_normalized_mlp, **kw),
               layer_statistics=functools.partial(normalization.layer_statistics, **kw),
               layer_index=(("var_h", 1), ("var_dl_dh", 1), ("var_f", 0), ("var_dl_df", 0)),
               stacked=("omega_hidden", "beta_hidden", "norm_scale_hidden",
                        "norm_shift_hidden"),
               apply_train=(functools.partial(normalization.apply_train, **kw)
                            if stateful else None),
               apply_eval=functools.partial(normalization.apply_eval, **kw) if stateful else None)


# ------------------------------------------------------------------------------------------------
# Models written by users: Flax linen and nnx, Equinox, pure functions (`initjax.nn.adapters`).

def _adapter_train(params, state, x, rng, adapter):
  return adapter.apply(params, state, x, rng=rng, train=True)


def _adapter_eval(params, state, x, adapter):
  return adapter.apply(params, state, x, train=False)[0]


def _adapter_apply(params, x, adapter):
  return adapter.apply(params, {}, x, train=False)[0]


_MODELS: dict[Any, tuple[Any, Model, adapters.Adapter]] = {}
_UNHASHABLE: list[tuple[Any, tuple, Model, adapters.Adapter]] = []


def _cached(model: Any, kwargs: tuple) -> tuple[Model, adapters.Adapter] | None:
  try:
    hit = _MODELS.get((model, kwargs))
    return None if hit is None else (hit[1], hit[2])
  except TypeError:        # a module with a list attribute: found by equality
    for m, k, record, adapter in _UNHASHABLE:
      if type(m) is type(model) and k == kwargs and m == model:
        return record, adapter
    return None


def _remember(model: Any, kwargs: tuple, record: Model, adapter: adapters.Adapter) -> None:
  try:
    _MODELS[(model, kwargs)] = (model, record, adapter)
  except TypeError:
    _UNHASHABLE.append((model, kwargs, record, adapter))


def _frozen(kwargs: dict | None) -> tuple:
  return tuple(sorted((kwargs or {}).items()))


def adapted(model: Any, *, train_kwargs: dict | None = None, eval_kwargs: dict | None = None,
            rng_names: Sequence[str] = ()) -> tuple[Model, adapters.Adapter]:
  """(Model, Adapter) for a user's model, one per model and arguments (so one compiled program);
  ModelError (one line) for a model initjax cannot use or a keyword argument it does not take."""
  key = (_frozen(train_kwargs), _frozen(eval_kwargs), tuple(rng_names))
  hit = _cached(model, key)
  if hit is not None:
    return hit
  adapter = adapters.adapt(model, train_kwargs=train_kwargs, eval_kwargs=eval_kwargs,
                           rng_names=rng_names)
  name = adapter.label.split(" ")[-1]
  record = Model(name=name, apply=functools.partial(_adapter_apply, adapter=adapter),
                 apply_train=functools.partial(_adapter_train, adapter=adapter),
                 apply_eval=functools.partial(_adapter_eval, adapter=adapter))
  _remember(model, key, record, adapter)
  return record, adapter


def from_flax(module, train_kwargs: dict | None = None,
              eval_kwargs: dict | None = None) -> Model:
  """A `flax.linen.Module` as a Model: its "params" collection is trained, its other
  collections (batch_stats) are the state, `train_kwargs` / `eval_kwargs` are its call keyword
  arguments per mode (e.g. {"train": True} / {"train": False}). A module without state can be
  initialized as `jax.vmap(lambda k: module.init(k, x)["params"])(keys)`; `networks` gives the
  parameters and the state of any module."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  if not isinstance(module, nn.Module):
    raise ModelError(f"from_flax needs a flax.linen.Module; got {type(module).__name__}")
  return adapted(module, train_kwargs=train_kwargs, eval_kwargs=eval_kwargs)[0]


@functools.lru_cache(maxsize=64)
def from_functions(apply: Callable[[Params, jax.Array], jax.Array], name: str = "") -> Model:
  """Any pure forward pass `apply(params, x) -> out` as a Model."""
  return Model(name=name or getattr(apply, "__name__", "model"), apply=apply)


class Networks(NamedTuple):
  """B initializations of a model: its `Model`, their parameters and their state, stacked on
  a leading axis B (what `batch_training.run_networks` takes)."""
  model: Model
  params: Params
  state: Any


def networks(model: Any, keys_B: jax.Array, x: Any, *, weight_init: Any = None,
             bias_init: Any = None, fan_axes: dict | None = None,
             train_kwargs: dict | None = None, eval_kwargs: dict | None = None,
             rng_names: Sequence[str] = ()) -> Networks:
  """B initializations of a user's model (linen module, nnx class or factory, `equinox(make)`,
  or (init_fn, apply_fn)), ready for `batch_training.run_networks`.

  Network b is initialized from keys_B[b] exactly as `initjax.probe.trace(model, x, key=...)`
  draws it: the model's own init from the first half of the key, then, with `weight_init` /
  `bias_init` (names, callables or {path pattern: init} mappings), every matched kernel and bias
  redrawn from the second half with the fans of what its layer contracts
  (`initjax.nn.redraw`). The state (linen's non-"params" collections, nnx's BatchStat and RNG
  variables) is stacked alongside and trained as each library trains it: batch statistics
  update in train mode and are used in eval mode, each network and step draws its own dropout.

  ModelError (one line, before anything compiles) for a model, keyword argument, pattern or
  fan-axes declaration that cannot apply.
  """
  record, adapter = adapted(model, train_kwargs=train_kwargs, eval_kwargs=eval_kwargs,
                            rng_names=rng_names)
  x_spec = jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
  keys_B = jnp.asarray(keys_B)
  if keys_B.ndim != 1 or keys_B.shape[0] == 0:
    raise ModelError(f"keys_B must be a non-empty 1-D array of keys; got shape {keys_B.shape}")
  try:
    params, _ = jax.eval_shape(adapter.init, jax.random.key(0), x_spec)
    leaves = redraw.declare_axes(adapter.leaves(params, x_spec), fan_axes)
  except ModelError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ModelError(f"{adapter.label} failed to initialize on x of shape {x_spec.shape}: "
                     f"{redraw.first_line(e)}") from e
  plan = redraw.plan(leaves, weight_init, bias_init)
  redraw.check(plan)
  if plan.assumed:
    warnings.warn(f"initjax.models.networks: {adapter.label}: the fans of {len(plan.assumed)} "
                  f"kernels are read from their raw shapes as (..., in, out) "
                  f"({', '.join(plan.assumed)}); declare fan_axes if that is not their layout",
                  UserWarning, stacklevel=2)
  select, std = jnp.asarray(plan.select_CxL[0]), jnp.asarray(plan.std_CxL[0], jnp.float32)

  x = jnp.asarray(x)

  def one(key):
    k_init, k_draw = jax.random.split(key)
    p, s = adapter.init(k_init, x)
    return redraw.apply(plan.static, p, k_draw, select, std, 1.0, adapter.prefix), s

  params_B, state_B = jax.vmap(one)(keys_B)
  return Networks(record, params_B, state_B)


def nnx_networks(make: Any, keys_B: jax.Array) -> tuple[Model, Params]:
  """B initializations of a stateless `flax.nnx.Module`, ready for `batch_training.run_networks`.

  Args:
    make: an nnx Module class (called as `make(rngs=nnx.Rngs(key))`) or a factory
      `rngs -> module`.
    keys_B: one PRNG key per network.

  Returns:
    (model, params_B): `model.apply(params, x)` merges one network's parameters into the
    module's graph and calls it; `params_B` is the `nnx.State` of the `nnx.Param` variables,
    stacked on a leading axis B. A module with state that training changes (BatchNorm's
    statistics, Dropout's RNG streams) is refused in one line: `networks` trains those.
  """
  from flax import nnx  # pylint: disable=import-outside-toplevel
  if isinstance(make, type):
    cls, name = make, make.__name__
    make = lambda rngs: cls(rngs=rngs)  # pylint: disable=unnecessary-lambda-assignment
  else:
    name = getattr(make, "__name__", "nnx module")

  def params_of(key):
    return nnx.split(make(nnx.Rngs(key)), nnx.Param, ...)[1]

  keys_B = jnp.asarray(keys_B)
  first = make(nnx.Rngs(keys_B[0]))
  if not isinstance(first, nnx.Module):
    raise TypeError(f"{name} returned {type(first).__name__}, not a flax.nnx.Module")
  graphdef, _, rest = nnx.split(first, nnx.Param, ...)
  kinds = sorted({type(v).__name__ for _, v in nnx.iter_graph(first)
                  if isinstance(v, (nnx.BatchStat, nnx.RngState))})
  if kinds:
    raise ModelError(f"{name} has state that training updates ({', '.join(kinds)}); "
                     "nnx_networks would train it frozen: use models.networks(make, keys_B, x), "
                     "which returns the state too")
  params_B = jax.vmap(params_of)(keys_B)
  model = Model(name=name, apply=functools.partial(_nnx_apply, graphdef=graphdef, rest=rest))
  return model, params_B


def _nnx_apply(params, x, graphdef, rest):
  from flax import nnx  # pylint: disable=import-outside-toplevel
  # Fresh copies of the other state, owned by the current trace (nnx refuses to touch Variables
  # of an outer trace, e.g. under jax.grad).
  return nnx.merge(graphdef, params, jax.tree.map(lambda v: v, rest))(x)
