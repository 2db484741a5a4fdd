"""A pure, jit-compiled Optax training loop for any `initjax.models.Model`, vmapped over networks.

One network's training, written for one network: `init_state`, then `train_step` for every
step, `record` at the recording steps, and `finish`. Step i draws minibatch i from the network's
data key (an epoch-wise permutation of the device-resident training set: epoch e = i // (N // B)
uses permutation(fold_in(key, e))), records the minibatch loss of the current parameters (those
after i updates) and applies update i. Test metrics and per-layer statistics at step s are taken
on the parameters after s updates. Step S (= spec.steps) only records.

`run_networks` trains a batch of networks: the per-network functions vmapped over a leading axis
that carries (initial parameters, data key, learning rate), spread over the local devices in
blocks of a fixed number of networks per device (`initjax.parallel`), and run in segments of
steps between which the state can be checkpointed (`initjax.checkpoints`). Networks that
differ only in initializer (any init with the same shapes: initialize outside, stack), learning
rate or seed share one compiled program; a network's results depend on its block size, never on
the number of devices or on where the run was interrupted.

Recorded on the device, returned once at the end:
  train_loss     (S+1,)   minibatch loss at every step
  test_loss      (E,)     on the whole test set, at `eval_steps(spec)` (0, every eval_every, S)
  test_accuracy  (E,)     classification only
  <statistic>    (T, L)   the model's per-layer statistics (`Model.layer_statistics`; the MLP:
                          var_h, var_dl_dh, var_dl_df) at `stats_steps(spec)` (0, every
                          stats_every, S) on the first `stats_batch_size` training examples
  stats_loss     (T,)     the training loss on that fixed batch
  diverged_step  ()       first step whose minibatch loss is NaN/inf, -1 if never

Divergence: from its diverged step on, a network's parameters and optimizer state are frozen
(`jnp.where`, per network, so the other networks of a vmap are unaffected) and every metric it
recorded at or after that step is NaN.

Losses: softmax cross-entropy for classification, mean squared error (mean over examples and
outputs) for regression; both are means over the batch.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from initjax.core.errors import check_choice
from initjax.nn.adapters import RNG_STREAM
from initjax.nn.models import Model, forward_eval, forward_train
from initjax.nn.networks import Params, init_mlp
from initjax.nn.redraw import path_name
from initjax.training.optimizers import check_optimizer, get_optimizer
from initjax.training.parametrization import scale_updates

TASKS = ("classification", "regression")


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """Everything about a training run that is the same for every network of one compiled program.

  Hashable, so it is a static argument of the jitted functions.
  """
  optimizer: str = "momentum"
  steps: int = 1000
  batch_size: int = 100
  task: str = "classification"
  eval_every: int = 100
  stats_every: int = 250
  stats_batch_size: int = 256
  # ((parameter path, multiplier), ...): per-leaf learning-rate multipliers chained after the
  # optimizer (`initjax.training.parametrization`, e.g. muP's); None: one learning rate.
  update_scales: tuple[tuple[str, float], ...] | None = None

  def __post_init__(self):
    check_optimizer(self.optimizer)
    check_choice("task", self.task, TASKS)
    for name in ("steps", "batch_size", "eval_every", "stats_every", "stats_batch_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")


def spec_optimizer(spec: TrainSpec, learning_rate,
                   params: Params) -> optax.GradientTransformation:
  """The spec's optimizer, with its per-leaf learning-rate multipliers (`update_scales`) where
  it has them (a KeyError names a parameter that has none)."""
  opt = get_optimizer(spec.optimizer, learning_rate)
  if spec.update_scales is None:
    return opt
  scales = dict(spec.update_scales)
  tree = jax.tree_util.tree_map_with_path(lambda path, _: scales[path_name(path)], params)
  return optax.chain(opt, scale_updates(tree))


def _schedule(steps: int, every: int) -> np.ndarray:
  return np.array(sorted(set(range(0, steps + 1, every)) | {steps}), np.int32)


def eval_steps(spec: TrainSpec) -> np.ndarray:
  """Steps at which test loss/accuracy are recorded: 0, eval_every, 2 eval_every, ..., and S."""
  return _schedule(spec.steps, spec.eval_every)


def stats_steps(spec: TrainSpec) -> np.ndarray:
  """Steps at which per-layer statistics are recorded: 0, stats_every, ..., and S."""
  return _schedule(spec.steps, spec.stats_every)


def record_chunk(spec: TrainSpec) -> int:
  """Steps per chunk of the training loop: gcd(eval_every, stats_every, steps), so that every
  recording step is a chunk boundary and the per-step body carries no recording branches."""
  return math.gcd(math.gcd(spec.eval_every, spec.stats_every), spec.steps)


def batch_loss(f_out_NxO: jax.Array, y_N: jax.Array, task: str) -> jax.Array:
  """Mean softmax cross-entropy (integer labels) or mean squared error over the batch."""
  if task == "classification":
    return optax.softmax_cross_entropy_with_integer_labels(f_out_NxO, y_N).mean()
  return jnp.mean((f_out_NxO - y_N) ** 2)


def evaluate(model: Model, params: Params, x_NxD: jax.Array, y_N: jax.Array,
             task: str, model_state: Any = ()) -> dict[str, jax.Array]:
  """Loss (and accuracy, for classification) of the network on a whole data set, in eval mode
  (a stateful model's running statistics, no dropout)."""
  f_out = forward_eval(model, params, model_state, x_NxD)
  out = {"loss": batch_loss(f_out, y_N, task)}
  if task == "classification":
    out["accuracy"] = jnp.mean(jnp.argmax(f_out, axis=-1) == y_N)
  return out


def epoch_permutation(data_key: jax.Array, epoch: jax.Array, n_train: int) -> jax.Array:
  """The order in which epoch `epoch` visits the N training examples."""
  return jax.random.permutation(jax.random.fold_in(data_key, epoch), n_train)


def minibatch_indices(data_key: jax.Array, step: jax.Array, n_train: int,
                      batch_size: int) -> jax.Array:
  """Indices of minibatch `step`: slice (step mod N//B) of the permutation of epoch step // (N//B).

  (Reference definition; the training loop draws each epoch's permutation once, not per step.)
  """
  steps_per_epoch = n_train // batch_size
  perm_N = epoch_permutation(data_key, step // steps_per_epoch, n_train)
  return jax.lax.dynamic_slice_in_dim(perm_N, (step % steps_per_epoch) * batch_size, batch_size)


# ------------------------------------------------------------------------------------------------
# One network.

class TrainState(NamedTuple):
  """What one network carries from step to step (`train_step`)."""
  params: Params
  opt_state: Any
  perm_N: jax.Array          # the current epoch's order of the training examples
  diverged_step: jax.Array   # first step with a non-finite loss, -1 if none
  records: dict              # the recorded metrics so far (`init_records`)
  model_state: Any = ()      # a stateful model's state (batch statistics, RNG state)


def step_rng(data_key: jax.Array, step) -> jax.Array:
  """The forward-pass randomness (dropout) of a network's step: folded from its key and the
  step, so that every network and every step draws its own."""
  return jax.random.fold_in(jax.random.fold_in(data_key, RNG_STREAM), step)


def _stats_batch(data: dict, spec: TrainSpec):
  return data["x_train"][:spec.stats_batch_size], data["y_train"][:spec.stats_batch_size]


def layer_statistics(model: Model, params: Params, x, y, spec: TrainSpec,
                     model_state: Any = ()) -> dict[str, jax.Array]:
  """The model's per-layer statistics and the loss on (x, y) ({"loss"} alone without any)."""
  loss_fn = functools.partial(batch_loss, task=spec.task)
  if model.layer_statistics is None:
    return {"loss": loss_fn(forward_eval(model, params, model_state, x), y)}
  return model.layer_statistics(params, x, y, loss_fn)


def init_records(model: Model, params: Params, data: dict, spec: TrainSpec,
                 model_state: Any = ()) -> dict:
  """The record arrays of one network, NaN until their step is recorded."""
  dtype = data["x_train"].dtype
  n_eval, n_stats = eval_steps(spec).shape[0], stats_steps(spec).shape[0]
  shapes = jax.eval_shape(lambda p, s, x, y: layer_statistics(model, p, x, y, spec, s), params,
                          model_state, *_stats_batch(data, spec))
  records = {"test_loss": jnp.full((n_eval,), jnp.nan, dtype),
             "stats_loss": jnp.full((n_stats,), jnp.nan, dtype)}
  for name, shape in shapes.items():
    if name != "loss":
      records[name] = jnp.full((n_stats,) + shape.shape, jnp.nan, dtype)
  if spec.task == "classification":
    records["test_accuracy"] = jnp.full((n_eval,), jnp.nan, dtype)
  return records


def init_state(model: Model, params: Params, learning_rate, data: dict,
               spec: TrainSpec, model_state: Any = ()) -> TrainState:
  """A network before its first step (`model_state`: a stateful model's initial state)."""
  if spec.batch_size > data["x_train"].shape[0]:
    raise ValueError(f"batch_size {spec.batch_size} exceeds the {data['x_train'].shape[0]} "
                     "training examples")
  opt = spec_optimizer(spec, learning_rate, params)
  return TrainState(params, opt.init(params),
                    jnp.zeros((data["x_train"].shape[0],), jnp.int32),
                    jnp.array(-1, jnp.int32), init_records(model, params, data, spec, model_state),
                    model_state)


def _write(records: dict, values: dict, slot, dtype) -> dict:
  return {**records, **{k: records[k].at[slot].set(v.astype(dtype)) for k, v in values.items()}}


def record(records: dict, params: Params, step, model: Model, data: dict,
           spec: TrainSpec, model_state: Any = ()) -> dict:
  """Records whatever is scheduled at `step`: test metrics and/or per-layer statistics."""
  dtype = data["x_train"].dtype
  eval_at, stats_at = jnp.asarray(eval_steps(spec)), jnp.asarray(stats_steps(spec))

  def evaluation(r):
    metrics = evaluate(model, params, data["x_test"], data["y_test"], spec.task, model_state)
    return _write(r, {"test_" + k: v for k, v in metrics.items()},
                  jnp.argmax(eval_at == step), dtype)

  def statistics(r):
    stats = layer_statistics(model, params, *_stats_batch(data, spec), spec, model_state)
    stats["stats_loss"] = stats.pop("loss")
    return _write(r, stats, jnp.argmax(stats_at == step), dtype)

  records = jax.lax.cond(jnp.any(eval_at == step), evaluation, lambda r: r, records)
  return jax.lax.cond(jnp.any(stats_at == step), statistics, lambda r: r, records)


def minibatch(data: dict, perm_N: jax.Array, step, spec: TrainSpec):
  """(x, y) of minibatch `step`: its slice of the epoch's permutation `perm_N`."""
  steps_per_epoch = data["x_train"].shape[0] // spec.batch_size
  idx_B = jax.lax.dynamic_slice_in_dim(perm_N, (step % steps_per_epoch) * spec.batch_size,
                                       spec.batch_size)
  return data["x_train"][idx_B], data["y_train"][idx_B]


def epoch_order(perm_N: jax.Array, data_key: jax.Array, step, n_train: int,
                spec: TrainSpec) -> jax.Array:
  """The permutation in use at `step`: a new epoch's at its first step, else `perm_N`.

  (Drawn only at the first step of an epoch: sorting N keys every step would cost as much as
  the training of a small network.)"""
  steps_per_epoch = n_train // spec.batch_size
  return jax.lax.cond(step % steps_per_epoch == 0,
                      lambda: epoch_permutation(data_key, step // steps_per_epoch, n_train),
                      lambda: perm_N)


def minibatch_loss(params: Params, x, y, model: Model, spec: TrainSpec, model_state: Any = (),
                   rng: jax.Array | None = None) -> jax.Array:
  """The training loss of a minibatch (train mode: dropout on, batch statistics)."""
  return loss_and_state(params, x, y, model, spec, model_state, rng)[0]


def loss_and_state(params: Params, x, y, model: Model, spec: TrainSpec, model_state: Any = (),
                   rng: jax.Array | None = None) -> tuple[jax.Array, Any]:
  """(the training loss of a minibatch, the model state after its forward pass)."""
  out, new_state = forward_train(model, params, model_state, x, rng)
  return batch_loss(out, y, spec.task), new_state


def train_step(state: TrainState, step, learning_rate, data_key, *, model: Model, data: dict,
               spec: TrainSpec) -> tuple[TrainState, jax.Array]:
  """One update on minibatch `step`; returns the new state and the minibatch loss (of the
  parameters before the update). From its first non-finite loss on, a network's parameters and
  optimizer state are frozen (`jnp.where`, per network: the others of a vmap are unaffected)."""
  opt = spec_optimizer(spec, learning_rate, state.params)
  perm_N = epoch_order(state.perm_N, data_key, step, data["x_train"].shape[0], spec)
  rng = step_rng(data_key, step) if model.stateful else None
  (loss, new_model_state), grads = jax.value_and_grad(loss_and_state, has_aux=True)(
      state.params, *minibatch(data, perm_N, step, spec), model, spec, state.model_state, rng)
  diverged_step = jnp.where((state.diverged_step < 0) & ~jnp.isfinite(loss), step,
                            state.diverged_step)
  updates, new_opt_state = opt.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  keep = functools.partial(jnp.where, diverged_step < 0)  # frozen from the diverged step on
  return TrainState(jax.tree.map(keep, new_params, state.params),
                    jax.tree.map(keep, new_opt_state, state.opt_state), perm_N, diverged_step,
                    state.records, jax.tree.map(keep, new_model_state, state.model_state)), loss


def train_chunk(state: TrainState, chunk, learning_rate, data_key, *, model: Model, data: dict,
                spec: TrainSpec) -> tuple[TrainState, jax.Array]:
  """`record` at the chunk's first step, then `train_step` over its `record_chunk(spec)` steps;
  returns the state and the chunk's minibatch losses."""
  size = record_chunk(spec)
  state = state._replace(records=record(state.records, state.params, chunk * size, model, data,
                                        spec, state.model_state))
  step_fn = functools.partial(train_step, learning_rate=learning_rate, data_key=data_key,
                              model=model, data=data, spec=spec)
  return jax.lax.scan(step_fn, state, chunk * size + jnp.arange(size, dtype=jnp.int32))


def mask_after_divergence(records: dict, train_loss_S, diverged_step, spec: TrainSpec) -> dict:
  """The outputs, with everything recorded at or after the diverged step set to NaN."""
  def after(steps_T):
    return (diverged_step >= 0) & (steps_T >= diverged_step)

  mask_eval, mask_stats = after(jnp.asarray(eval_steps(spec))), after(
      jnp.asarray(stats_steps(spec)))
  out = {"train_loss": jnp.where(after(jnp.arange(spec.steps + 1)), jnp.nan, train_loss_S),
         "diverged_step": diverged_step}
  for name, value in records.items():
    mask = mask_eval if name.startswith("test_") else mask_stats
    out[name] = jnp.where(mask.reshape(mask.shape + (1,) * (value.ndim - 1)), jnp.nan, value)
  return out


def finish(state: TrainState, losses_S, data_key, *, model: Model, data: dict,
           spec: TrainSpec) -> dict[str, jax.Array]:
  """Step S: its records and minibatch loss (no update); then the outputs, masked after a
  divergence. `losses_S` are the minibatch losses of steps 0..S-1."""
  n_train = data["x_train"].shape[0]
  final = jnp.array(spec.steps, jnp.int32)
  perm_N = epoch_order(state.perm_N, data_key, final, n_train, spec)
  rng = step_rng(data_key, final) if model.stateful else None
  loss_final = minibatch_loss(state.params, *minibatch(data, perm_N, final, spec), model, spec,
                              state.model_state, rng)
  diverged_step = jnp.where((state.diverged_step < 0) & ~jnp.isfinite(loss_final), final,
                            state.diverged_step)
  records = record(state.records, state.params, final, model, data, spec, state.model_state)
  train_loss = jnp.concatenate([losses_S, loss_final[None]])
  return mask_after_divergence(records, train_loss, diverged_step, spec)


def train_network(model: Model, params: Params, data_key: jax.Array, learning_rate,
                  data: dict[str, jax.Array], spec: TrainSpec,
                  model_state: Any = ()) -> dict[str, jax.Array]:
  """Trains one network for spec.steps steps; returns the records listed in the module docstring.

  Args:
    model: the network's functions (`initjax.models`).
    params: initial parameters.
    data_key: PRNG key of the minibatch order.
    learning_rate: a scalar (may be traced: vmapping over it shares one compiled program).
    data: x_train, y_train, x_test, y_test device arrays (`initjax.data.device_arrays`).
    spec: the static `TrainSpec`.
    model_state: a stateful model's initial state (`initjax.models.networks`).
  """
  state = init_state(model, params, learning_rate, data, spec, model_state)
  chunk_fn = functools.partial(train_chunk, learning_rate=learning_rate, data_key=data_key,
                               model=model, data=data, spec=spec)
  state, loss_CxG = jax.lax.scan(chunk_fn, state,
                                 jnp.arange(spec.steps // record_chunk(spec), dtype=jnp.int32))
  return finish(state, loss_CxG.reshape(-1), data_key, model=model, data=data, spec=spec)


train_network_jit = jax.jit(train_network, static_argnames=("model", "spec"))
train_network_jit.__doc__ = "`train_network`, jit-compiled (the per-network, non-vmapped path)."


@functools.partial(jax.jit, static_argnames=("model", "spec"))
def train_networks(model: Model, params_B: Params, data_keys_B: jax.Array,
                   learning_rates_B: jax.Array, data: dict[str, jax.Array],
                   spec: TrainSpec) -> dict[str, jax.Array]:
  """`train_network` vmapped over B networks (leading axis B on params, keys and learning
  rates), on one device; `run_networks` spreads the networks over devices and checkpoints."""
  return jax.vmap(lambda p, k, lr: train_network(model, p, k, lr, data, spec))(
      params_B, data_keys_B, learning_rates_B)


def init_networks(keys_B: jax.Array, weight_init: Any, *, input_dim: int, width: int, depth: int,
                  output_dim: int) -> Params:
  """B book MLPs from B keys (`init_mlp` per key), stacked on a leading axis.

  Eager and one network at a time on purpose: each random primitive then compiles once per
  shape and is reused by every initializer and seed, whereas a jitted, vmapped init compiles the
  whole threefry-heavy program per initializer (seconds each on a CPU).
  """
  return stack_params([init_mlp(k, input_dim=input_dim, width=width, depth=depth,
                                output_dim=output_dim, weight_init=weight_init)
                       for k in keys_B])


def stack_params(params_list: list[Params]) -> Params:
  """Stacks same-shaped parameter pytrees on a new leading axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *params_list)
