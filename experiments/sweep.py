"""Training sweep: He vs Xavier (or any initializers) across depths, optimizers, learning rates.

    python -m experiments.sweep --output_dir=out/sweep

Trains every grid point (init x depth x width x activation x optimizer x learning rate) for
--num_seeds seeds and writes results.csv (tidy), summary.json (config + summary table) and
loss_curves.png, gradient_variance.png into --output_dir. The science is in `initjax.sweep` and
`initjax.training`; this file only parses flags, prints the results and sets the exit status.

Past one device:
  * the seeds (networks) of a compiled group are spread over the local devices in blocks, one
    worker thread per device (--num_devices to use fewer), or one per core on a CPU;
  * --task_index/--num_tasks (default: Slurm's SLURM_ARRAY_TASK_ID/COUNT, or the process of a
    multi-process JAX job) run one share of the grid; every grid point is written to
    --output_dir/points as soon as it is trained; a one-task run then merges them (as
    `python -m experiments.report` does after a split run);
  * rerunning the same command skips the finished points and resumes the group in progress
    from its checkpoint; finished points computed with other settings are an error, unless
    --overwrite (recompute every point of the task);
  * --coordinator_address/--num_processes/--process_id start `jax.distributed` (Slurm with
    several tasks and Cloud TPU pods are detected without them);
  * every group's training state is checkpointed (--checkpoint_every, and on SIGTERM/SIGINT):
    a rerun resumes an interrupted group from its last checkpoint, with identical results;
  * --seed_chunk sets the networks each worker trains per call (default: one grid point's
    seeds, fewer if they do not fit in memory); results depend on it, not on --num_devices.
  * a grid whose largest network cannot fit in one device's memory is refused at once;
  * the run holds --output_dir (`initjax.lock`): another run into it is refused, naming that
    process, unless it is another task of the same split (same settings and --num_tasks);
  * a damaged point file is named in the log and recomputed (`initjax.sweep.store`).

A value listed twice in a list flag is used once (with a warning).

--learning_rates: comma-separated entries OPTIMIZER:LR (for that optimizer; repeat to sweep
several) or LR (for every optimizer). An optimizer without an entry uses its default
(momentum 0.01, adam 0.001, sgd/nesterov 0.01, adamw/rmsprop/lamb 0.001, adagrad 0.01), so the
default run trains momentum at 0.01 and adam at 0.001.
"""
from __future__ import annotations

import signal
import sys

from absl import flags

from experiments import cli
from initjax import data as data_lib
from initjax import checkpoints, distributed, parallel
from initjax.optimizers import DEFAULT_LEARNING_RATES, optimizer_names
from initjax.sweep import SweepConfig, run_task
from initjax.sweep.grid import task_points
from initjax.sweep.tasks import check_fits, task_holder

_DEFAULTS = SweepConfig()
FLAGS = flags.FLAGS

flags.DEFINE_list("inits", list(_DEFAULTS.inits), "Initializers (initjax.initializers names).")
flags.DEFINE_list("depths", [str(d) for d in _DEFAULTS.depths], "Numbers of hidden layers K.")
flags.DEFINE_list("widths", [str(w) for w in _DEFAULTS.widths], "Hidden widths D_h.")
flags.DEFINE_list("activations", list(_DEFAULTS.activations), "Activations.")
flags.DEFINE_list("optimizers", list(_DEFAULTS.optimizers), "Optimizers (initjax.optimizers).")
flags.DEFINE_list("learning_rates", [],
                  "Entries OPTIMIZER:LR or LR (every optimizer); optimizers without one use "
                  "their default: " + ", ".join(f"{k} {v:g}" for k, v in
                                                DEFAULT_LEARNING_RATES.items()) + ".")
flags.DEFINE_integer("num_seeds", _DEFAULTS.num_seeds, "Seeds per grid point.")
flags.DEFINE_integer("steps", _DEFAULTS.steps, "Training steps.")
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Minibatch size.")
flags.DEFINE_string("dataset", _DEFAULTS.dataset, "mnist1d or teacher_student.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Root seed of every PRNG key.")
flags.DEFINE_integer("log_every", _DEFAULTS.log_every, "Train loss rows every N steps.")
flags.DEFINE_integer("eval_every", _DEFAULTS.eval_every, "Test metrics every N steps.")
flags.DEFINE_integer("stats_every", _DEFAULTS.stats_every,
                    "Per-layer variances every N steps.")
flags.DEFINE_integer("stats_batch_size", _DEFAULTS.stats_batch_size,
                    "Training examples used for the per-layer variances.")
flags.DEFINE_float("loss_threshold", _DEFAULTS.loss_threshold,
                    "Train loss for 'steps to reach the threshold'.")
flags.DEFINE_string("data_dir", "", "Data cache (default $INITJAX_DATA_DIR or ~/.cache/initjax).")
flags.DEFINE_string("output_dir", "out/sweep", "Where results are written.")
flags.DEFINE_integer("num_devices", 0, "Local devices to shard the seeds over (0: all).")
flags.DEFINE_integer("seed_chunk", 0, "Networks each worker (device, or CPU core) trains per "
                     "call (0: one grid point's seeds, fewer if they do not fit in memory).")
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

_INT_FLAGS = ("num_seeds", "steps", "batch_size", "seed", "log_every", "eval_every",
              "stats_every", "stats_batch_size")


def config_from_flags() -> SweepConfig:
  """Builds the SweepConfig (which checks itself); every problem is a one-line UsageError."""
  ints = {name: getattr(FLAGS, name) for name in _INT_FLAGS}
  optimizers = tuple(cli.parse_choices("optimizers", FLAGS.optimizers, optimizer_names()))
  return SweepConfig(
      inits=tuple(cli.unique("inits", [v.strip() for v in FLAGS.inits])),
      depths=tuple(cli.parse_ints("depths", FLAGS.depths)),
      widths=tuple(cli.parse_ints("widths", FLAGS.widths)),
      activations=tuple(cli.unique("activations", [v.strip() for v in FLAGS.activations])),
      optimizers=optimizers,
      learning_rates=cli.parse_learning_rates(FLAGS.learning_rates, optimizers,
                                              optimizer_names()),
      loss_threshold=FLAGS.loss_threshold, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
      **ints)


def devices_and_task() -> tuple[list, int, int]:
  """Starts jax.distributed when asked (or when the cluster shows a multi-process job), exposes
  the CPU cores as devices, and returns (devices, task_index, num_tasks)."""
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
    raise cli.UsageError("num_devices", str(e)) from None
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


def main(argv):
  del argv
  config = config_from_flags()
  try:
    every_steps, every_minutes = checkpoints.parse_every(FLAGS.checkpoint_every)
  except ValueError as e:
    raise cli.UsageError("checkpoint_every", str(e)) from None
  distributed.raise_on_signals((signal.SIGINT, signal.SIGTERM))
  output_dir = FLAGS.output_dir
  try:
    devices, task_index, num_tasks = devices_and_task()
    check_fits(config, devices, seed_chunk=FLAGS.seed_chunk,
               groups=task_points(config, task_index, num_tasks))
    check_data_dir(config)
    output_dir = cli.output_dir("output_dir", FLAGS.output_dir)
    with cli.hold_output_dir("output_dir", output_dir,
                             task_holder(config, task_index, num_tasks)):
      run_task(config, output_dir, task_index, num_tasks, devices=devices,
               seed_chunk=FLAGS.seed_chunk, overwrite=FLAGS.overwrite,
               checkpoint_steps=every_steps, checkpoint_minutes=every_minutes)
      if num_tasks > 1:
        print(f"task {task_index} of {num_tasks} done; when every task is done: "
              f"python -m experiments.report --output_dir={output_dir}", flush=True)
        return
      distributed.check_interrupted()
      status = cli.print_report(output_dir, config)
  except KeyboardInterrupt as e:
    signum = getattr(e, "signum", signal.SIGINT)
    sys.stderr.write(f"interrupted by {signal.Signals(signum).name}: the finished grid points "
                     f"are in {output_dir}/points; rerun the same command to compute the rest\n")
    raise SystemExit(128 + signum) from None
  except OSError as e:  # a full disk, a directory removed under the run
    sys.stderr.write(f"error: {e.strerror or e}{f' ({e.filename})' if e.filename else ''}; the "
                     f"finished grid points are kept in {output_dir}/points: rerun the same "
                     "command to compute the rest\n")
    raise SystemExit(1) from None
  if status:
    raise SystemExit(status)


if __name__ == "__main__":
  cli.run(main)
