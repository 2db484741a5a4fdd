"""A pure, jit-compiled training loop for the MLPs of `initjax.networks`, vmapped over networks.

One network's training is `train_network(params, data_key, learning_rate, data, spec)`: a
`lax.scan` over steps. Step i draws minibatch i from `data_key` (an epoch-wise permutation of
the device-resident training set: epoch e = i // (N // B) uses permutation(fold_in(key, e))),
records the minibatch loss of the current parameters (those after i updates) and applies update
i. Test metrics and per-layer statistics at step s are taken on the parameters after s updates.
Step S (= spec.steps) only records.

`train_networks` is the same function vmapped over a leading axis that carries
(initial parameters, data key, learning rate) and jit-compiled with the `TrainSpec` static: grid
points that differ only in initializer (any init with the same shapes: initialize outside,
stack), learning rate or seed share ONE compiled program.

Recorded on the device, returned once at the end (no host round-trips inside the loop):
  train_loss     (S+1,)   minibatch loss at every step (the caller subsamples for logging)
  test_loss      (E,)     on the whole test set, at `eval_steps(spec)` (0, every eval_every, S)
  test_accuracy  (E,)     classification only
  var_h          (T, K)   Var[h_k], k = 1..K, pooled over units and examples,
  var_dl_dh      (T, K)   Var[dl/dh_k], k = 1..K,
  var_dl_df      (T, K)   Var[dl/df_k], k = 0..K-1, at `stats_steps(spec)` (0, every
                          stats_every, S), on the first `stats_batch_size` training examples
                          with the training loss (mean over those examples)
  stats_loss     (T,)     the training loss on that fixed batch
  diverged_step  ()       first step whose minibatch loss is NaN/inf, -1 if never

Divergence: from its diverged step on, a network's parameters and optimizer state are frozen
(`jnp.where`, per network, so the other networks of a vmap are unaffected) and every metric it
recorded at or after that step is NaN.

Losses: softmax cross-entropy for classification, mean squared error (mean over examples and
outputs) for regression; both are means over the batch, so dl/dh_k carries a factor
1/(batch size).

`run_networks` spreads the network axis over the local devices (`initjax.parallel`) and returns
NumPy arrays.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from initjax import parallel
from initjax.activations import check_activation
from initjax.errors import check_choice
from initjax.networks import Params, apply_mlp, init_mlp, trace_mlp
from initjax.optimizers import check_optimizer, get_optimizer

TASKS = ("classification", "regression")


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """Everything about a training run that is the same for every network of one compiled program.

  Hashable, so it is a static argument of the jitted functions.
  """
  activation: str = "relu"
  optimizer: str = "momentum"
  steps: int = 1000
  batch_size: int = 100
  task: str = "classification"
  eval_every: int = 100
  stats_every: int = 250
  stats_batch_size: int = 256

  def __post_init__(self):
    check_activation(self.activation)
    check_optimizer(self.optimizer)
    check_choice("task", self.task, TASKS)
    for name in ("steps", "batch_size", "eval_every", "stats_every", "stats_batch_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")


def _schedule(steps: int, every: int) -> np.ndarray:
  return np.array(sorted(set(range(0, steps + 1, every)) | {steps}), np.int32)


def eval_steps(spec: TrainSpec) -> np.ndarray:
  """Steps at which test loss/accuracy are recorded: 0, eval_every, 2 eval_every, ..., and S."""
  return _schedule(spec.steps, spec.eval_every)


def stats_steps(spec: TrainSpec) -> np.ndarray:
  """Steps at which per-layer statistics are recorded: 0, stats_every, ..., and S."""
  return _schedule(spec.steps, spec.stats_every)


def batch_loss(f_out_NxO: jax.Array, y_N: jax.Array, task: str) -> jax.Array:
  """Mean softmax cross-entropy (integer labels) or mean squared error over the batch."""
  if task == "classification":
    return optax.softmax_cross_entropy_with_integer_labels(f_out_NxO, y_N).mean()
  return jnp.mean((f_out_NxO - y_N) ** 2)


def layer_statistics(params: Params, x_NxD: jax.Array, y_N: jax.Array, activation: str,
                     task: str) -> dict[str, jax.Array]:
  """Var[h_k], Var[dl/dh_k] (k = 1..K) and Var[dl/df_k] (k = 0..K-1), each pooled over units and
  examples, with the training loss `batch_loss` on the batch (x, y).

  dl/df_k and dl/dh_k are exact: gradients of the loss with respect to zero offsets added to
  every f_k and h_k in `trace_mlp` (as `initjax.gradients.layer_gradients`).
  """
  depth = params["omega_hidden"].shape[0] + 1
  n, width = x_NxD.shape[0], params["omega_0"].shape[0]
  zeros_KxNxD = jnp.zeros((depth, n, width), x_NxD.dtype)
  offsets = {"f": zeros_KxNxD, "h": zeros_KxNxD,
             "f_out": jnp.zeros((n, params["omega_out"].shape[0]), x_NxD.dtype)}

  def loss_fn(o):
    trace = trace_mlp(params, x_NxD, activation, o)
    return batch_loss(trace["f_out"], y_N, task), trace["h"]

  (loss, h_KxNxD), g = jax.value_and_grad(loss_fn, has_aux=True)(offsets)
  return {"var_h": jnp.var(h_KxNxD, axis=(1, 2)), "var_dl_dh": jnp.var(g["h"], axis=(1, 2)),
          "var_dl_df": jnp.var(g["f"], axis=(1, 2)), "loss": loss}


def evaluate(params: Params, x_NxD: jax.Array, y_N: jax.Array, activation: str,
             task: str) -> dict[str, jax.Array]:
  """Loss (and accuracy, for classification) of the network on a whole data set."""
  f_out = apply_mlp(params, x_NxD, activation)
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

  (Reference definition; the training loop computes each epoch's permutation once, not per step.)
  """
  steps_per_epoch = n_train // batch_size
  perm_N = epoch_permutation(data_key, step // steps_per_epoch, n_train)
  return jax.lax.dynamic_slice_in_dim(perm_N, (step % steps_per_epoch) * batch_size, batch_size)


def record_chunk(spec: TrainSpec) -> int:
  """Steps per chunk of the training loop: gcd(eval_every, stats_every, steps), so that every
  recording step is a chunk boundary and the per-step body carries no recording branches."""
  return math.gcd(math.gcd(spec.eval_every, spec.stats_every), spec.steps)


class TrainState(NamedTuple):
  """What one network carries from step to step (`train_step`)."""
  params: Params
  opt_state: Any
  perm_N: jax.Array          # the current epoch's order of the training examples
  diverged_step: jax.Array   # first step with a non-finite loss, -1 if none
  records: dict              # the recorded metrics so far (`init_records`)


def init_records(spec: TrainSpec, depth: int, dtype) -> dict[str, jax.Array]:
  """The record arrays of one network, NaN until their step is recorded."""
  n_eval, n_stats = eval_steps(spec).shape[0], stats_steps(spec).shape[0]
  records = {"test_loss": jnp.full((n_eval,), jnp.nan, dtype),
             "var_h": jnp.full((n_stats, depth), jnp.nan, dtype),
             "var_dl_dh": jnp.full((n_stats, depth), jnp.nan, dtype),
             "var_dl_df": jnp.full((n_stats, depth), jnp.nan, dtype),
             "stats_loss": jnp.full((n_stats,), jnp.nan, dtype)}
  if spec.task == "classification":
    records["test_accuracy"] = jnp.full((n_eval,), jnp.nan, dtype)
  return records


def record_evaluation(records: dict, params: Params, step, data: dict, spec: TrainSpec) -> dict:
  """Writes the test metrics of `params` into the slot of `step` in `eval_steps(spec)`."""
  slot = jnp.argmax(jnp.asarray(eval_steps(spec)) == step)
  for name, value in evaluate(params, data["x_test"], data["y_test"], spec.activation,
                              spec.task).items():
    records["test_" + name] = records["test_" + name].at[slot].set(value.astype(
        data["x_train"].dtype))
  return records


def record_layer_statistics(records: dict, params: Params, step, x_stats, y_stats,
                            spec: TrainSpec) -> dict:
  """Writes the per-layer statistics on the statistics batch into the slot of `step`."""
  slot = jnp.argmax(jnp.asarray(stats_steps(spec)) == step)
  stats = layer_statistics(params, x_stats, y_stats, spec.activation, spec.task)
  stats["stats_loss"] = stats.pop("loss")
  for name, value in stats.items():
    records[name] = records[name].at[slot].set(value.astype(x_stats.dtype))
  return records


def record(records: dict, params: Params, step, data: dict, stats_batch: tuple,
           spec: TrainSpec) -> dict:
  """Records whatever is scheduled at `step` (test metrics, per-layer statistics, or neither)."""
  records = jax.lax.cond(jnp.any(jnp.asarray(eval_steps(spec)) == step),
                         lambda r, p, s: record_evaluation(r, p, s, data, spec),
                         lambda r, *_: r, records, params, step)
  return jax.lax.cond(jnp.any(jnp.asarray(stats_steps(spec)) == step),
                      lambda r, p, s: record_layer_statistics(r, p, s, *stats_batch, spec),
                      lambda r, *_: r, records, params, step)


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


def minibatch_loss(params: Params, x, y, spec: TrainSpec) -> jax.Array:
  return batch_loss(apply_mlp(params, x, spec.activation), y, spec.task)


def train_step(state: TrainState, step, *, data_key, optimizer, data: dict,
               spec: TrainSpec) -> tuple[TrainState, jax.Array]:
  """One update on minibatch `step`; returns the new state and the minibatch loss (of the
  parameters before the update). From its first non-finite loss on, a network's parameters and
  optimizer state are frozen (`jnp.where`, per network: the others of a vmap are unaffected)."""
  perm_N = epoch_order(state.perm_N, data_key, step, data["x_train"].shape[0], spec)
  loss, grads = jax.value_and_grad(minibatch_loss)(state.params,
                                                   *minibatch(data, perm_N, step, spec), spec)
  diverged_step = jnp.where((state.diverged_step < 0) & ~jnp.isfinite(loss), step,
                            state.diverged_step)
  updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  keep = functools.partial(jnp.where, diverged_step < 0)  # frozen from the diverged step on
  return TrainState(jax.tree.map(keep, new_params, state.params),
                    jax.tree.map(keep, new_opt_state, state.opt_state), perm_N, diverged_step,
                    state.records), loss


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


def train_network(params: Params, data_key: jax.Array, learning_rate: jax.Array,
                  data: dict[str, jax.Array], spec: TrainSpec) -> dict[str, jax.Array]:
  """Trains one network for spec.steps steps; returns the records listed in the module docstring.

  The loop is a scan over chunks of `record_chunk(spec)` steps: `record` at the chunk's first
  step (on the parameters after that many updates), then a scan of `train_step` over its
  steps. The final step S only records (its minibatch loss comes from a forward pass).

  Args:
    params: initial parameters (`init_mlp`).
    data_key: PRNG key of the minibatch order.
    learning_rate: a scalar (may be traced: vmapping over it shares one compiled program).
    data: x_train, y_train, x_test, y_test device arrays (`initjax.data.device_arrays`).
    spec: the static `TrainSpec`.
  """
  x_train, y_train = data["x_train"], data["y_train"]
  n_train = x_train.shape[0]
  if spec.batch_size > n_train:
    raise ValueError(f"batch_size {spec.batch_size} exceeds the {n_train} training examples")
  stats_batch = (x_train[:spec.stats_batch_size], y_train[:spec.stats_batch_size])
  depth = params["omega_hidden"].shape[0] + 1
  optimizer = get_optimizer(spec.optimizer, learning_rate)
  chunk = record_chunk(spec)
  step_fn = functools.partial(train_step, data_key=data_key, optimizer=optimizer, data=data,
                              spec=spec)

  def chunk_fn(state: TrainState, c):
    state = state._replace(records=record(state.records, state.params, c * chunk, data,
                                          stats_batch, spec))
    return jax.lax.scan(step_fn, state, c * chunk + jnp.arange(chunk, dtype=jnp.int32))

  state = TrainState(params, optimizer.init(params), jnp.zeros((n_train,), jnp.int32),
                     jnp.array(-1, jnp.int32), init_records(spec, depth, x_train.dtype))
  state, loss_CxG = jax.lax.scan(chunk_fn, state,
                                 jnp.arange(spec.steps // chunk, dtype=jnp.int32))

  # Step S: record, and the minibatch loss (no update).
  final = jnp.array(spec.steps, jnp.int32)
  perm_N = epoch_order(state.perm_N, data_key, final, n_train, spec)
  loss_final = minibatch_loss(state.params, *minibatch(data, perm_N, final, spec), spec)
  diverged_step = jnp.where((state.diverged_step < 0) & ~jnp.isfinite(loss_final), final,
                            state.diverged_step)
  records = record(state.records, state.params, final, data, stats_batch, spec)
  train_loss = jnp.concatenate([loss_CxG.reshape(-1), loss_final[None]])
  return mask_after_divergence(records, train_loss, diverged_step, spec)


train_network_jit = jax.jit(train_network, static_argnames=("spec",))
train_network_jit.__doc__ = "`train_network`, jit-compiled (the per-network, non-vmapped path)."


@functools.partial(jax.jit, static_argnames=("spec",))
def train_networks(params_B: Params, data_keys_B: jax.Array, learning_rates_B: jax.Array,
                   data: dict[str, jax.Array], spec: TrainSpec) -> dict[str, jax.Array]:
  """`train_network` vmapped over B networks: leading axis B on params, keys and learning rates.

  Every output gains a leading axis B. One compilation per (spec, shapes): initializers,
  learning rates and seeds are data.
  """
  return jax.vmap(lambda p, k, lr: train_network(p, k, lr, data, spec))(
      params_B, data_keys_B, learning_rates_B)


@functools.lru_cache(maxsize=32)
def _sharded_train(spec: TrainSpec, devices: tuple) -> Any:
  """`train_networks` over `devices`: each device trains its block of the network axis."""
  def block(batch, data):
    return jax.vmap(lambda p, k, lr: train_network(p, k, lr, data, spec))(*batch)
  return parallel.sharded(block, parallel.make_mesh(devices), replicated=(1,))


def run_networks(params_B: Params, data_keys_B: jax.Array, learning_rates_B: jax.Array,
                 data: dict[str, jax.Array], spec: TrainSpec,
                 devices: Sequence[Any] | None = None,
                 chunk: int | None = None) -> dict[str, np.ndarray]:
  """`train_networks` with the network axis spread over `devices` (default all local devices),
  returned as NumPy arrays with leading axis B.

  With `chunk` (networks per call) smaller than B, the networks are trained `chunk` at a time:
  every call has the same shape (the last one is padded), so one compiled program serves all of
  them (`parallel.run_in_rounds`). Networks never interact: the padding (repeats of the last
  network) is dropped, and each network's results do not depend on its neighbours.
  """
  devices = tuple(devices or jax.local_devices())
  lrs_B = jnp.asarray(learning_rates_B, jnp.float32)
  b = lrs_B.shape[0]
  size = min(chunk or b, b)
  block = -(-size // len(devices))
  mesh = parallel.make_mesh(devices)
  return parallel.run_in_rounds(_sharded_train(spec, devices), (params_B, data_keys_B, lrs_B),
                                (parallel.replicate(data, mesh),), block=block, mesh=mesh)


def init_networks(keys_B: jax.Array, weight_init: Any, *, input_dim: int, width: int, depth: int,
                  output_dim: int) -> Params:
  """B networks from B keys (`init_mlp` per key), stacked on a leading axis.

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
