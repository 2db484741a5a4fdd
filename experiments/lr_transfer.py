r"""Learning-rate transfer: the training loss after a fixed budget against the learning rate,
one curve per width, for the standard parametrization and muP (`initjax.studies.lr_transfer`).

    python -m experiments.lr_transfer --output_dir=out/lr_transfer

A sweep underneath (`experiments.sweep`'s batch-job flags: --task_index/--num_tasks split it,
a rerun resumes it, --num_devices, --checkpoint_every, ...). A one-task run (or a rerun of the
same command once every task is done) writes the sweep's results.csv, summary.json and figures,
and lr_transfer.json (per parametrization and width: the loss of every learning rate, the best
one, the spread of the best over the widths in decades) and lr_transfer.png into --output_dir,
and prints the best learning rate per width.
"""
from __future__ import annotations

import os

from absl import flags

from experiments import cli, jobs

FLAGS = flags.FLAGS
_WIDTHS = flags.DEFINE_list("widths", ["64", "128", "256", "512", "1024", "2048"],
                            "Hidden widths (at least two).")
_LEARNING_RATES = flags.DEFINE_list(
    "learning_rates", ["1e-4", "3e-4", "1e-3", "3e-3", "1e-2", "3e-2", "1e-1"],
    "Learning rates (at the base width, for muP: every layer's is scaled from it).")
_PARAMETRIZATIONS = flags.DEFINE_list("parametrizations", ["sp", "mup"],
                                      "Parametrizations: sp, ntk, mup.")
_OPTIMIZER = flags.DEFINE_string("optimizer", "adam", "Optax optimizer (initjax.optimizers).")
_DEPTH = flags.DEFINE_integer("depth", 3, "Hidden layers K of the ReLU MLP.")
_STEPS = flags.DEFINE_integer("steps", 200, "Training steps (the fixed budget).")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 1, "Seeds per (width, learning rate, "
                                  "parametrization).")
_BASE_WIDTH = flags.DEFINE_integer("base_width", 0, "Width at which every parametrization is "
                                   "the standard one; 0: the narrowest width.")
_SEED = flags.DEFINE_integer("seed", 0, "Root PRNG seed.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Data cache (default $INITJAX_DATA_DIR or "
                                "~/.cache/initjax).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/lr_transfer", "Where results go.")
cli.define_config_flag()

FILES = ("lr_transfer.json", "lr_transfer.png")


def finish(output_dir: str, config) -> int:
  """Merges the sweep's points and writes the learning-rate transfer's summary and figure."""
  from initjax.core import results as results_lib  # pylint: disable=import-outside-toplevel
  from initjax.studies import lr_transfer  # pylint: disable=import-outside-toplevel
  from initjax.studies.sweep import report, store  # pylint: disable=import-outside-toplevel
  results, missing = store.load_results(output_dir, config)
  if missing:
    print(report.describe_missing(missing, output_dir, config))
    return 1
  paths = report.write_outputs(output_dir, config, results)
  summary = lr_transfer.summary(config, results)
  mine = [os.path.join(output_dir, n) for n in FILES]
  results_lib.atomic_write_files({mine[0]: results_lib.json_bytes(summary),
                                  mine[1]: results_lib.figure_bytes(lr_transfer.plot(summary),
                                                                    dpi=110)})
  print(f"best learning rate per width ({config.optimizers[0]}, {config.steps} steps, base "
        f"width {config.base()}; final training loss)")
  for name, entry in summary["parametrizations"].items():
    cells = "  ".join(f"{w}: {v['best_learning_rate']:g} ({v['best_final_train_loss']:.3f})"
                      if v["best_final_train_loss"] is not None else f"{w}: n/a"
                      for w, v in entry["widths"].items())
    print(f"{name:5s} spread {entry['best_lr_spread_decades']:.2f} decades   {cells}")
  print(f"wrote {', '.join([*paths.values(), *mine])}")
  return 0


def main(argv):
  del argv
  from initjax.studies import lr_transfer  # pylint: disable=import-outside-toplevel
  from initjax.studies.sweep import report  # pylint: disable=import-outside-toplevel
  from initjax.training import parametrization  # pylint: disable=import-outside-toplevel
  widths = cli.parse_ints("widths", _WIDTHS.value)
  if len(widths) < 2:
    raise cli.UsageError("widths", f"needs at least two different widths; got {widths}")
  lrs = cli.parse_floats("learning_rates", _LEARNING_RATES.value, positive=True)
  names = cli.parse_choices("parametrizations", _PARAMETRIZATIONS.value,
                            parametrization.parametrization_names())
  optimizer = cli.parse_choices("optimizer", [_OPTIMIZER.value],
                                parametrization.ADAM_LIKE + parametrization.SGD_LIKE)[0]
  config = lr_transfer.config(widths, lrs, parametrizations=names, optimizer=optimizer,
                              depth=_DEPTH.value, steps=_STEPS.value, num_seeds=_NUM_SEEDS.value,
                              base_width=_BASE_WIDTH.value, seed=_SEED.value,
                              data_dir=_DATA_DIR.value)
  status = jobs.run_sweep_job(
      config, _OUTPUT_DIR.value, lambda output_dir: finish(output_dir, config),
      "rerun this command without --task_index/--num_tasks: it merges the points",
      kind="sweep", files=[*report.OUTPUT_FILES, *FILES])
  if status:
    raise SystemExit(status)


if __name__ == "__main__":
  cli.run(main)
