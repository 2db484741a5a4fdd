r"""The order-to-chaos phase diagram of trainability (Schoenholz et al. 2017, figure 5).

    python -m experiments.phase_diagram --output_dir=out/phase_diagram
    python -m experiments.phase_diagram --quick        # a coarser grid, a first look

Trains MLPs of one activation (default tanh) with bias variance --sigma2_b (default 0.05) on
MNIST-1D over a grid of --sigma2_w (per fan-in weight variances) x --depths, all sigma2_w values
and seeds of a depth in one compiled, vmapped program, and writes results.csv (tidy: one row per
sigma2_w x depth x seed x metric), summary.json (the accuracy table, xi_c from the mean-field
theory, the trainable depth against xi_c) and phase_diagram.png into --output_dir. It is a sweep
(`initjax.sweep`): resumable, checkpointed and splittable into tasks with the same flags as
`experiments.sweep` (--task_index/--num_tasks, --checkpoint_every, ...); after a split, rerun
the command without --task_index to draw the diagram from the finished points.
"""
from __future__ import annotations

import os
import sys

from absl import flags

from experiments import cli, jobs

FLAGS = flags.FLAGS
_QUICK = {"sigma2_w": ["0.5", "1.0", "1.75", "2.5", "4.0"], "depths": ["4", "16", "48"],
          "num_seeds": 2, "steps": 500}

flags.DEFINE_list("sigma2_w", ["0.5", "1.0", "1.25", "1.5", "1.75", "2.0", "2.5", "3.0", "4.0"],
                  "Weight variances per fan-in (sigma_w^2 = fan_in Var[W]).")
flags.DEFINE_list("depths", ["2", "4", "8", "16", "32", "64"], "Numbers of hidden layers.")
flags.DEFINE_float("sigma2_b", 0.05, "Bias variance sigma_b^2.")
flags.DEFINE_string("activation", "tanh", "Activation (a registered name).")
flags.DEFINE_integer("width", 64, "Hidden units per layer.")
flags.DEFINE_integer("num_seeds", 4, "Networks per (sigma2_w, depth).")
flags.DEFINE_integer("steps", 1000, "Training steps (minibatch 100).")
flags.DEFINE_string("optimizer", "momentum", "Optimizer (initjax.optimizers).")
flags.DEFINE_float("learning_rate", 0.01, "Learning rate (of every sigma2_w, unless "
                   "--learning_rates searches one per sigma2_w).")
flags.DEFINE_list("learning_rates", [], "Candidate learning rates: each sigma2_w trains at the "
                  "one of the lowest mean final training loss in a search at --tune_depth "
                  "(written to <output_dir>/tuning, a sweep of its own). Empty: --learning_rate.")
flags.DEFINE_integer("tune_depth", 0, "Depth of the learning-rate search (0: the shallowest of "
                     "--depths).")
flags.DEFINE_integer("seed", 0, "Root seed of every PRNG key.")
flags.DEFINE_bool("quick", False, "A coarser grid (sigma2_w 0.5,1,1.75,2.5,4; depths 4,16,48; "
                  "2 seeds; 500 steps), for a first look; flags given explicitly still win.")
flags.DEFINE_string("data_dir", "", "Data cache (default $INITJAX_DATA_DIR or ~/.cache/initjax).")
flags.DEFINE_string("output_dir", "out/phase_diagram", "Where results are written.")
cli.define_config_flag()


def _value(name: str):
  """A flag's value, or its --quick default when --quick is on and the flag was not given."""
  if FLAGS.quick and name in _QUICK and not FLAGS[name].present:
    return _QUICK[name]
  return getattr(FLAGS, name)


def config_from_flags():
  from initjax.studies.phase_diagram import PhaseConfig  # pylint: disable=import-outside-toplevel
  return PhaseConfig(
      sigma2_w=tuple(cli.unique("sigma2_w", cli.parse_floats("sigma2_w", _value("sigma2_w"),
                                                             positive=True))),
      depths=tuple(cli.unique("depths", cli.parse_ints("depths", _value("depths")))),
      sigma2_b=FLAGS.sigma2_b, activation=FLAGS.activation, width=FLAGS.width,
      num_seeds=_value("num_seeds"), steps=_value("steps"), optimizer=FLAGS.optimizer,
      learning_rate=FLAGS.learning_rate, seed=FLAGS.seed, data_dir=FLAGS.data_dir,
      learning_rates=tuple(cli.unique("learning_rates", cli.parse_floats(
          "learning_rates", FLAGS.learning_rates, positive=True))) if FLAGS.learning_rates
      else (),
      tune_depth=FLAGS.tune_depth)


def accuracy_table(summary: dict) -> str:
  """Mean test accuracy as text: a row per depth, a column per sigma2_w (its exact value as a
  header), then xi_c."""
  from initjax.studies.phase_diagram import exact_text  # pylint: disable=import-outside-toplevel
  heads = [exact_text(s) for s in summary["sigma2_w"]]
  widths = [max(6, len(h)) for h in heads]
  row = lambda label, cells: f"{label:>6} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths))
  lines = [f"mean test accuracy (columns: sigma_w^2); trainable = at least "
           f"{summary['trainable_threshold']:.3f}", row("depth", heads)]
  for depth, values in zip(summary["depths"], summary["mean_test_accuracy"]):
    lines.append(row(depth, [f"{v:.3f}" if v is not None else "-" for v in values]))
  lines.append(row("xi_c", [f"{v:.1f}" for v in summary["xi_c"]]))
  lines.append(row("6 xi_c", [f"{v:.1f}" for v in summary["six_xi_c"]]))
  lines.append(row("train", [f"{v:.0f}" for v in summary["trainable_depth"]]))
  lines.append(row("fit", [f"{v:.0f}" for v in summary["fitting_depth"]]))
  if "tuning" in summary:
    lines.append(row("lr", [f"{v:g}" for v in summary["learning_rate"]]))
  lines.append(f"train: trainable on test accuracy; fit: every depth up to it reaches a median "
               f"final training loss <= {summary['train_loss_threshold']:.3f}")
  ratio = summary["median_trainable_depth_over_xi_c"]
  lines.append(f"critical sigma_w^2 = {summary['critical_sigma2_w']:.4f}; trainable depth / "
               f"xi_c (median where the edge is inside the grid): "
               f"{'n/a' if ratio is None else f'{ratio:.2f}'}")
  return "\n".join(lines)


def finish(config, output_dir: str, chosen=None, tuning=None) -> int:
  """Reads the finished points and writes results.csv, summary.json, phase_diagram.png (and
  with a learning-rate search, `tuning`, its rows in tuning.csv)."""
  from initjax.core import results
  from initjax.studies import phase_diagram  # pylint: disable=import-outside-toplevel
  from initjax.studies import phase_diagram_plot  # pylint: disable=import-outside-toplevel
  from initjax.studies.sweep import store  # pylint: disable=import-outside-toplevel
  from initjax.studies.sweep import report  # pylint: disable=import-outside-toplevel
  sweep_config = config.sweep_config(chosen)
  found, missing = store.load_results(output_dir, sweep_config)
  if missing:
    sys.stderr.write("error: " + report.describe_missing(
        missing, output_dir, sweep_config, hint="rerun this command, or its tasks, to "
        "compute them; the diagram is drawn once every point is finished") + "\n")
    return 1
  summary = phase_diagram.summary(config, found, tuning)
  paths = [os.path.join(output_dir, n) for n in phase_diagram.OUTPUT_FILES]
  files = {
      paths[0]: results.csv_bytes(phase_diagram.rows(config, found),
                                  phase_diagram.RESULT_COLUMNS)[0],
      paths[1]: results.json_bytes(summary),
      paths[2]: results.figure_bytes(phase_diagram_plot.plot(config, found), dpi=110)}
  if tuning is not None:
    paths.append(os.path.join(output_dir, phase_diagram.TUNING_FILE))
    files[paths[-1]] = results.csv_bytes(phase_diagram.rows(config, tuning),
                                         phase_diagram.RESULT_COLUMNS)[0]
  try:
    results.atomic_write_files(files)
  except OSError as e:
    raise SystemExit(f"error: cannot write into {output_dir}: {e.strerror or e}; no file was "
                     "changed") from None
  print(accuracy_table(summary))
  print("wrote " + ", ".join(paths))
  return 0


def search_learning_rates(config):
  """The learning-rate search into <output_dir>/tuning (this task's share of it): (sigma2_w ->
  rate, the search's points), or None while points of the search are unfinished (a split: the
  grid starts when the tasks are rerun after every task has done its share)."""
  from initjax.studies import phase_diagram  # pylint: disable=import-outside-toplevel
  from initjax.studies.sweep import store  # pylint: disable=import-outside-toplevel
  tuning_config = config.tuning_config()
  tuning_dir = os.path.join(FLAGS.output_dir, phase_diagram.TUNING_DIR)
  status = jobs.run_sweep_job(
      tuning_config, tuning_dir, lambda _: 0, "rerun the tasks: the grid starts once the "
      "learning-rate search in {output_dir} is complete", kind="phase_diagram", files=(),
      flag_of=phase_diagram.setting_name)
  if status:
    raise SystemExit(status)
  found, missing = store.load_results(tuning_dir, tuning_config)
  if missing:
    print(f"the learning-rate search in {tuning_dir} has {len(missing)} unfinished points; "
          "rerun the tasks once every task has done its share: the grid starts then")
    return None
  chosen = phase_diagram.choose_learning_rates(config, found)
  print(f"learning rate per sigma_w^2 (lowest mean final training loss at depth "
        f"{config.search_depth}): " + ", ".join(
            f"{phase_diagram.exact_text(s)}: {lr:g}" for s, lr in chosen.items()), flush=True)
  return chosen, found


def main(argv):
  del argv
  config = config_from_flags()
  from initjax.studies import phase_diagram  # pylint: disable=import-outside-toplevel
  chosen = tuning = None
  if config.tuned:
    if os.path.isdir(FLAGS.output_dir):   # refuse another command's directory before the search
      cli.check_output_kind("output_dir", FLAGS.output_dir, "phase_diagram")
    searched = search_learning_rates(config)
    if searched is None:
      return
    chosen, tuning = searched
  files = (*phase_diagram.OUTPUT_FILES, phase_diagram.TUNING_FILE)
  status = jobs.run_sweep_job(
      config.sweep_config(chosen), FLAGS.output_dir,
      lambda output_dir: finish(config, output_dir, chosen, tuning),
      "rerun this command without --task_index/--num_tasks to draw the diagram",
      kind="phase_diagram", files=files, flag_of=phase_diagram.setting_name)
  if status:
    raise SystemExit(status)


if __name__ == "__main__":
  cli.run(main)
