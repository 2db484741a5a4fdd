"""Training sweep: He vs Xavier (or any initializers) across depths, optimizers, learning rates.

    python -m experiments.sweep --output_dir=out/sweep

Trains every grid point (init x depth x width x activation x optimizer x learning rate) for
--num_seeds seeds and writes results.csv (tidy), summary.json (config + summary table) and
loss_curves.png, gradient_variance.png into --output_dir. The science is in `initjax.sweep` and
`initjax.training`; this file only parses flags.

--learning_rates: comma-separated entries OPTIMIZER:LR (for that optimizer; repeat to sweep
several) or LR (for every optimizer). An optimizer without an entry uses its default
(momentum 0.01, adam 0.001, sgd/nesterov 0.01, adamw/rmsprop/lamb 0.001, adagrad 0.01), so the
default run trains momentum at 0.01 and adam at 0.001.
"""
from __future__ import annotations

import dataclasses

from absl import flags

from experiments import cli
from initjax import sweep, training
from initjax.optimizers import DEFAULT_LEARNING_RATES

_DEFAULTS = sweep.SweepConfig()
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

_INT_FLAGS = ("num_seeds", "steps", "batch_size", "seed", "log_every", "eval_every",
              "stats_every", "stats_batch_size")


def config_from_flags() -> sweep.SweepConfig:
  """Builds and validates the SweepConfig; every problem is a one-line UsageError."""
  ints = {name: getattr(FLAGS, name) for name in _INT_FLAGS}
  try:
    config = sweep.SweepConfig(
        inits=tuple(v.strip() for v in FLAGS.inits),
        depths=tuple(cli.parse_ints("depths", FLAGS.depths)),
        widths=tuple(cli.parse_ints("widths", FLAGS.widths)),
        activations=tuple(v.strip() for v in FLAGS.activations),
        optimizers=tuple(v.strip() for v in FLAGS.optimizers),
        learning_rates=(),
        loss_threshold=FLAGS.loss_threshold,
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, **ints)
    sweep.check_config(config)  # names first, so learning-rate entries can be checked against them
    config = dataclasses.replace(config, learning_rates=sweep.parse_learning_rates(
        FLAGS.learning_rates, config.optimizers))
    return sweep.check_config(config)
  except sweep.ConfigError as e:
    raise cli.UsageError(e.field, e.message) from None


def main(argv):
  del argv
  config = config_from_flags()
  output_dir = cli.output_dir("output_dir", FLAGS.output_dir)
  training.use_cpu_cores()
  results = sweep.run_sweep(config, log=lambda msg: print(msg, flush=True))
  paths = sweep.write_outputs(output_dir, config, results)
  print(sweep.format_summary_table(sweep.summarize(results)))
  print("wrote " + ", ".join(paths.values()))


if __name__ == "__main__":
  cli.run(main)
