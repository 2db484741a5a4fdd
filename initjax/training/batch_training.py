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
      perm_N=0, diverged_step=0, records=jax.tree.map(lambda _: 0, state.records))


@functools.lru_cache(maxsize=32)
def _programs(model: Model, spec: TrainSpec, params_struct: Any, data_struct: Any
              ) -> dict[str, Any]:
  """The jitted pieces for one block of networks (model, spec, shapes): init, advance, finish."""
  params_tree = jax.tree.unflatten(params_struct[0], params_struct[1])
  data_tree = jax.tree.unflatten(data_struct[0], data_struct[1])
  one = jax.eval_shape(lambda p, d: init_state(model, p, 0.1, d, spec), params_tree, data_tree)
  axes = state_axes(one, model.stacked)
  size = record_chunk(spec)

  @jax.jit
  def init_block(params_B, lrs_B, data):
    return jax.vmap(lambda p, lr: init_state(model, p, lr, data, spec), out_axes=axes)(
        params_B, lrs_B)

  def advance_block(state_B, keys_B, lrs_B, first_chunk, data, *, num_chunks):
    rec = jax.vmap(lambda s, step: s._replace(
        records=record(s.records, s.params, step, model, data, spec)),
                   in_axes=(axes, None), out_axes=axes)
    step_fn = jax.vmap(functools.partial(train_step, model=model, data=data, spec=spec),
                       in_axes=(axes, None, 0, 0), out_axes=(axes, 0))

    def chunk(state, c):
      state = rec(state, c * size)
      return jax.lax.scan(lambda s, i: step_fn(s, i, lrs_B, keys_B), state,
                          c * size + jnp.arange(size, dtype=jnp.int32))

    state, losses = jax.lax.scan(chunk, state_B,
                                 first_chunk + jnp.arange(num_chunks, dtype=jnp.int32))
    return state, losses.reshape(num_chunks * size, -1).T

  @jax.jit
  def finish_block(state_B, losses_B, keys_B, data):
    return jax.vmap(functools.partial(finish, model=model, data=data, spec=spec),
                    in_axes=(axes, 0, 0))(state_B, losses_B, keys_B)

  advance = functools.lru_cache(maxsize=4)(
      lambda n: jax.jit(functools.partial(advance_block, num_chunks=n)))
  return {"axes": axes, "init": init_block, "advance": advance, "finish": finish_block}


def _structure(tree: Any, leading: bool) -> tuple:
  """(treedef, per-leaf ShapeDtypeStruct without the leading axis if `leading`): hashable."""
  leaves, treedef = jax.tree.flatten(tree)
  return treedef, tuple(jax.ShapeDtypeStruct(np.shape(a)[1:] if leading else np.shape(a),
                                             jnp.result_type(a)) for a in leaves)


def run_networks(model: Model, params_B: Any, data_keys_B: jax.Array,
                 learning_rates_B: Any, data: dict[str, jax.Array], spec: TrainSpec, *,
                 devices: Sequence[Any] | None = None, block: int | None = None,
                 checkpoint: Checkpoint | None = None) -> dict[str, np.ndarray]:
  """Trains B networks; returns their records (`initjax.training`) as NumPy arrays, leading
  axis B.

  Args:
    model: the networks' functions (`initjax.models`).
    params_B, data_keys_B, learning_rates_B: B initial parameter trees stacked on a leading
      axis, B data keys, B learning rates.
    data: x_train, y_train, x_test, y_test arrays.
    spec: the static `TrainSpec`.
    devices: where to train (default: all local devices; a CPU's cores are its workers).
    block: networks per worker per call (default `parallel.default_block`: one on CPU workers,
      else B spread evenly over the workers). Results depend on it, never on the number of
      devices.
    checkpoint: optional; saves and restores the state between segments.
  """
  work = parallel.workers(devices)
  lrs_B = jnp.asarray(learning_rates_B, jnp.float32)
  b = lrs_B.shape[0]
  block = int(block or parallel.default_block(b, work))
  padded, _ = parallel.pad_leading((params_B, data_keys_B, lrs_B), block)
  blocks = parallel.split_leading(padded, block)
  programs = _programs(model, spec, _structure(params_B, True), _structure(data, False))
  total = spec.steps // record_chunk(spec)
  every = min(total, int(checkpoint.every_chunks)) if checkpoint else total
  saved = checkpoint.restore() if checkpoint else None
  done = list(saved["done"]) if saved else []
  rounds = [blocks[i:i + len(work)] for i in range(0, len(blocks), len(work))]
  for r in range(len(done), len(rounds)):
    mine = rounds[r]                                # [(params, keys, lrs)] per worker
    if saved is not None and saved["round"] == r:
      treedef = jax.tree.structure(programs["axes"])
      states = [jax.tree.unflatten(treedef, leaves) for leaves in saved["state"]]
      losses, c0 = [np.asarray(saved["losses"])], int(saved["chunk"])
    else:
      states = parallel.run_blocks(programs["init"], [(p, lr) for p, _, lr in mine], work, data)
      losses, c0 = [], 0
    while c0 < total:
      n = min(every, total - c0)
      out = parallel.run_blocks(programs["advance"](n),
                                [(st, k, lr, np.int32(c0)) for st, (_, k, lr) in zip(states, mine)],
                                work, data)
      states = [o[0] for o in out]
      losses.append(np.stack([np.asarray(o[1]) for o in out]))   # (blocks, block, steps)
      c0 += n
      if checkpoint is not None:
        checkpoint.segment_done(functools.partial(
            _payload, r, c0, c0 * record_chunk(spec), states, losses, done))
    loss_S = np.concatenate(losses, axis=2)
    outs = parallel.run_blocks(programs["finish"],
                               [(st, loss_S[i], k) for i, (st, (_, k, _)) in
                                enumerate(zip(states, mine))], work, data)
    done.append({k: np.concatenate([np.asarray(o[k]) for o in outs]) for k in outs[0]})
  return {k: np.concatenate([d[k] for d in done])[:b] for k in done[0]}


def _payload(round_index, chunk, steps, states, losses, done) -> dict[str, Any]:
  """What a checkpoint saves after a segment: where the run is, its state and results so far."""
  return {"round": round_index, "chunk": chunk, "steps": steps,
          "state": [[np.asarray(a) for a in jax.tree.leaves(jax.device_get(st))]
                    for st in states],
          "losses": np.concatenate(losses, axis=2), "done": list(done)}
