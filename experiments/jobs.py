"""Flags and flow shared by the entry points that run a sweep as a batch job
(`experiments.sweep`, `experiments.phase_diagram`): devices, tasks of a split, hosts,
checkpoints, the directory lock, interruption and exit status.

The job trains its task's unfinished grid points (`initjax.sweep.run_task`), and a one-task run
then writes its outputs with `finish(output_dir) -> exit status`. SIGTERM/SIGINT save the group
in progress (its checkpoint) and stop with status 128 + signal; a full disk stops with one line
and status 1; every finished point stays, and rerunning the same command resumes.
"""
from __future__ import annotations

import signal
import sys
from typing import Callable, Sequence

from absl import flags

from experiments import cli
from initjax.core import distributed, parallel
from initjax.core.errors import ConfigError
from initjax.studies.sweep import SweepConfig, run_task, store
from initjax.studies.sweep.grid import task_points
from initjax.studies.sweep.tasks import check_fits, task_holder
from initjax.training import checkpoints
from initjax.training import data as data_lib

FLAGS = flags.FLAGS

flags.DEFINE_integer("num_devices", 0, "Local devices to spread the networks over (0: all; a "
                     "CPU's cores are used by one worker thread each).")
flags.DEFINE_integer("seed_chunk", 0, "Networks each worker (device, or CPU core) trains per "
                     "call (0: one per CPU core, the fastest there; on accelerators one grid "
                     "point's seeds, fewer if they do not fit in memory).")
flags.DEFINE_string("checkpoint_every", "10m", "Save each group's training state every N steps "
                    "(e.g. 200) or minutes (e.g. 10m), and always on SIGTERM/SIGINT; 0: only on "
                    "a signal.")
flags.DEFINE_integer("task_index", None, "This task's index in [0, --num_tasks) (default: "
                     "$SLURM_ARRAY_TASK_ID, or the JAX process index, or 0).")
flags.DEFINE_integer("num_tasks", None, "Tasks the grid is split into (default: "
                     "$SLURM_ARRAY_TASK_COUNT, or the JAX process count, or 1).")
flags.DEFINE_bool("overwrite", False, "Recompute this task's finished grid points.")
flags.DEFINE_string("coordinator_address", "", "host:port of process 0, for a multi-process "
                    "JAX job (jax.distributed.initialize).")
flags.DEFINE_integer("num_processes", None, "Processes of a multi-process JAX job.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process JAX job.")
cli.define_compilation_cache_flag()


def devices_and_task() -> tuple[list, int, int]:
  """Starts jax.distributed when asked (or when the cluster shows a multi-process job) and
  returns (devices, task_index, num_tasks)."""
  cli.check_min("num_devices", FLAGS.num_devices, 0)
  cli.check_min("seed_chunk", FLAGS.seed_chunk, 0)
  for name, minimum in (("task_index", 0), ("num_tasks", 1), ("num_processes", 1),
                        ("process_id", 0)):
    if getattr(FLAGS, name) is not None:
      cli.check_min(name, getattr(FLAGS, name), minimum)
  if FLAGS.task_index is not None and FLAGS.num_tasks is not None:
    if FLAGS.task_index >= FLAGS.num_tasks:
      raise cli.UsageError("task_index", f"must be < --num_tasks={FLAGS.num_tasks}; "
                           f"got {FLAGS.task_index}")
  distributed.maybe_initialize(FLAGS.coordinator_address or None, FLAGS.num_processes,
                               FLAGS.process_id)
  try:
    devices = parallel.local_devices(FLAGS.num_devices or None)
  except ValueError as e:
    raise cli.UsageError("num_devices", str(e).removeprefix("num_devices ")) from None
  try:
    task_index, num_tasks = distributed.task_from_env(FLAGS.task_index, FLAGS.num_tasks)
  except ValueError as e:
    flag = str(e).split()[0]
    if flag not in ("task_index", "num_tasks"):  # SLURM_ARRAY_TASK_* that is not a number
      raise cli.UsageError("task_index", f"cannot tell this task from the environment "
                           f"(SLURM_ARRAY_TASK_ID/COUNT/MIN): {e}; pass --task_index and "
                           "--num_tasks") from None
    raise cli.UsageError(flag, str(e)) from None
  return devices, task_index, num_tasks


def check_data_dir(config: SweepConfig) -> None:
  if config.dataset == "mnist1d":  # the only data set cached on disk
    try:
      data_lib.check_data_dir(config.data_dir or None)
    except ValueError as e:
      raise cli.UsageError("data_dir", str(e)) from None


def run_sweep_job(config: SweepConfig, output_dir: str, finish: Callable[[str], int],
                  merge_hint: str, kind: str, files: Sequence[str],
                  flag_of: Callable[[str], str] = lambda field: field) -> int:
  """Runs this task of `config` into `output_dir`, then (a one-task run) `finish(output_dir)`;
  `merge_hint` (formatted with output_dir) tells a task of a split how to merge. `kind` is what
  the directory holds (`initjax.output_kind`: "sweep" or "phase_diagram"), `files` the outputs
  the job writes at its top (`cli.claim_output_dir`); `flag_of` names the entry point's flag
  of a sweep setting, for the errors of the sweep's checks (a `ConfigError`). Returns the exit
  status; exits with 128 + signal when interrupted, 1 on an OS error."""
  try:
    every_steps, every_minutes = checkpoints.parse_every(FLAGS.checkpoint_every)
  except ValueError as e:
    raise cli.UsageError("checkpoint_every", str(e)) from None
  distributed.raise_on_signals((signal.SIGINT, signal.SIGTERM))
  try:
    devices, task_index, num_tasks = devices_and_task()
    check_fits(config, devices, seed_chunk=FLAGS.seed_chunk,
               groups=task_points(config, task_index, num_tasks))
    check_data_dir(config)
    output_dir = cli.output_dir("output_dir", output_dir)
    with cli.hold_output_dir("output_dir", output_dir,
                             task_holder(config, task_index, num_tasks)) as held:
      cli.claim_output_dir("output_dir", output_dir, held, kind,
                           [store.SWEEP_CONFIG_FILE, *files])
      run_task(config, output_dir, task_index, num_tasks, devices=devices,
               seed_chunk=FLAGS.seed_chunk, overwrite=FLAGS.overwrite,
               checkpoint_steps=every_steps, checkpoint_minutes=every_minutes)
      if num_tasks > 1:
        print(f"task {task_index} of {num_tasks} done; when every task is done: "
              + merge_hint.format(output_dir=output_dir), flush=True)
        return 0
      distributed.check_interrupted()
      return finish(output_dir)
  except ConfigError as e:
    raise ConfigError(flag_of(e.field), e.message) from None
  except KeyboardInterrupt as e:
    signum = getattr(e, "signum", signal.SIGINT)
    sys.stderr.write(f"interrupted by {signal.Signals(signum).name}: the finished grid points "
                     f"are in {output_dir}/points and the group in progress is checkpointed; "
                     "rerun the same command to compute the rest\n")
    raise SystemExit(128 + signum) from None
  except OSError as e:  # a full disk, a directory removed under the run
    sys.stderr.write(f"error: {e.strerror or e}{f' ({e.filename})' if e.filename else ''}; the "
                     f"finished grid points are kept in {output_dir}/points: rerun the same "
                     "command to compute the rest\n")
    raise SystemExit(1) from None
