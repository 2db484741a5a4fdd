r"""Glorot & Bengio 2010: per-layer activation and back-propagated gradient distributions of deep
tanh and sigmoid MLPs on MNIST-1D, standard U[-1/sqrt(n), 1/sqrt(n)] vs normalized init, at
initialization and during training.

    python -m experiments.saturation --output_dir=out/saturation
    python -m experiments.saturation --config=experiments/configs/glorot_bengio2010_tanh.py

Writes results.csv (activation x init x seed x step x layer x quantity), histograms.csv (the
activation histograms per layer and step, averaged over seeds), summary.json and saturation.png
into --output_dir (all or none), and prints the slopes at initialization and the top hidden
layer's mean activation during training.
"""
from __future__ import annotations

import time

from absl import flags

from experiments import cli

_ACTIVATIONS = flags.DEFINE_list("activations", ["tanh", "sigmoid"], "Bounded activations: tanh, "
                                 "sigmoid, softsign.")
_INITS = flags.DEFINE_list("inits", ["he_uniform:gain=0.5773502691896258", "xavier_uniform"],
                           "Initializers (NAME or NAME:KEY=VALUE); the default pair is Glorot & "
                           "Bengio's standard U[-1/sqrt(n), 1/sqrt(n)] and normalized inits.")
_DEPTH = flags.DEFINE_integer("depth", 5, "Hidden layers K.")
_WIDTH = flags.DEFINE_integer("width", 256, "Units per hidden layer.")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 4, "Networks per (activation, init).")
_STEPS = flags.DEFINE_integer("steps", 2000, "Training steps.")
_STATS_EVERY = flags.DEFINE_integer("stats_every", 100, "Record the distributions every this "
                                    "many steps (and at 0 and the last step).")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.01, "Learning rate.")
_OPTIMIZER = flags.DEFINE_string("optimizer", "momentum", "Optax optimizer (initjax.optimizers).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Minibatch size.")
_SEED = flags.DEFINE_integer("seed", 0, "Root PRNG seed.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/saturation", "Where results go.")
cli.define_config_flag()

FILES = ("results.csv", "histograms.csv", "summary.json", "saturation.png")


def main(argv):
  del argv
  import os  # pylint: disable=import-outside-toplevel

  from initjax.core import lock, results  # pylint: disable=import-outside-toplevel
  from initjax.studies import saturation  # pylint: disable=import-outside-toplevel
  from initjax.training.optimizers import optimizer_names  # pylint: disable=import-outside-toplevel
  optimizer = cli.parse_choices("optimizer", [_OPTIMIZER.value], optimizer_names())[0]
  config = saturation.SaturationConfig(
      activations=tuple(cli.unique("activations", _ACTIVATIONS.value)),
      inits=tuple(cli.unique("inits", _INITS.value)), depth=_DEPTH.value, width=_WIDTH.value,
      num_seeds=_NUM_SEEDS.value, steps=_STEPS.value, stats_every=_STATS_EVERY.value,
      learning_rate=_LEARNING_RATE.value, optimizer=optimizer, batch_size=_BATCH_SIZE.value,
      seed=_SEED.value)
  output_dir = cli.output_dir("output_dir", _OUTPUT_DIR.value)
  with cli.hold_output_dir("output_dir", output_dir,
                           lock.Holder(role="saturation", what="a saturation run")) as held:
    cli.claim_output_dir("output_dir", output_dir, held, "saturation", FILES)
    start = time.perf_counter()
    result = saturation.run(config)
    summary = saturation.summary(config, result)
    paths = [os.path.join(output_dir, n) for n in FILES]
    try:
      results.atomic_write_files({
          paths[0]: results.csv_bytes(result["rows"], saturation.COLUMNS)[0],
          paths[1]: results.csv_bytes(result["histogram_rows"], saturation.HISTOGRAM_COLUMNS)[0],
          paths[2]: results.json_bytes(summary),
          paths[3]: results.figure_bytes(saturation.plot(result), dpi=90)})
    except OSError as e:
      raise SystemExit(f"error: cannot write into {output_dir}: {e.strerror or e}; no file was "
                       "changed") from None
  steps = summary["steps"]
  picks = sorted({0, len(steps) // 4, len(steps) // 2, len(steps) - 1})
  print(f"{'activation':10s} {'init':34s} {'fwd/layer':>9s} {'bwd/layer':>9s}  top layer mean "
        f"at steps {', '.join(str(steps[i]) for i in picks)}")
  for s in summary["settings"].values():
    means = "  ".join(f"{s['top_layer_mean_activation'][i]:+.3f}" for i in picks)
    print(f"{s['activation']:10s} {s['init']:34s} {s['forward_slope_at_init']:+9.3f} "
          f"{s['backward_slope_at_init']:+9.3f}  {means}")
  print(f"wrote {', '.join(paths)} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  cli.run(main)
