"""Training a batch of networks: vmapped, spread over the local devices, in checkpointable segments.

`run_networks` trains B networks (stacked parameters, one data key and one learning rate each)
with the per-network functions of `initjax.training`:

  * blocks: every worker (a device, or a CPU core) trains `block` networks per call
    (`initjax.parallel.run_blocks`); B is covered in rounds of one block per worker (the last
    block padded by repeating the last network). A network's numbers depend on the block size,
    never on the number of devices: every device runs the same program on the same blocks.
  * layer-major state: the model's stacked parameters (and their optimizer state) keep the
    network axis second, so the scan over layers inside every step needs no transpose; the scan
    over steps runs outside the vmap so that this layout is kept from step to step.
  * segments: the steps run in segments of `checkpoint.every_chunks` recording chunks; after each
    segment the checkpoint (if any) may save the state (`initjax.checkpoints`) and may stop the
    run (a signal); a rerun restores the saved state and continues with the same segments, so
    the results equal those of an uninterrupted run.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initjax.core import parallel
from initjax.core.errors import ModelError
from initjax.nn.models import Model
from initjax.training.loop import (TrainSpec, TrainState, finish, init_state, record, record_chunk,
                                   train_step)


class Checkpoint(Protocol):
  """What `run_networks` asks of a checkpoint (see `initjax.checkpoints.GroupCheckpoint`)."""
  every_chunks: int

  def restore(self) -> dict[str, Any] | None:
    """The last saved payload (see `run_networks`), or None."""

  def segment_done(self, payload: Callable[[], dict[str, Any]]) -> None:
    """Called after every segment; may save `payload()` and may raise to stop the run."""


def _is_stacked(path, stacked: tuple[str, ...]) -> bool:
  return any(getattr(k, "key", None) in stacked for k in path)


def state_axes(state: TrainState, stacked: tuple[str, ...]) -> TrainState:
  """The network axis of every leaf of a batch of states: 1 (layer-major) for the stacked
  parameters and their optimizer state, 0 for everything else."""
  def axis(path, leaf):
    del leaf
    return 1 if _is_stacked(path, stacked) else 0
  return TrainState(
      params=jax.tree_util.tree_map_with_path(axis, state.params),
      opt_state=jax.tree_util.tree_map_with_path(axis, state.opt_state),
      perm_N=0, diverged_step=0, records=jax.tree.map(lambda _: 0, state.records),
      model_state=jax.tree.map(lambda _: 0, state.model_state))


def _check_one(model: Model, spec: TrainSpec, params, state, data) -> TrainState:
  """One network's state and step, abstractly: a model that cannot train with the state given
  is one line here, before anything compiles."""
  def one(p, s, d):
    st = init_state(model, p, 0.1, d, spec, s)
    return train_step(st, 0, 0.1, jax.random.key(0), model=model, data=d, spec=spec)[0]
  try:
    return jax.eval_shape(one, params, state, data)
  except ModelError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    line = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    hint = ""
    if model.stateful and not jax.tree.leaves(state):
      hint = " (a model with state, such as batch statistics, needs state_B from models.networks)"
    elif "immutable" in line or "mutable" in line:
      hint = (" (in eval mode the model still updates its state: pass eval_kwargs that switch "
              "it to running averages, e.g. {'train': False})")
    raise ModelError(f"run_networks: {model.name} cannot train: {type(e).__name__}: "
                     f"{line}{hint}") from e


def _primitives(jaxpr) -> set[str]:
  """The primitive names of a jaxpr and of the jaxprs inside it (scans, jits, custom rules)."""
  found = set()
  for eqn in jaxpr.eqns:
    found.add(eqn.primitive.name)
    for value in eqn.params.values():
      for inner in (value if isinstance(value, (list, tuple)) else [value]):
        inner = getattr(inner, "jaxpr", inner)
        if hasattr(inner, "eqns"):
          found |= _primitives(inner)
  return found


def convolves(model: Model, spec: TrainSpec, params, state, data) -> bool:
  """Whether one training step of `model` runs a convolution (`lax.conv_general_dilated`)."""
  def one(p, s, d):
    st = init_state(model, p, 0.1, d, spec, s)
    return train_step(st, 0, 0.1, jax.random.key(0), model=model, data=d, spec=spec)[1]
  return "conv_general_dilated" in _primitives(jax.make_jaxpr(one)(params, state, data).jaxpr)


class _HostLoop:
  """`advance` as a Python loop over one jitted, vmapped step (and the recording), with
  `lower` / `compile` so that `parallel.run_blocks` takes it as it takes a jitted function.

  XLA's CPU backend runs the gradient of a convolution 5-20 times slower inside a loop (a
  `lax.scan` over steps) than at the top level of a program (measured: 13.5 ms against 0.7 ms
  for a (100, 40, 32) conv of kernel 3): a model with convolutions trains faster one step per
  call on a CPU. The numbers are those of the same step function; the dispatch costs tens of
  microseconds a step."""

  def __init__(self, rec, step, size: int, num_chunks: int):
    self.rec, self.step, self.size, self.num_chunks = rec, step, size, num_chunks

  def lower(self, *args):
    del args
    return self

  def compile(self):
    return self

  def __call__(self, state_B, keys_B, lrs_B, first_chunk, data):
    losses = []
    first = int(first_chunk)
    for c in range(first, first + self.num_chunks):
      state_B = self.rec(state_B, jnp.int32(c * self.size), data)
      for i in range(c * self.size, (c + 1) * self.size):
        state_B, loss = self.step(state_B, jnp.int32(i), lrs_B, keys_B, data)
        losses.append(loss)
    return state_B, jnp.stack(losses).T


@functools.lru_cache(maxsize=32)
def _programs(model: Model, spec: TrainSpec, params_struct: Any, data_struct: Any,
              state_struct: Any, step_loop: str) -> dict[str, Any]:
  """The jitted pieces for one block of networks (model, spec, shapes): init, advance, finish.
  `step_loop`: "scan" (the steps of a segment in one program) or "host" (`_HostLoop`)."""
  params_tree = jax.tree.unflatten(params_struct[0], params_struct[1])
  data_tree = jax.tree.unflatten(data_struct[0], data_struct[1])
  state_tree = jax.tree.unflatten(state_struct[0], state_struct[1])
  one = _check_one(model, spec, params_tree, state_tree, data_tree)
  axes = state_axes(one, model.stacked)
  size = record_chunk(spec)

  @jax.jit
  def init_block(params_B, lrs_B, model_state_B, data):
    return parallel.block_vmap(lambda p, lr, s: init_state(model, p, lr, data, spec, s),
                               out_axes=axes)(params_B, lrs_B, model_state_B)

  def rec(state_B, step, data):
    return parallel.block_vmap(lambda s: s._replace(
        records=record(s.records, s.params, step, model, data, spec, s.model_state)),
                               in_axes=(axes,), out_axes=axes)(state_B)

  def step_fn(state_B, step, lrs_B, keys_B, data):
    return parallel.block_vmap(functools.partial(train_step, model=model, data=data, spec=spec),
                               in_axes=(axes, None, 0, 0), out_axes=(axes, 0))(
                                   state_B, step, lrs_B, keys_B)

  def advance_block(state_B, keys_B, lrs_B, first_chunk, data, *, num_chunks):
    def chunk(state, c):
      state = rec(state, c * size, data)
      return jax.lax.scan(lambda s, i: step_fn(s, i, lrs_B, keys_B, data), state,
                          c * size + jnp.arange(size, dtype=jnp.int32))

    state, losses = jax.lax.scan(chunk, state_B,
                                 first_chunk + jnp.arange(num_chunks, dtype=jnp.int32))
    return state, losses.reshape(num_chunks * size, -1).T

  def finish_one(state, losses, key, data):
    records = finish(state, losses, key, model=model, data=data, spec=spec)
    return records, {"params": state.params, "model_state": state.model_state}

  @jax.jit
  def finish_block(state_B, losses_B, keys_B, data):
    return parallel.block_vmap(functools.partial(finish_one, data=data), in_axes=(axes, 0, 0))(
        state_B, losses_B, keys_B)

  if step_loop == "host":
    rec_jit, step_jit = jax.jit(rec), jax.jit(step_fn)
    advance = functools.lru_cache(maxsize=4)(
        lambda n: _HostLoop(rec_jit, step_jit, size, n))
  else:
    advance = functools.lru_cache(maxsize=4)(
        lambda n: jax.jit(functools.partial(advance_block, num_chunks=n)))
  return {"axes": axes, "init": init_block, "advance": advance, "finish": finish_block}


def _structure(tree: Any, leading: bool) -> tuple:
  """(treedef, per-leaf ShapeDtypeStruct without the leading axis if `leading`): hashable."""
  leaves, treedef = jax.tree.flatten(tree)
  return treedef, tuple(jax.ShapeDtypeStruct(np.shape(a)[1:] if leading else np.shape(a),
                                             jnp.result_type(a)) for a in leaves)


def _leading_sizes(name: str, tree: Any) -> set[int]:
  sizes = set()
  for leaf in jax.tree.leaves(tree):
    if np.ndim(leaf) == 0:
      raise ModelError(f"run_networks: {name} must carry a leading network axis; it has a "
                       "scalar leaf")
    sizes.add(int(np.shape(leaf)[0]))
  return sizes


def check_batch(params_B: Any, data_keys_B: Any, learning_rates_B: Any,
                state_B: Any = None) -> int:
  """B, the number of networks, if every argument has it as its leading axis; else one
  ModelError line naming the arguments and their sizes (before anything compiles)."""
  lrs = np.asarray(learning_rates_B)
  if lrs.ndim != 1:
    raise ModelError(f"run_networks: learning_rates_B must be 1-D (one per network); got shape "
                     f"{lrs.shape}")
  sizes = {"params_B": _leading_sizes("params_B", params_B),
           "data_keys_B": {int(np.shape(data_keys_B)[0])} if np.ndim(data_keys_B) else set(),
           "learning_rates_B": {lrs.shape[0]}}
  if state_B is not None:
    sizes["state_B"] = _leading_sizes("state_B", state_B)
  if not sizes["params_B"]:
    raise ModelError("run_networks: params_B has no arrays")
  if not sizes["data_keys_B"]:
    raise ModelError("run_networks: data_keys_B must be one key per network, e.g. "
                     "jax.random.split(key, B)")
  flat = {n: v for n, v in sizes.items() if v}
  if len({x for v in flat.values() for x in v}) != 1:
    listed = ", ".join(f"{n} {'/'.join(map(str, sorted(v)))}" for n, v in flat.items())
    raise ModelError(f"run_networks: the arguments disagree on the number of networks (their "
                     f"leading axes): {listed}")
  b = next(iter(flat["learning_rates_B"]))
  if b == 0:
    raise ModelError("run_networks: no networks to train (B = 0)")
  return b


def run_networks(model: Model, params_B: Any, data_keys_B: jax.Array,
                 learning_rates_B: Any, data: dict[str, jax.Array], spec: TrainSpec, *,
                 state_B: Any = None, devices: Sequence[Any] | None = None,
                 block: int | None = None, checkpoint: Checkpoint | None = None,
                 return_final: bool = False, step_loop: str = "auto") -> dict[str, Any]:
  """Trains B networks; returns their records (`initjax.training`) as NumPy arrays, leading
  axis B.

  Args:
    model: the networks' functions (`initjax.models`).
    params_B, data_keys_B, learning_rates_B: B initial parameter trees stacked on a leading
      axis, B data keys, B learning rates.
    data: x_train, y_train, x_test, y_test arrays.
    spec: the static `TrainSpec`.
    state_B: a stateful model's B initial states (`initjax.models.networks`): batch statistics
      are updated as the model's library updates them in train mode and used in eval mode (the
      test metrics), each network and step draws its own dropout randomness, and the state is
      checkpointed with the parameters.
    devices: where to train (default: all local devices; a CPU's cores are its workers).
    block: networks per worker per call (default `parallel.default_block`: one on CPU workers,
      else B spread evenly over the workers). Results depend on it, never on the number of
      devices.
    checkpoint: optional; saves and restores the state between segments.
    return_final: also return "final_params" and "final_state", the trained networks (pytrees
      with a leading axis B).
    step_loop: "scan" runs a segment's steps in one compiled program, "host" one step per call
      (`_HostLoop`: faster for convolutions on a CPU); "auto" (default) picks "host" for a
      user's model whose step convolves on a CPU, else "scan".

  Raises:
    ModelError (one line, before anything compiles): arguments that disagree on B, a model
    that cannot train with the state given.
  """
  b = check_batch(params_B, data_keys_B, learning_rates_B, state_B)
  state_B = {} if state_B is None else state_B
  work = parallel.workers(devices)
  lrs_B = jnp.asarray(learning_rates_B, jnp.float32)
  block = int(block or parallel.default_block(b, work))
  padded, _ = parallel.pad_leading((params_B, data_keys_B, lrs_B, state_B), block)
  blocks = parallel.split_leading(padded, block)
  structs = (_structure(params_B, True), _structure(data, False), _structure(state_B, True))
  if step_loop == "auto":
    trees = [jax.tree.unflatten(t, leaves) for t, leaves in structs]
    step_loop = "scan"
    if work[0].platform == "cpu" and not model.stacked:   # not initjax's own (im2col) networks
      _check_one(model, spec, trees[0], trees[2], trees[1])    # its errors first, in one line
      step_loop = "host" if convolves(model, spec, trees[0], trees[2], trees[1]) else "scan"
  if step_loop not in STEP_LOOPS:
    raise ModelError(f"run_networks: step_loop must be one of {', '.join(STEP_LOOPS)}; got "
                     f"{step_loop!r}")
  programs = _programs(model, spec, *structs, step_loop)
  total = spec.steps // record_chunk(spec)
  every = min(total, int(checkpoint.every_chunks)) if checkpoint else total
  saved = checkpoint.restore() if checkpoint else None
  done = list(saved["done"]) if saved else []
  rounds = [blocks[i:i + len(work)] for i in range(0, len(blocks), len(work))]
  for r in range(len(done), len(rounds)):
    mine = rounds[r]                                # [(params, keys, lrs, state)] per worker
    if saved is not None and saved["round"] == r:
      treedef = jax.tree.structure(programs["axes"])
      states = [jax.tree.unflatten(treedef, leaves) for leaves in saved["state"]]
      losses, c0 = [np.asarray(saved["losses"])], int(saved["chunk"])
    else:
      states = parallel.run_blocks(programs["init"], [(p, lr, s) for p, _, lr, s in mine], work,
                                   data)
      losses, c0 = [], 0
    while c0 < total:
      n = min(every, total - c0)
      out = parallel.run_blocks(programs["advance"](n),
                                [(st, m[1], m[2], np.int32(c0)) for st, m in zip(states, mine)],
                                work, data)
      states = [o[0] for o in out]
      losses.append(np.stack([np.asarray(o[1]) for o in out]))   # (blocks, block, steps)
      c0 += n
      if checkpoint is not None:
        checkpoint.segment_done(functools.partial(
            _payload, r, c0, c0 * record_chunk(spec), states, losses, done))
    loss_S = np.concatenate(losses, axis=2)
    outs = parallel.run_blocks(programs["finish"],
                               [(st, loss_S[i], m[1]) for i, (st, m) in
                                enumerate(zip(states, mine))], work, data)
    records = {k: np.concatenate([np.asarray(o[0][k]) for o in outs]) for k in outs[0][0]}
    if return_final:
      finals = [jax.tree.leaves(o[1]) for o in outs]
      records.update({f"{_FINAL}{i}": np.concatenate([np.asarray(f[i]) for f in finals])
                      for i in range(len(finals[0]))})
    done.append(records)
  result = {k: np.concatenate([d[k] for d in done])[:b] for k in done[0]
            if not k.startswith(_FINAL)}
  if return_final:
    treedef = jax.tree.structure(jax.eval_shape(lambda: {"params": params_B,
                                                         "model_state": state_B}))
    leaves = [np.concatenate([d[f"{_FINAL}{i}"] for d in done])[:b]
              for i in range(treedef.num_leaves)]
    final = jax.tree.unflatten(treedef, leaves)
    result["final_params"], result["final_state"] = final["params"], final["model_state"]
  return result


_FINAL = "__final_leaf_"
STEP_LOOPS = ("auto", "scan", "host")


def _payload(round_index, chunk, steps, states, losses, done) -> dict[str, Any]:
  """What a checkpoint saves after a segment: where the run is, its state and results so far."""
  return {"round": round_index, "chunk": chunk, "steps": steps,
          "state": [[np.asarray(a) for a in jax.tree.leaves(jax.device_get(st))]
                    for st in states],
          "losses": np.concatenate(losses, axis=2), "done": list(done)}
