r"""The coordinate check: every layer's activation size against width after a few training
steps, for the standard parametrization and muP (`initjax.studies.coord_check`).

    python -m experiments.coord_check --output_dir=out/coord_check
    python -m experiments.coord_check --config=experiments/configs/coord_check.py:quick

Writes results.csv (width x parametrization x layer x step x seed x statistic), summary.json
(the config, each parameter's kind, the slopes of ln(size) against ln(width) per
parametrization, layer kind and step) and coord_check.png into --output_dir (all or none), and
prints the slopes of the l1 size per step.
"""
from __future__ import annotations

import time

from absl import flags

from experiments import cli

_WIDTHS = flags.DEFINE_list("widths", ["64", "128", "256", "512", "1024", "2048"],
                            "Widths of the hidden layers (at least two).")
_PARAMETRIZATIONS = flags.DEFINE_list("parametrizations", ["sp", "mup"],
                                      "Parametrizations: sp, ntk, mup.")
_OPTIMIZER = flags.DEFINE_string("optimizer", "adam", "Optax optimizer (initjax.optimizers).")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.01, "Learning rate (at base_width).")
_STEPS = flags.DEFINE_integer("steps", 4, "Training steps (recorded at 0..steps).")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 4, "Networks per (width, parametrization).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Minibatch size.")
_BASE_WIDTH = flags.DEFINE_integer("base_width", 0, "Width at which every parametrization is "
                                   "the standard one; 0: the narrowest width.")
_DEPTH = flags.DEFINE_integer("depth", 3, "Hidden layers K of the ReLU MLP.")
_ACTIVATION = flags.DEFINE_string("activation", "relu", "Activation (initjax.activations).")
_SEED = flags.DEFINE_integer("seed", 0, "Root PRNG seed.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/coord_check", "Where results go.")
cli.define_config_flag()

FILES = ("results.csv", "summary.json", "coord_check.png")


def main(argv):
  del argv
  import os  # pylint: disable=import-outside-toplevel

  from initjax.core import lock, results  # pylint: disable=import-outside-toplevel
  from initjax.nn.activations import activation_names  # pylint: disable=import-outside-toplevel
  from initjax.studies import coord_check  # pylint: disable=import-outside-toplevel
  from initjax.training import data as data_lib  # pylint: disable=import-outside-toplevel
  from initjax.training import parametrization  # pylint: disable=import-outside-toplevel
  widths = cli.parse_ints("widths", _WIDTHS.value)
  if len(widths) < 2:
    raise cli.UsageError("widths", f"needs at least two different widths; got {widths}")
  names = cli.parse_choices("parametrizations", _PARAMETRIZATIONS.value,
                            parametrization.parametrization_names())
  optimizer = cli.parse_choices("optimizer", [_OPTIMIZER.value],
                                parametrization.ADAM_LIKE + parametrization.SGD_LIKE)[0]
  activation = cli.parse_choices("activation", [_ACTIVATION.value], activation_names())[0]
  config = coord_check.CoordCheckConfig(
      widths=tuple(widths), parametrizations=tuple(names), optimizer=optimizer,
      learning_rate=_LEARNING_RATE.value, steps=_STEPS.value, num_seeds=_NUM_SEEDS.value,
      batch_size=_BATCH_SIZE.value, base_width=_BASE_WIDTH.value, depth=_DEPTH.value,
      activation=activation, seed=_SEED.value)
  output_dir = cli.output_dir("output_dir", _OUTPUT_DIR.value)
  with cli.hold_output_dir("output_dir", output_dir,
                           lock.Holder(role="coord_check", what="a coordinate check")) as held:
    cli.claim_output_dir("output_dir", output_dir, held, "coord_check", FILES)
    start = time.perf_counter()
    result = coord_check.run(config, data_lib.load_mnist1d())
    summary = coord_check.summary(config, result)
    paths = [os.path.join(output_dir, n) for n in FILES]
    try:
      results.atomic_write_files({
          paths[0]: results.csv_bytes(result["rows"], coord_check.COLUMNS)[0],
          paths[1]: results.json_bytes(summary),
          paths[2]: results.figure_bytes(coord_check.plot(result), dpi=90)})
    except OSError as e:
      raise SystemExit(f"error: cannot write into {output_dir}: {e.strerror or e}; no file was "
                       "changed") from None
  print(f"slope of ln(l1) against ln(width), widths {config.widths[0]}..{config.widths[-1]}, "
        f"{config.optimizer} lr {config.learning_rate:g}, base width {config.base}")
  print(f"{'parametrization':15s} {'kind':7s} " + " ".join(f"{'step ' + str(t):>8s}"
                                                         for t in range(config.steps + 1)))
  for name, kinds in summary["slopes"]["l1"].items():
    for kind, entry in kinds.items():
      cells = " ".join("     n/a" if s is None else f"{s:+8.2f}" for s in entry["slope"])
      print(f"{name:15s} {kind:7s} {cells}")
  if summary["num_nonfinite"]:
    print(f"warning: {summary['num_nonfinite']} recorded values are not finite (diverged "
          "networks); their slopes are n/a")
  print(f"wrote {', '.join(paths)} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  cli.run(main)
