"""Running a batch task of a sweep: its unfinished grid points, group by group, each point saved
as soon as its group is trained, so that an interrupted task resumes where it stopped."""
from __future__ import annotations

import os
import time
from typing import Any, Sequence

import jax
from absl import logging

from initjax import data as data_lib
from initjax import distributed, parallel
from initjax.errors import ConfigError
from initjax.sweep import store
from initjax.sweep.config import SweepConfig
from initjax.sweep.grid import expand_grid, group_cost, task_points
from initjax.sweep.group import group_chunk, load_data, run_group


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
             overwrite: bool = False) -> dict[str, int]:
  """Runs task `task_index` of `num_tasks`: its unfinished grid points, group by group, each
  point written by `store.write_point` as soon as its group is trained. Progress is logged.

  SIGINT/SIGTERM (with `distributed.raise_on_signals`) stop it once the group in progress is
  trained and saved (or before, while its networks are initialized): every file written is
  complete, and the rerun computes the rest.

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
               "%s device(s)", task_index, num_tasks, len(mine), len(expand_grid(config)),
               len(groups), config.num_seeds, len(devices), devices[0].platform)
  if done:
    logging.info("skipping %d finished points", len(done))
  todo = [g for g in ([p for p in group if p.point_id not in done] for group in groups) if g]
  if not todo:
    return {"points": len(mine), "skipped": len(done), "computed": 0}
  distributed.check_interrupted()
  data = load_data(config)
  mesh = parallel.make_mesh(devices)
  data = {**data, **parallel.replicate(data_lib.device_arrays(data), mesh)}
  key = jax.random.PRNGKey(config.seed)
  costs = [group_cost(g, config) for g in todo]
  done_cost = 0.0
  for i, group in enumerate(todo):
    t0 = time.time()
    chunk = group_chunk(group, config, data, devices, seed_chunk)
    for result in run_group(group, data, config, key, devices, chunk).values():
      store.write_point(output_dir, config, result)
    done_cost += costs[i]
    elapsed = time.time() - start
    p, b = group[0], len(group) * config.num_seeds
    logging.info("group %d of %d (depth %d, width %d, %s, %s; %d grid points x %d seeds, %d "
                 "chunk(s) of %d networks) took %.1f s; elapsed %.1f s, remaining about %.0f s",
                 i + 1, len(todo), p.depth, p.width, p.activation, p.optimizer, len(group),
                 config.num_seeds, -(-b // chunk), min(chunk, b), time.time() - t0, elapsed,
                 elapsed * (sum(costs) - done_cost) / done_cost)
    distributed.check_interrupted()  # the group is saved: stop here if asked to
  return {"points": len(mine), "skipped": len(done), "computed": sum(len(g) for g in todo)}
