"""Running a batch task of a sweep: its unfinished grid points, group by group, each point saved
as soon as its group is trained, so that an interrupted task resumes where it stopped.

Before anything is loaded, compiled or written, `check_fits` refuses a grid whose largest network
cannot fit in one device's available memory, and `run_task` warns when the task's training would
take absurdly long even at an optimistic speed. Damaged point files (`store.inspect_point`) are
named in the log, one line each, and recomputed."""
from __future__ import annotations

import os
import shutil
import time
from typing import Any, Sequence

import jax
from absl import logging

from initjax import training
from initjax.core import distributed, lock, parallel, progress
from initjax.core.errors import ConfigError
from initjax.core.results import json_sha256, remove_stale_temp_files
from initjax.studies.sweep import store
from initjax.studies.sweep.config import SweepConfig
from initjax.studies.sweep.grid import GridPoint, expand_grid, group_cost, group_points, task_points
from initjax.studies.sweep.group import group_block, load_data, network_bytes, run_group, train_spec
from initjax.training import checkpoints
from initjax.training import data as data_lib

GIB = 2.0 ** 30
# Optimistic training speeds (FLOP/s per device) for the run-time warning: a CPU core's
# float32 matmul peak, and more than any current accelerator sustains in float32.
_FAST_FLOPS = {"cpu": 1.0e11, "other": 1.0e14}
ABSURD_SECONDS = 7 * 24 * 3600.0
LONG_NETWORK_STEPS = 1e7   # a task this long says so before it starts

CHECKPOINTS_DIR = "checkpoints"


def group_checkpoint(output_dir: str, config: SweepConfig, group, block: int, workers: int,
                     task: str, every_steps: int | None,
                     every_minutes: float | None) -> checkpoints.GroupCheckpoint:
  """The checkpoint of one group's training under output_dir/checkpoints/: its fingerprint holds
  the points' settings, the block size and the number of workers (which fix the blocks and the
  rounds the saved state belongs to)."""
  ids = sorted(p.point_id for p in group)
  point_prints = [store.fingerprint(store.point_config(config, p)) for p in group]
  name = store.fingerprint({"points": ids})
  fingerprint = store.fingerprint({"points": sorted(point_prints), "block": block,
                                   "workers": workers})
  chunk = training.record_chunk(train_spec(config, group[0].optimizer, task))
  return checkpoints.GroupCheckpoint(os.path.join(output_dir, CHECKPOINTS_DIR, name), fingerprint,
                                     chunk, every_steps=every_steps,
                                     every_minutes=every_minutes)


def _check_finished(output_dir: str, config: SweepConfig, points) -> set[str]:
  """The ids of `points` already finished (and verified) under output_dir; ConfigError if one was
  computed with other settings (naming the first setting that differs). A damaged point is
  logged (its file and why, one line) and left to be recomputed."""
  states = {p.point_id: store.inspect_point(output_dir, config, p)[:2] for p in points}
  differ = {pid: diff for pid, (state, diff) in states.items() if state == "differs"}
  if differ:
    first, diff = next(iter(differ.items()))
    field = next(iter(diff))
    points_dir = os.path.join(output_dir, store.POINTS_DIR)
    raise ConfigError(field if field in store.POINT_SETTINGS else "overwrite", (
        f"{len(differ)} finished point(s) under {points_dir} were computed with other "
        f"settings: {store.describe_difference(diff)} (e.g. {first}); rerun with their settings, "
        "pass --overwrite to recompute them, or use another --output_dir"))
  for state, damage in states.values():
    if state == "damaged":
      logging.warning("%s; recomputing this point", damage)
  return {pid for pid, (state, _) in states.items() if state == "done"}


def _shape_stub(config: SweepConfig) -> dict[str, Any]:
  """What `network_bytes` reads of a data set, before it is loaded: the training-set size, and
  the input dimension and test set at their minimum (1, none), so that the estimate is a lower
  bound; `run_task` checks again with the real data once they are loaded."""
  info = data_lib.dataset_info(config.dataset)
  return {"x_train": jax.ShapeDtypeStruct((info["n_train"], 1), "float32"),
          "x_test": jax.ShapeDtypeStruct((0, 1), "float32"),
          "output_dim": info["num_classes"] or 1}


def group_resident_bytes(points: Sequence[GridPoint], config: SweepConfig,
                         shapes: dict[str, Any]) -> float:
  """Memory a group holds for all its networks at once, however it is chunked: the initial
  parameters (drawn per network, stacked, concatenated over points and padded: about 4 copies)
  and the records every network returns (float32)."""
  d_in, out = int(shapes["x_train"].shape[1]), int(shapes["output_dim"])
  p = points[0]
  n_params = d_in * p.width + p.width + (p.depth - 1) * (p.width + 1) * p.width + (
      p.width + 1) * out
  n_eval = config.steps // config.eval_every + 2
  n_stats = config.steps // config.stats_every + 2
  record_floats = config.steps + 1 + 2 * n_eval + n_stats * (1 + 3 * p.depth) + 1
  return len(points) * config.num_seeds * 4.0 * (4 * n_params + record_floats)


def check_fits(config: SweepConfig, devices: Sequence[Any], data: dict[str, Any] | None = None,
               seed_chunk: int = 0, groups: Sequence[Sequence[GridPoint]] | None = None) -> float:
  """Refuses a grid that cannot fit in memory, before anything is loaded or compiled:

  * one network (`group.network_bytes`) per worker: a call trains at least one network on every
    worker; the workers of a CPU share the host's memory, so theirs must fit together;
  * every group's networks at once: their parameters and records (`group_resident_bytes`);
  * an explicit `seed_chunk` (networks per worker and call).
  Against `parallel.available_memory_bytes` of the first device. `groups` defaults to the whole
  grid's; `data` (a data dict) gives the exact estimate, without it the data-dependent terms are
  taken at their minimum. Returns the largest network's estimated bytes.

  Raises:
    ConfigError("depths/widths", "num_seeds" or "seed_chunk", ...): naming the network, the
      estimate and what is available.
  """
  shapes = data if data is not None else _shape_stub(config)
  groups = groups or group_points(expand_grid(config))
  device = devices[0]
  available = parallel.available_memory_bytes(device)
  # Workers drawing on `available` at once: every thread of a CPU, one per accelerator.
  shared = len(parallel.workers(devices)) if device.platform == "cpu" else 1
  where = f"{available / GIB:.3g} GiB available on {device.platform} device {device.id}"
  largest = 0.0
  for group in sorted(groups, key=lambda g: -network_bytes(g[0], config, shapes)):
    p, networks = group[0], len(group) * config.num_seeds
    one = network_bytes(p, config, shapes)
    largest = max(largest, one)
    what = (f"one network of depth {p.depth}, width {p.width} needs about {one / GIB:.3g} GiB "
            f"to train (minibatches of {config.batch_size}, statistics on "
            f"{config.stats_batch_size} examples, {config.steps} steps)")
    if one * shared > available:
      together = (f"; the {shared} CPU workers train one each at once (--num_devices or fewer "
                  f"cores to use fewer): {one * shared / GIB:.3g} GiB" if shared > 1 else "")
      raise ConfigError("depths/widths", f"{what}{together}; {where}")
    resident = group_resident_bytes(group, config, shapes) + one * shared
    if resident > available:
      raise ConfigError("num_seeds", (
          f"the {networks} networks of depth {p.depth}, width {p.width} ({len(group)} grid "
          f"point(s) x {config.num_seeds} seeds, trained as one group) hold about "
          f"{resident / GIB:.3g} GiB of parameters and records at once; {where}"))
    if seed_chunk and one * min(seed_chunk, networks) * shared > available:
      raise ConfigError("seed_chunk", (
          f"{seed_chunk} networks per worker and call need about "
          f"{one * min(seed_chunk, networks) * shared / GIB:.3g} GiB with {shared} worker(s) "
          f"sharing the memory: {what}; {where}"))
  return largest


def check_data(config: SweepConfig, data: dict[str, Any]) -> None:
  """The settings that depend on the data, against the data actually loaded (the config checked
  them against the data set's nominal size).

  Raises:
    ConfigError("batch_size" or "stats_batch_size", ...): more examples than the data hold.
  """
  rows = int(data["x_train"].shape[0])
  for field in ("batch_size", "stats_batch_size"):
    if getattr(config, field) > rows:
      raise ConfigError(field, f"must be <= {rows} (the training examples of the {config.dataset} "
                        f"data loaded); got {getattr(config, field)}")


def _training_flops(config: SweepConfig, groups) -> float:
  """Training FLOPs of `groups`: 6 x batch x parameters per network and step."""
  return sum(6.0 * config.batch_size * p.depth * p.width * (p.width + 1) * config.steps
             * config.num_seeds for group in groups for p in group)


def _fast_speed(devices: Sequence[Any]) -> float:
  return _FAST_FLOPS.get(devices[0].platform, _FAST_FLOPS["other"]) * len(devices)


def _announce_long(config: SweepConfig, groups, devices: Sequence[Any]) -> None:
  """Before a long task starts (`LONG_NETWORK_STEPS` network-steps or more): one line with its
  size and the least time it can take; the progress lines with ETAs follow."""
  networks = sum(len(g) for g in groups) * config.num_seeds
  flops, speed = _training_flops(config, groups), _fast_speed(devices)
  if networks * config.steps >= LONG_NETWORK_STEPS or flops / speed > 600:
    logging.info(
        "this task trains %s networks for %d steps each (%s network-steps, about %.3g FLOPs): "
        "at least %s even at %.0e FLOP/s per device, likely far longer for small networks; "
        "its progress and an ETA are logged about once a minute", f"{networks:,}",
        config.steps, f"{networks * config.steps:,}", flops, progress.duration(flops / speed),
        speed / len(devices))
  _warn_if_absurd(config, groups, devices)


def _warn_if_absurd(config: SweepConfig, groups, devices: Sequence[Any]) -> None:
  """Logs a warning when the training FLOPs of `groups` (6 x batch x parameters per network and
  step) would take longer than `ABSURD_SECONDS` even at an optimistic speed on every device."""
  flops, speed = _training_flops(config, groups), _fast_speed(devices)
  if flops / speed > ABSURD_SECONDS:
    logging.warning(
        "this task trains about %.3g FLOPs: at least %.0f days on %d %s device(s) even at %.0e "
        "FLOP/s each; check the depths, widths, steps and seeds (the log gives an ETA "
        "after the first group)", flops, flops / speed / 86400, len(devices),
        devices[0].platform, speed / len(devices))


class TrainingProgress:
  """A group's checkpoint (`checkpoints.GroupCheckpoint`) that also logs how far the group's
  training is (`initjax.core.progress`, in network-steps) after every segment.

  `run_networks` trains its networks in rounds of one block per worker, each round in segments
  of `every_chunks` recording chunks, and calls `segment_done` after each: the group is
  rounds x segments calls long, and a restored save says how many were done before."""

  def __init__(self, checkpoint: checkpoints.GroupCheckpoint, what: str, networks: int,
               steps: int, block: int, workers: int, chunks: int):
    self.checkpoint = checkpoint
    self.every_chunks = checkpoint.every_chunks
    self._every = min(chunks, self.every_chunks)
    self._segments = -(-chunks // self._every)
    self.calls = -(-(-(-networks // block)) // workers) * self._segments
    self._what, self._total, self._done = what, networks * steps, 0
    self.progress = progress.Progress(what, self._total, "network-steps")

  def _network_steps(self) -> int:
    return round(self._total * self._done / self.calls)

  def restore(self) -> dict[str, Any] | None:
    saved = self.checkpoint.restore()
    if saved is not None:
      self._done = len(saved["done"]) * self._segments + -(-int(saved["chunk"]) // self._every)
      self.progress = progress.Progress(self._what, self._total, "network-steps",
                                        start=self._network_steps())
    return saved

  def segment_done(self, payload) -> None:
    self.checkpoint.segment_done(payload)
    self._done += 1
    self.progress.update(self._network_steps())


def task_holder(config: SweepConfig, task_index: int, num_tasks: int) -> lock.Holder:
  """Task `task_index` of `num_tasks` as a holder of the output directory (`initjax.lock`): the
  tasks of one split (the same settings, except where the data are cached, and the same
  `num_tasks`) may share it, since their grid points are disjoint."""
  settings = {k: v for k, v in config.to_dict().items() if k != "data_dir"}
  split = json_sha256({"settings": settings, "num_tasks": num_tasks})[:16]
  return lock.Holder(role=f"task-{task_index}", split=split, member=task_index,
                     what=f"task {task_index} of {num_tasks} of a sweep")


def run_task(config: SweepConfig, output_dir: str, task_index: int = 0, num_tasks: int = 1,
             *, devices: Sequence[Any] | None = None, seed_chunk: int = 0,
             overwrite: bool = False, checkpoint_steps: int | None = None,
             checkpoint_minutes: float | None = 10.0) -> dict[str, int]:
  """Runs task `task_index` of `num_tasks`: its unfinished grid points, group by group, each
  point written by `store.write_point` as soon as its group is trained. Progress is logged.

  A group's training state is checkpointed (`initjax.checkpoints`) every `checkpoint_steps`
  steps or `checkpoint_minutes` minutes, and when SIGINT/SIGTERM arrive (with
  `distributed.raise_on_signals`), which then stop the run: every file written is complete, and
  the rerun resumes the group from its checkpoint (identical results) and computes the rest. A
  group's checkpoint is deleted once its points are saved.

  Finished points (their JSON holds this config's fingerprint, and both files verify) are
  skipped; a damaged point is logged and recomputed; a finished point computed with other
  settings is a ConfigError naming the first setting that differs, unless `overwrite` (which
  recomputes every point of the task). A grid whose largest network cannot fit is a ConfigError
  (`check_fits`). Temporary files a SIGKILL left for the task's points are deleted first.
  Nothing is written when a check fails.

  Returns:
    {"points": the task's grid points, "skipped": finished before, "computed": trained now}.
  """
  start = time.time()
  devices = list(devices or jax.local_devices())
  groups = task_points(config, task_index, num_tasks)
  largest = check_fits(config, devices, seed_chunk=seed_chunk, groups=groups)
  mine = [p for g in groups for p in g]
  points_dir = os.path.join(output_dir, store.POINTS_DIR)
  os.makedirs(points_dir, exist_ok=True)
  stale = remove_stale_temp_files(points_dir, [f"{p.point_id}.{ext}" for p in mine
                                               for ext in ("csv", "json")])
  if stale:
    logging.info("removed %d temporary file(s) that an earlier killed run left in %s", len(stale),
                 points_dir)
  done = set() if overwrite else _check_finished(output_dir, config, mine)
  store.save_sweep_config(output_dir, config)
  logging.info("task %d of %d: %d of %d grid points in %d compiled groups, %d seeds each, on %d "
               "%s device(s) (%d workers)", task_index, num_tasks, len(mine),
               len(expand_grid(config)), len(groups), config.num_seeds, len(devices),
               devices[0].platform, len(parallel.workers(devices)))
  logging.info("largest network: about %.3g MiB to train (%.3g GiB available per device)",
               largest / 2 ** 20, parallel.available_memory_bytes(devices[0]) / GIB)
  if done:
    logging.info("skipping %d finished points", len(done))
  todo = [g for g in ([p for p in group if p.point_id not in done] for group in groups) if g]
  for group in groups:  # a checkpoint left behind by a group that finished after all
    if all(p.point_id in done for p in group):
      names = store.fingerprint({"points": sorted(p.point_id for p in group)})
      shutil.rmtree(os.path.join(output_dir, CHECKPOINTS_DIR, names), ignore_errors=True)
  if not todo:
    return {"points": len(mine), "skipped": len(done), "computed": 0}
  _announce_long(config, todo, devices)
  distributed.check_interrupted()
  data = load_data(config)
  check_data(config, data)
  check_fits(config, devices, data, seed_chunk, todo)
  key = jax.random.PRNGKey(config.seed)
  costs = [group_cost(g, config) for g in todo]
  done_cost = 0.0
  for i, group in enumerate(todo):
    t0 = time.time()
    block = group_block(group, config, data, devices, seed_chunk)
    workers = len(parallel.workers(devices))
    ckpt = group_checkpoint(output_dir, config, group, block, workers, data["task"],
                            checkpoint_steps, checkpoint_minutes)
    p = group[0]
    spec = train_spec(config, p.optimizer, data["task"])
    tracked = TrainingProgress(
        ckpt, f"group {i + 1} of {len(todo)} (depth {p.depth}, width {p.width}): training",
        len(group) * config.num_seeds, config.steps, block, workers,
        spec.steps // training.record_chunk(spec))
    for result in run_group(group, data, config, key, devices, block, tracked).values():
      store.write_point(output_dir, config, result)
    ckpt.remove()
    done_cost += costs[i]
    elapsed = time.time() - start
    logging.info("group %d of %d (depth %d, width %d, %s, %s; %d grid points x %d seeds, "
                 "blocks of %d networks) took %.1f s; elapsed %.1f s, remaining about %.0f s",
                 i + 1, len(todo), p.depth, p.width, p.activation, p.optimizer, len(group),
                 config.num_seeds, block, time.time() - t0, elapsed,
                 elapsed * (sum(costs) - done_cost) / done_cost)
    distributed.check_interrupted()  # the group is saved: stop here if asked to
  return {"points": len(mine), "skipped": len(done), "computed": sum(len(g) for g in todo)}
