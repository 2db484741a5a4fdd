"""Running a batch task of a sweep: its unfinished grid points, group by group, each point saved
as soon as its group is trained, so that an interrupted task resumes where it stopped."""
from __future__ import annotations

import os
import shutil
import time
from typing import Any, Sequence

import jax
from absl import logging

from initjax import checkpoints, distributed, parallel, training
from initjax.errors import ConfigError
from initjax.sweep import store
from initjax.sweep.config import SweepConfig
from initjax.sweep.grid import expand_grid, group_cost, task_points
from initjax.sweep.group import group_block, load_data, run_group, train_spec

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
  """The ids of `points` already finished under output_dir; ConfigError if one was computed
  with other settings (naming the first setting that differs)."""
  states = {p.point_id: store.point_state(output_dir, config, p) for p in points}
  differ = {pid: diff for pid, (state, diff) in states.items() if state == "differs"}
  if differ:
    first, diff = next(iter(differ.items()))
    field = next(iter(diff))
    points_dir = os.path.join(output_dir, store.POINTS_DIR)
    raise ConfigError(field if field in store.POINT_SETTINGS else "overwrite", (
        f"{len(differ)} finished point(s) under {points_dir} were computed with other "
        f"settings: {store.describe_difference(diff)} (e.g. {first}); rerun with their settings, "
        "pass --overwrite to recompute them, or use another --output_dir"))
  return {pid for pid, (state, _) in states.items() if state == "done"}


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

  Finished points (their JSON holds this config's fingerprint) are skipped; a finished point
  computed with other settings is a ConfigError naming the first setting that differs, unless
  `overwrite` (which recomputes every point of the task). Temporary files a SIGKILL left for the
  task's points are deleted first. Nothing is written when the check fails.

  Returns:
    {"points": the task's grid points, "skipped": finished before, "computed": trained now}.
  """
  start = time.time()
  devices = list(devices or jax.local_devices())
  groups = task_points(config, task_index, num_tasks)
  mine = [p for g in groups for p in g]
  points_dir = os.path.join(output_dir, store.POINTS_DIR)
  os.makedirs(points_dir, exist_ok=True)
  stale = store.remove_stale_temp_files(points_dir, [f"{p.point_id}.{ext}" for p in mine
                                                     for ext in ("csv", "json")])
  if stale:
    logging.info("removed %d temporary file(s) that an earlier killed run left in %s", stale,
                 points_dir)
  done = set() if overwrite else _check_finished(output_dir, config, mine)
  store.save_sweep_config(output_dir, config)
  logging.info("task %d of %d: %d of %d grid points in %d compiled groups, %d seeds each, on %d "
               "%s device(s) (%d workers)", task_index, num_tasks, len(mine),
               len(expand_grid(config)), len(groups), config.num_seeds, len(devices),
               devices[0].platform, len(parallel.workers(devices)))
  if done:
    logging.info("skipping %d finished points", len(done))
  todo = [g for g in ([p for p in group if p.point_id not in done] for group in groups) if g]
  for group in groups:  # a checkpoint left behind by a group that finished after all
    if all(p.point_id in done for p in group):
      names = store.fingerprint({"points": sorted(p.point_id for p in group)})
      shutil.rmtree(os.path.join(output_dir, CHECKPOINTS_DIR, names), ignore_errors=True)
  if not todo:
    return {"points": len(mine), "skipped": len(done), "computed": 0}
  distributed.check_interrupted()
  data = load_data(config)
  key = jax.random.PRNGKey(config.seed)
  costs = [group_cost(g, config) for g in todo]
  done_cost = 0.0
  for i, group in enumerate(todo):
    t0 = time.time()
    block = group_block(group, config, data, devices, seed_chunk)
    ckpt = group_checkpoint(output_dir, config, group, block, len(parallel.workers(devices)),
                            data["task"], checkpoint_steps, checkpoint_minutes)
    for result in run_group(group, data, config, key, devices, block, ckpt).values():
      store.write_point(output_dir, config, result)
    ckpt.remove()
    done_cost += costs[i]
    elapsed = time.time() - start
    p = group[0]
    logging.info("group %d of %d (depth %d, width %d, %s, %s; %d grid points x %d seeds, "
                 "blocks of %d networks) took %.1f s; elapsed %.1f s, remaining about %.0f s",
                 i + 1, len(todo), p.depth, p.width, p.activation, p.optimizer, len(group),
                 config.num_seeds, block, time.time() - t0, elapsed,
                 elapsed * (sum(costs) - done_cost) / done_cost)
    distributed.check_interrupted()  # the group is saved: stop here if asked to
  return {"points": len(mine), "skipped": len(done), "computed": sum(len(g) for g in todo)}
