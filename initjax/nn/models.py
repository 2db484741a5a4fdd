"""A network as pure functions: what training and measurement need to know of a model.

A `Model` is a hashable record (a static argument of the compiled programs): its forward pass
`apply(params, x) -> out`, optionally the per-layer statistics recorded while it trains, and
the names of its top-level parameters that are stacked over layers (run with `lax.scan`).
Models that differ only in their parameter values share one compiled training program.

  * `mlp(activation)`: the book's MLP of `initjax.networks` (records Var[h_k], Var[dl/dh_k] and
    Var[dl/df_k] per layer).
  * `from_flax(module)`: any `flax.linen.Module` (parameters: its "params" collection).
  * `from_functions(apply, name)`: any pure `apply(params, x) -> out`.
  * `nnx_networks(make, keys_B)`: a `flax.nnx.Module` (class or factory `rngs -> module`) as a
    Model, and the parameters of B initializations of it.

Builders are cached, so asking twice for the same model returns the same record (and the same
compiled program).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from initjax.nn import activations, networks

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
  """
  name: str
  apply: Callable[[Params, jax.Array], jax.Array]
  layer_statistics: Callable[..., dict[str, jax.Array]] | None = None
  layer_index: tuple[tuple[str, int], ...] = ()
  stacked: tuple[str, ...] = ()

  def first_layer(self, statistic: str) -> int:
    return dict(self.layer_index).get(statistic, 0)


def _mlp_apply(params, x, activation):
  return networks.apply_mlp(params, x, activation)


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
    trace = networks.trace_mlp(params, x_NxD, activation, o)
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


def _flax_apply(params, x, module):
  return module.apply({"params": params}, x)


@functools.lru_cache(maxsize=64)
def from_flax(module) -> Model:
  """A `flax.linen.Module` as a Model: `apply(params, x) = module.apply({"params": params}, x)`
  (initialize a batch of networks with `jax.vmap(lambda k: module.init(k, x)["params"])`)."""
  return Model(name=type(module).__name__, apply=functools.partial(_flax_apply, module=module))


@functools.lru_cache(maxsize=64)
def from_functions(apply: Callable[[Params, jax.Array], jax.Array], name: str = "") -> Model:
  """Any pure forward pass `apply(params, x) -> out` as a Model."""
  return Model(name=name or getattr(apply, "__name__", "model"), apply=apply)


def _nnx_apply(params, x, graphdef, rest):
  from flax import nnx  # pylint: disable=import-outside-toplevel
  # Fresh copies of the other state, owned by the current trace (nnx refuses to touch Variables
  # of an outer trace, e.g. under jax.grad).
  return nnx.merge(graphdef, params, jax.tree.map(lambda v: v, rest))(x)


def nnx_networks(make: Any, keys_B: jax.Array) -> tuple[Model, Params]:
  """B initializations of a `flax.nnx.Module`, ready for `batch_training.run_networks`.

  Args:
    make: an nnx Module class (called as `make(rngs=nnx.Rngs(key))`) or a factory
      `rngs -> module`.
    keys_B: one PRNG key per network.

  Returns:
    (model, params_B): `model.apply(params, x)` merges one network's parameters into the
    module's graph and calls it; `params_B` is the `nnx.State` of the `nnx.Param` variables,
    stacked on a leading axis B. Other state (batch statistics, RNG counters) stays as the
    first key's module had it at initialization and is not trained.
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
  params_B = jax.vmap(params_of)(keys_B)
  model = Model(name=name, apply=functools.partial(_nnx_apply, graphdef=graphdef, rest=rest))
  return model, params_B
