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
  * --seed_chunk sets the networks each worker trains per call (default: one on a CPU core,
    where vmapping networks gains nothing over running them one by one; on an accelerator one
    grid point's seeds, fewer if they do not fit); results depend on it, not on --num_devices.
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

from absl import flags

from experiments import cli, jobs
from initjax.studies.sweep import SweepConfig, report
from initjax.training.optimizers import DEFAULT_LEARNING_RATES, optimizer_names

_DEFAULTS = SweepConfig()
FLAGS = flags.FLAGS

flags.DEFINE_list("inits", list(_DEFAULTS.inits), "Initializers (initjax.initializers names), "
                  "NAME:KEY=VALUE with its keyword arguments (orthogonal:gain=1.09), or "
                  "sigma2_w=V: a plain normal of variance V / fan_in.")
flags.DEFINE_list("archs", list(_DEFAULTS.archs), "Architectures: mlp (the book's), resmlp "
                  "(residual, pre-activation blocks), cnn (1-D convolutions), rnn, lstm, gru "
                  "(recurrent, --recurrent_inits).")
flags.DEFINE_list("norms", list(_DEFAULTS.norms), "Normalizations of the hidden "
                  "pre-activations (mlp): none, batchnorm (batch statistics in training, running "
                  "averages for evaluation), layernorm.")
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
flags.DEFINE_float("bias_variance", _DEFAULTS.bias_variance,
                   "Variance of the biases' normal draws (0: zero biases).")
flags.DEFINE_string("branch_scale", _DEFAULTS.branch_scale, "resmlp branch scale alpha: one, "
                    "invsqrt (1/sqrt(depth)) or skipinit (learnable, 0 at initialization).")
flags.DEFINE_integer("kernel_size", _DEFAULTS.kernel_size, "cnn kernel size.")
flags.DEFINE_string("padding", _DEFAULTS.padding, "cnn padding: circular or zero.")
flags.DEFINE_list("recurrent_inits", list(_DEFAULTS.recurrent_inits),
                  "rnn/lstm/gru: initializers of the recurrent kernels, one grid axis (default "
                  "orthogonal; identity is Le et al.'s IRNN); --inits draws the input kernels "
                  "and the readout. Their --depths are time steps: each example's values read "
                  "as depth steps (mnist1d: 40 steps of one value at depth 40).")
flags.DEFINE_string("data_dir", "", "Data cache (default $INITJAX_DATA_DIR or ~/.cache/initjax).")
flags.DEFINE_string("output_dir", "out/sweep", "Where results are written.")
cli.define_config_flag()

_INT_FLAGS = ("num_seeds", "steps", "batch_size", "seed", "log_every", "eval_every",
              "stats_every", "stats_batch_size")


def config_from_flags() -> SweepConfig:
  """Builds the SweepConfig (which checks itself); every problem is a one-line UsageError."""
  ints = {name: getattr(FLAGS, name) for name in _INT_FLAGS}
  optimizers = tuple(cli.parse_choices("optimizers", FLAGS.optimizers, optimizer_names()))
  archs = tuple(cli.unique("archs", [v.strip() for v in FLAGS.archs]))
  cli.check_arch_flags(archs, "recurrent_inits")
  return SweepConfig(
      inits=tuple(cli.unique("inits", [v.strip() for v in FLAGS.inits])),
      depths=tuple(cli.parse_ints("depths", FLAGS.depths)),
      widths=tuple(cli.parse_ints("widths", FLAGS.widths)),
      activations=tuple(cli.unique("activations", [v.strip() for v in FLAGS.activations])),
      optimizers=optimizers,
      learning_rates=cli.parse_learning_rates(FLAGS.learning_rates, optimizers,
                                              optimizer_names()),
      loss_threshold=FLAGS.loss_threshold, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
      archs=archs, recurrent_inits=tuple(cli.unique(
          "recurrent_inits", [v.strip() for v in FLAGS.recurrent_inits if v.strip()])),
      bias_variance=FLAGS.bias_variance, branch_scale=FLAGS.branch_scale,
      kernel_size=FLAGS.kernel_size, padding=FLAGS.padding,
      norms=tuple(cli.unique("norms", [v.strip() for v in FLAGS.norms])), **ints)


def main(argv):
  del argv
  config = config_from_flags()
  status = jobs.run_sweep_job(config, FLAGS.output_dir, lambda output_dir: cli.print_report(
      output_dir, config), "python -m experiments.report --output_dir={output_dir}",
                              kind="sweep", files=report.OUTPUT_FILES)
  if status:
    raise SystemExit(status)


if __name__ == "__main__":
  cli.run(main)
