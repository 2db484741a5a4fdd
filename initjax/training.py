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

`run_networks` shards the network axis over the local devices (`use_cpu_cores` makes one XLA
device per CPU core: XLA runs one program on one core) and returns NumPy arrays.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from initjax.activations import check_activation
from initjax.networks import Params, apply_mlp, init_mlp, trace_mlp
from initjax.optimizers import check_optimizer, get_optimizer

TASKS = ("classification", "regression")

# "Stalled": the final training loss fell by less than STALL_TOLERANCE (1%) relative to a
# reference: ln(num_classes) for classification (the loss of the uniform prediction, where a
# deep network whose signal vanished sits), the initial training loss for regression.
STALL_TOLERANCE = 0.01
# The final training loss is the mean minibatch loss over the last 5% of the steps (at least one
# step, always including the final step S), which averages out minibatch noise.
FINAL_LOSS_FRACTION = 0.05
# Steps to reach a loss threshold are read off a trailing mean of this many minibatch losses.
THRESHOLD_WINDOW = 10


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
    if self.task not in TASKS:
      raise ValueError(f"Unknown task {self.task!r}; valid choices: {', '.join(TASKS)}")
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


def train_network(params: Params, data_key: jax.Array, learning_rate: jax.Array,
                  data: dict[str, jax.Array], spec: TrainSpec) -> dict[str, jax.Array]:
  """Trains one network for spec.steps steps; returns the records listed in the module docstring.

  The loop is a scan over chunks of `record_chunk(spec)` steps: records at the chunk's first
  step (on the parameters after that many updates), then a scan over its training steps. The
  final step S only records (its minibatch loss comes from a forward pass).

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
  x_stats, y_stats = x_train[:spec.stats_batch_size], y_train[:spec.stats_batch_size]
  depth = params["omega_hidden"].shape[0] + 1
  optimizer = get_optimizer(spec.optimizer, learning_rate)
  eval_np, stats_np = eval_steps(spec), stats_steps(spec)
  eval_at, stats_at = jnp.asarray(eval_np), jnp.asarray(stats_np)
  dtype = x_train.dtype
  steps_per_epoch = n_train // spec.batch_size
  chunk = record_chunk(spec)
  n_chunks = spec.steps // chunk

  def loss_of(p, x, y):
    return batch_loss(apply_mlp(p, x, spec.activation), y, spec.task)

  def minibatch(perm_N, step):
    idx_B = jax.lax.dynamic_slice_in_dim(perm_N, (step % steps_per_epoch) * spec.batch_size,
                                         spec.batch_size)
    return x_train[idx_B], y_train[idx_B]

  def record_eval(records, p, step):
    slot = jnp.argmax(eval_at == step)
    for name, value in evaluate(p, data["x_test"], data["y_test"], spec.activation,
                                spec.task).items():
      records["test_" + name] = records["test_" + name].at[slot].set(value.astype(dtype))
    return records

  def record_stats(records, p, step):
    slot = jnp.argmax(stats_at == step)
    stats = layer_statistics(p, x_stats, y_stats, spec.activation, spec.task)
    stats["stats_loss"] = stats.pop("loss")
    for name, value in stats.items():
      records[name] = records[name].at[slot].set(value.astype(dtype))
    return records

  def record(records, p, step):
    records = jax.lax.cond(jnp.any(eval_at == step), record_eval, lambda r, *_: r,
                           records, p, step)
    return jax.lax.cond(jnp.any(stats_at == step), record_stats, lambda r, *_: r,
                        records, p, step)

  def train_step(carry, step):
    p, opt_state, perm_N, diverged_step, records = carry
    # A new epoch's permutation only at its first step: sorting N keys every step would cost as
    # much as the training of a small network.
    perm_N = jax.lax.cond(step % steps_per_epoch == 0,
                          lambda: epoch_permutation(data_key, step // steps_per_epoch, n_train),
                          lambda: perm_N)
    loss, grads = jax.value_and_grad(loss_of)(p, *minibatch(perm_N, step))
    diverged_step = jnp.where((diverged_step < 0) & ~jnp.isfinite(loss), step, diverged_step)
    updates, new_opt_state = optimizer.update(grads, opt_state, p)
    new_p = optax.apply_updates(p, updates)
    keep = functools.partial(jnp.where, diverged_step < 0)  # frozen from the diverged step on
    p = jax.tree.map(keep, new_p, p)
    opt_state = jax.tree.map(keep, new_opt_state, opt_state)
    return (p, opt_state, perm_N, diverged_step, records), loss

  def chunk_fn(carry, c):
    p, opt_state, perm_N, diverged_step, records = carry
    records = record(records, p, c * chunk)
    return jax.lax.scan(train_step, (p, opt_state, perm_N, diverged_step, records),
                        c * chunk + jnp.arange(chunk, dtype=jnp.int32))

  records = {"test_loss": jnp.full((eval_np.shape[0],), jnp.nan, dtype),
             "var_h": jnp.full((stats_np.shape[0], depth), jnp.nan, dtype),
             "var_dl_dh": jnp.full((stats_np.shape[0], depth), jnp.nan, dtype),
             "var_dl_df": jnp.full((stats_np.shape[0], depth), jnp.nan, dtype),
             "stats_loss": jnp.full((stats_np.shape[0],), jnp.nan, dtype)}
  if spec.task == "classification":
    records["test_accuracy"] = jnp.full((eval_np.shape[0],), jnp.nan, dtype)
  carry = (params, optimizer.init(params), jnp.zeros((n_train,), jnp.int32),
           jnp.array(-1, jnp.int32), records)
  (p, _, perm_N, diverged_step, records), loss_CxG = jax.lax.scan(
      chunk_fn, carry, jnp.arange(n_chunks, dtype=jnp.int32))

  # Step S: record, and the minibatch loss (no update).
  final = jnp.array(spec.steps, jnp.int32)
  perm_N = jax.lax.cond(final % steps_per_epoch == 0,
                        lambda: epoch_permutation(data_key, final // steps_per_epoch, n_train),
                        lambda: perm_N)
  loss_final = loss_of(p, *minibatch(perm_N, final))
  diverged_step = jnp.where((diverged_step < 0) & ~jnp.isfinite(loss_final), final,
                            diverged_step)
  records = record(records, p, final)
  train_loss = jnp.concatenate([loss_CxG.reshape(-1), loss_final[None]])

  # Everything recorded at or after the diverged step is NaN.
  def after_divergence(steps_T):
    return (diverged_step >= 0) & (steps_T >= diverged_step)

  mask_eval, mask_stats = after_divergence(eval_at), after_divergence(stats_at)
  out = {"train_loss": jnp.where(after_divergence(jnp.arange(spec.steps + 1)), jnp.nan,
                                 train_loss),
         "diverged_step": diverged_step}
  for name, value in records.items():
    mask = mask_eval if name.startswith("test_") else mask_stats
    out[name] = jnp.where(mask.reshape(mask.shape + (1,) * (value.ndim - 1)), jnp.nan, value)
  return out


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


def forced_cpu_device_count() -> int | None:
  """The CPU device count that XLA_FLAGS forces (--xla_force_host_platform_device_count=N)."""
  found = re.findall(r"--xla_force_host_platform_device_count=(\d+)",
                     os.environ.get("XLA_FLAGS", ""))
  return int(found[-1]) if found else None


def use_cpu_cores(num_devices: int | None = None) -> int:
  """Exposes the host CPU as `num_devices` XLA devices (default: one per core this process may
  run on, e.g. Slurm's --cpus-per-task).

  XLA runs one program on one CPU core; with one device per core `run_networks` shards the
  network axis so that every core trains its share. Must be called before any JAX computation
  (JAX fixes the device count when its backend starts); afterwards it changes nothing. When
  XLA_FLAGS already forces a device count (`--xla_force_host_platform_device_count=N`, as the
  tests do), that count is kept: pick among those devices with `distributed.local_devices`.
  Only the CPU backend is affected; GPUs and TPUs stay as they are.

  Returns:
    The number of devices JAX will use.
  """
  if forced_cpu_device_count() is None:
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count())
    n = num_devices or cores or 1
    try:
      jax.config.update("jax_num_cpu_devices", int(n))
    except RuntimeError:  # backend already initialized: keep what it has
      pass
  return len(jax.local_devices())


def pad_networks(tree: Any, multiple: int) -> tuple[Any, int]:
  """Pads the leading (network) axis of every leaf to a multiple of `multiple` by repeating the
  last network; returns (padded tree, original B)."""
  b = jax.tree.leaves(tree)[0].shape[0]
  pad = (-b) % multiple
  if pad:
    tree = jax.tree.map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)], axis=0), tree)
  return tree, b


def replicate(data: dict[str, jax.Array], devices: Sequence[Any] | None = None) -> dict:
  """Places the data arrays on every device once (a no-op when they are already there); default:
  all local devices (in a multi-process job each process computes on its own devices)."""
  mesh = Mesh(np.array(devices or jax.local_devices()), ("networks",))
  return jax.device_put(data, NamedSharding(mesh, PartitionSpec()))


def run_networks(params_B: Params, data_keys_B: jax.Array, learning_rates_B: jax.Array,
                 data: dict[str, jax.Array], spec: TrainSpec,
                 devices: Sequence[Any] | None = None,
                 chunk: int | None = None) -> dict[str, np.ndarray]:
  """`train_networks` with the network axis sharded over `devices` (default all local devices),
  returned as NumPy arrays with leading axis B.

  With `chunk` (networks per call) smaller than B, the networks are trained `chunk` at a time:
  every call has the same shape (the last chunk is padded), so one compiled program serves all
  chunks, and each network's results are those of the unchunked call (networks never interact).
  B (or the chunk) is padded to a multiple of the device count by repeating the last network
  (the padding networks are dropped); the data is replicated on every device.
  """
  devices = list(devices or jax.local_devices())
  lrs_B = jnp.asarray(learning_rates_B, jnp.float32)
  b = lrs_B.shape[0]
  size = min(chunk or b, b)
  size += -size % len(devices)
  if size >= b:
    return _run_sharded(params_B, data_keys_B, lrs_B, data, spec, devices)
  outs = []
  for start in range(0, b, size):
    part = jax.tree.map(lambda a, s=start: a[s:s + size], (params_B, data_keys_B, lrs_B))
    outs.append(_run_sharded(*pad_networks(part, size)[0], data, spec, devices))
  return {k: np.concatenate([o[k] for o in outs])[:b] for k in outs[0]}


def _run_sharded(params_B: Params, data_keys_B: jax.Array, lrs_B: jax.Array,
                 data: dict[str, jax.Array], spec: TrainSpec,
                 devices: list[Any]) -> dict[str, np.ndarray]:
  if len(devices) == 1:
    with jax.default_device(devices[0]):
      out = train_networks(params_B, data_keys_B, lrs_B, data, spec)
    return {k: np.asarray(v) for k, v in out.items()}
  mesh = Mesh(np.array(devices), ("networks",))
  by_network = NamedSharding(mesh, PartitionSpec("networks"))
  (params_B, keys_B, lrs_B), b = pad_networks((params_B, data_keys_B, lrs_B), len(devices))
  out = train_networks(jax.device_put(params_B, by_network), jax.device_put(keys_B, by_network),
                       jax.device_put(lrs_B, by_network), replicate(data, devices), spec)
  return {k: np.asarray(v)[:b] for k, v in out.items()}


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


# ----------------------------------------------------------------------------------------------
# Summaries of one network's records (host side, NumPy).

def final_train_loss(train_loss_S: np.ndarray) -> float:
  """Mean minibatch loss over the last FINAL_LOSS_FRACTION of the steps (NaN if diverged)."""
  train_loss_S = np.asarray(train_loss_S, np.float64)
  window = max(1, int(math.ceil(FINAL_LOSS_FRACTION * (train_loss_S.shape[0] - 1))))
  return float(np.mean(train_loss_S[-window:]))


def stall_reference(task: str, num_classes: int | None, initial_loss: float) -> float:
  """The loss a stalled network sits at: ln(num_classes) (classification) or the initial loss."""
  if task == "classification":
    return math.log(num_classes)
  return float(initial_loss)


def is_stalled(final_loss: float, reference: float, diverged: bool) -> bool:
  """Stalled: not diverged, and the final loss is above (1 - STALL_TOLERANCE) * reference, i.e.
  the loss fell by less than 1% from the reference (see `stall_reference`)."""
  return (not diverged) and bool(final_loss > (1.0 - STALL_TOLERANCE) * reference)


def steps_to_threshold(train_loss_S: np.ndarray, threshold: float,
                       window: int = THRESHOLD_WINDOW) -> int | None:
  """First step s whose trailing mean of `window` minibatch losses (steps s-window+1..s) is at
  most `threshold`; None if never (NaN losses never count)."""
  loss = np.asarray(train_loss_S, np.float64)
  if loss.shape[0] < window:
    window = loss.shape[0]
  csum = np.concatenate([[0.0], np.cumsum(loss)])
  mean = (csum[window:] - csum[:-window]) / window  # mean[j] = mean of loss[j..j+window-1]
  hits = np.nonzero(mean <= threshold)[0]
  return int(hits[0] + window - 1) if hits.size else None
