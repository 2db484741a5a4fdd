"""The models researchers write, made pure: Flax linen and nnx, Equinox, pure functions.

An `Adapter` turns one model into plain functions of plain pytrees, with its state:

  init(key, x) -> (params, state)       params: what the optimizer trains (linen's "params"
                                        collection, nnx's `nnx.Param`s, Equinox's inexact
                                        arrays); state: everything else that a forward pass may
                                        update (linen's other collections such as "batch_stats",
                                        nnx's BatchStat and RNG variables), {} for none
  apply(params, state, x, *, rng, train, hook) -> (out, new_state)
  leaves(params, x) -> [redraw.Leaf]    every parameter leaf, its role and the axes its layer
                                        contracts (`initjax.nn.layer_axes`)

Train and eval modes are spelled the way each library spells them: linen takes call keyword
arguments (`train_kwargs` / `eval_kwargs`, e.g. {"train": True} / {"train": False}; train mode
marks every collection mutable and returns the updated state), nnx `module.train()` /
`module.eval()` (two graph definitions), Equinox `eqx.nn.inference_mode`. `rng` (a key, or
None) is the forward pass's randomness: linen gets it as its "dropout" stream (and any of
`rng_names`), nnx gets every RNG stream of the module reseeded from it (so each network and
step draws its own masks), Equinox gets per-example keys as the `key` argument.

Equinox models are called on one example, as Equinox writes them, and vmapped over the rows of
x. Pass a factory `key -> eqx.Module` as `equinox(make)` (or an `eqx.Module` instance when every
kernel is redrawn anyway).

Everything that can be wrong with the model or a keyword argument raises `ModelError`, one line
naming the model, before anything compiles.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from initjax.core.errors import ModelError
from initjax.nn import layer_axes, redraw

KINDS = ("linen", "nnx", "equinox", "pure")
RNG_STREAM = 0x64726F70          # folded into a network's key for its forward-pass randomness


@dataclasses.dataclass(frozen=True)
class Equinox:
  """An Equinox model given by its factory `make(key) -> eqx.Module` (one network per key)."""
  make: Callable[[jax.Array], Any]


def equinox(make: Callable[[jax.Array], Any]) -> Equinox:
  """Marks `make(key) -> eqx.Module` as an Equinox model for `initjax.probe` and training."""
  if not callable(make):
    raise ModelError(f"equinox(make) needs a factory key -> eqx.Module; got {make!r}")
  return Equinox(make)


@dataclasses.dataclass(frozen=True, eq=False)
class Adapter:
  """One model made pure (module docstring). `label` names it in error messages."""
  kind: str
  label: str
  init: Callable[..., tuple[Any, Any]]
  apply: Callable[..., tuple[Any, Any]]
  leaves: Callable[[Any, Any], list[redraw.Leaf]]
  prefix: str = ""
  signature: inspect.Signature | None = None
  source: Any = None

  def check_kwargs(self, kwargs: dict | None, what: str) -> dict:
    """`kwargs` if the model's __call__ takes them; else one ModelError line."""
    kwargs = dict(kwargs or {})
    if not kwargs or self.signature is None:
      return kwargs
    params = self.signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
      return kwargs
    bad = [k for k in kwargs if k not in params]
    if bad:
      takes = [n for n in params if n != "self"]
      raise ModelError(f"{what}: {self.label} does not accept {', '.join(map(repr, bad))} (its "
                       f"__call__ takes {', '.join(takes)})")
    return kwargs


def _first_line(error: BaseException) -> str:
  return redraw.first_line(error)


def _signature(fn: Any) -> inspect.Signature | None:
  try:
    return inspect.signature(fn)
  except (TypeError, ValueError):
    return None


def _accepts(signature: inspect.Signature | None, name: str) -> bool:
  if signature is None:
    return False
  return name in signature.parameters or any(
      p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())


# ------------------------------------------------------------------------------------------------
# flax.linen

def _linen(module, train_kwargs: dict, eval_kwargs: dict, rng_names: Sequence[str]) -> Adapter:
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  label = f"flax.linen module {type(module).__name__}"
  names = tuple(dict.fromkeys(("dropout",) + tuple(rng_names)))

  def rngs(rng):
    return None if rng is None else {n: jax.random.fold_in(rng, i) for i, n in enumerate(names)}

  def init(key, x):
    variables = module.init({"params": key, **rngs(jax.random.fold_in(key, RNG_STREAM))}, x,
                            **train_kwargs)
    variables = dict(variables)
    params = variables.pop("params", {})
    return params, variables

  def apply(params, state, x, *, rng=None, train=None, hook=None):
    del hook
    given = state
    state = dict(state or {})
    variables = {"params": params, **state}
    kwargs = eval_kwargs if train is False else train_kwargs
    if train is not False and state:
      out, updated = module.apply(variables, x, rngs=rngs(rng), mutable=True, **kwargs)
      return out, {c: updated.get(c, v) for c, v in state.items()}
    if train is not False:   # no state to update (sown intermediates are dropped)
      return module.apply(variables, x, rngs=rngs(rng), mutable=True, **kwargs)[0], given
    return module.apply(variables, x, rngs=rngs(rng), **kwargs), given

  def leaves(params, x):
    layers: dict[str, tuple[Any, dict]] = {}

    def interceptor(next_fun, args, kwargs, context):
      path = "/".join(context.module.path)
      layers.setdefault(path, (context.module, dict(kwargs)))
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
      jax.eval_shape(lambda k, x: module.init({"params": k, **rngs(k)}, x, **train_kwargs),
                     jax.random.key(0), x)
    return redraw.leaves_by_name(params, "params/", _owner_rule(layers, "params/"))

  return Adapter("linen", label, init, apply, leaves, "params/",
                 _signature(type(module).__call__), module)


def _owner_rule(layers: dict, prefix: str) -> Callable:
  def rule(name, leaf):
    owner, _, attribute = name[len(prefix):].rpartition("/")
    found = layers.get(owner)
    if found is None:
      return None, ""
    module, call = found
    return layer_axes.flax_leaf(module, attribute, len(leaf.shape), call), type(module).__name__
  return rule


# ------------------------------------------------------------------------------------------------
# flax.nnx

def _nnx(make: Callable, label: str, kwargs: dict, cls: type | None = None) -> Adapter:
  from flax import nnx  # pylint: disable=import-outside-toplevel
  box: dict[str, Any] = {}

  def build(key):
    module = make(nnx.Rngs(key))
    if not isinstance(module, nnx.Module):
      raise ModelError(f"{label} returned {type(module).__name__}, not a flax.nnx.Module")
    return module

  def init(key, x):
    del x
    module = build(key)
    graphdef, params, rng_state, other = nnx.split(module, nnx.Param, nnx.RngState, ...)
    if "as_built" not in box:
      box["as_built"] = graphdef
      box["keys"] = _key_paths(rng_state)
      module.train()
      box["train"] = nnx.graphdef(module)
      module.eval()
      box["eval"] = nnx.graphdef(module)
    return params, {"rng": _key_data(rng_state), "other": other}

  def apply(params, state, x, *, rng=None, train=None, hook=None):
    if "as_built" not in box:
      raise ModelError(f"{label}: apply before init")
    graphdef = box["as_built" if train is None else "train" if train else "eval"]
    if not isinstance(state, dict) or "rng" not in state:
      raise ModelError(f"{label} needs its state (nnx BatchStat and RNG variables): pass the "
                       "state that models.networks returns")
    rng_state = _wrap_keys(state["rng"], box["keys"])
    if rng is not None:
      rng_state = _reseed(rng_state, rng)
    copy = lambda t: jax.tree.map(lambda v: v, t)  # pylint: disable=unnecessary-lambda-assignment
    # Fresh Variables owned by the current trace (nnx refuses to update Variables created under
    # another one, such as the params closed over by jax.grad).
    module = nnx.merge(graphdef, params, copy(rng_state), copy(state["other"]))
    if hook is not None:
      hook(module)
    out = module(x, **kwargs)
    _, _, new_rng, new_other = nnx.split(module, nnx.Param, nnx.RngState, ...)
    return out, {"rng": _key_data(new_rng), "other": new_other}

  def leaves(params, x):
    del x
    module = nnx.eval_shape(lambda: build(jax.random.key(0)))
    layers = {"/".join(str(p) for p in path): (sub, {}) for path, sub in nnx.iter_modules(module)}
    return redraw.leaves_by_name(params, "", _owner_rule(layers, ""))

  signature = _signature(cls.__call__) if cls is not None else None
  return Adapter("nnx", label, init, apply, leaves, "", signature, cls or make)


def _key_paths(tree: Any) -> dict[str, Any]:
  """{path: key implementation} of the typed PRNG keys in `tree`."""
  return {jax.tree_util.keystr(path): jax.random.key_impl(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
          if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)}


def _key_data(tree: Any) -> Any:
  """`tree` with typed PRNG keys as their raw uint32 data: state that NumPy and the
  checkpoints can hold (`_wrap_keys` undoes it)."""
  return jax.tree.map(lambda a: jax.random.key_data(a)
                      if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a, tree)


def _wrap_keys(tree: Any, paths: dict[str, Any]) -> Any:
  def wrap(path, leaf):
    impl = paths.get(jax.tree_util.keystr(path))
    if impl is None or jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return leaf
    return jax.random.wrap_key_data(leaf, impl=impl)
  return jax.tree_util.tree_map_with_path(wrap, tree)


def _reseed(rng_state: Any, rng: jax.Array) -> Any:
  """Every RNG key of an nnx RngState replaced by one folded from `rng`, every count zeroed."""
  leaves, treedef = jax.tree_util.tree_flatten(rng_state)
  out = []
  for i, leaf in enumerate(leaves):
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      out.append(jax.random.fold_in(rng, i))
    else:
      out.append(jnp.zeros_like(leaf))
  return jax.tree_util.tree_unflatten(treedef, out)


# ------------------------------------------------------------------------------------------------
# Equinox

def _import_equinox():
  try:
    import equinox as eqx  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ModelError("an Equinox model needs Equinox, which is not installed "
                     "(pip install equinox)") from None
  return eqx


def _equinox(make: Callable | None, instance: Any, kwargs: dict) -> Adapter:
  eqx = _import_equinox()
  box: dict[str, Any] = {}
  name = type(instance).__name__ if instance is not None else getattr(make, "__name__", "factory")
  label = f"Equinox model {name}"

  def build(key):
    model = instance if make is None else make(key)
    if not isinstance(model, eqx.Module):
      raise ModelError(f"{label}: the factory returned {type(model).__name__}, not an "
                       "eqx.Module")
    return model

  def init(key, x):
    del x
    params, static = eqx.partition(build(key), eqx.is_inexact_array)
    box.setdefault("static", static)
    return params, {}

  def apply(params, state, x, *, rng=None, train=None, hook=None):
    model = eqx.combine(params, box["static"])
    if train is not None:
      model = eqx.nn.inference_mode(model, value=not train)
    if hook is not None:
      model = hook(model)
    call = functools.partial(model, **kwargs)
    if rng is not None and _accepts(_signature(type(model).__call__), "key"):
      keys = jax.random.split(rng, x.shape[0])
      return jax.vmap(lambda xi, ki: call(xi, key=ki))(x, keys), state
    return jax.vmap(call)(x), state

  def leaves(params, x):
    del x
    model = eqx.filter_eval_shape(build, jax.random.key(0)) if make is not None else instance
    layers: dict[str, tuple[Any, dict]] = {}
    _walk_equinox(eqx, model, "", layers)

    def rule(name, leaf):
      owner, _, attribute = name.rpartition("/")
      found = layers.get(owner)
      if found is None:
        return None, ""
      return (layer_axes.equinox_leaf(found[0], attribute, len(leaf.shape)),
              type(found[0]).__name__)

    return redraw.leaves_by_name(params, "", rule)

  sig = _signature(type(instance).__call__) if instance is not None else None
  return Adapter("equinox", label, init, apply, leaves, "", sig, make or instance)


def _walk_equinox(eqx, obj: Any, path: str, out: dict) -> None:
  """{path: (module, {})} for every eqx.Module inside `obj`, paths as pytree key paths read."""
  if isinstance(obj, eqx.Module):
    out[path] = (obj, {})
    for field in dataclasses.fields(obj):
      _walk_equinox(eqx, getattr(obj, field.name, None), f"{path}/{field.name}".lstrip("/"), out)
  elif isinstance(obj, (list, tuple)):
    for i, item in enumerate(obj):
      _walk_equinox(eqx, item, f"{path}/{i}".lstrip("/"), out)
  elif isinstance(obj, dict):
    for k, item in obj.items():
      _walk_equinox(eqx, item, f"{path}/{k}".lstrip("/"), out)


# ------------------------------------------------------------------------------------------------
# Pure functions

def _pure(init_fn: Callable, apply_fn: Callable, kwargs: dict) -> Adapter:
  label = f"apply_fn {getattr(apply_fn, '__name__', type(apply_fn).__name__)}"

  def init(key, x):
    del x
    return init_fn(key), {}

  def apply(params, state, x, *, rng=None, train=None, hook=None):
    del rng, train, hook
    return apply_fn(params, x, **kwargs), state

  def leaves(params, x):
    del x
    return redraw.leaves_by_name(params)

  return Adapter("pure", label, init, apply, leaves, "", _signature(apply_fn), apply_fn)


# ------------------------------------------------------------------------------------------------

def adapt(model: Any, *, model_kwargs: dict | None = None, train_kwargs: dict | None = None,
          eval_kwargs: dict | None = None, rng_names: Sequence[str] = ()) -> Adapter:
  """The `Adapter` of a linen module, an nnx class or factory `rngs -> module`, `equinox(make)`
  or an eqx.Module, or a pair (init_fn(key) -> params, apply_fn(params, x) -> out).

  model_kwargs: call keyword arguments for every mode (the probe's); train_kwargs / eval_kwargs:
  linen's per mode (they default to model_kwargs). ModelError (one line) for anything else or a
  keyword argument the model's __call__ does not take."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  base = dict(model_kwargs or {})
  if isinstance(model, nn.Module):
    train = {**base, **(train_kwargs or {})}
    evals = {**base, **(eval_kwargs or {})}
    adapter = _linen(model, train, evals, rng_names)
    adapter.check_kwargs(train, "train_kwargs" if train_kwargs else "model_kwargs")
    adapter.check_kwargs(evals, "eval_kwargs" if eval_kwargs else "model_kwargs")
    return adapter
  if train_kwargs or eval_kwargs:
    raise ModelError("train_kwargs / eval_kwargs are for flax.linen modules; nnx and Equinox "
                     "models switch modes themselves (.train()/.eval(), inference_mode)")
  if isinstance(model, Equinox):
    adapter = _equinox(model.make, None, base)
  elif isinstance(model, nnx.Module):
    raise ModelError(f"model is an nnx.Module instance ({type(model).__name__}); pass its class "
                     "or a factory rngs -> module, so that each seed builds its own")
  elif isinstance(model, type) and issubclass(model, nnx.Module):
    adapter = _nnx(lambda rngs: model(rngs=rngs), f"nnx class {model.__name__}", base, model)
  elif _is_equinox_module(model):
    adapter = _equinox(None, model, base)
  elif isinstance(model, tuple):
    if len(model) != 2 or not all(callable(f) for f in model):
      raise ModelError("a pure-function model must be a pair (init_fn(key) -> params, "
                       f"apply_fn(params, x) -> out); got a tuple of {len(model)}")
    adapter = _pure(*model, base)
  elif callable(model) and not isinstance(model, type):
    adapter = _nnx(model, f"nnx factory {getattr(model, '__name__', type(model).__name__)}",
                   base)
  else:
    raise ModelError("model must be a flax.linen.Module, a flax.nnx.Module class or factory "
                     "rngs -> module, initjax.models.equinox(make) or an eqx.Module, or a pair "
                     f"(init_fn, apply_fn); got {type(model).__name__}")
  adapter.check_kwargs(base, "model_kwargs")
  return adapter


def _is_equinox_module(obj: Any) -> bool:
  return any(c.__module__.startswith("equinox") and c.__name__ == "Module"
             for c in type(obj).__mro__)
