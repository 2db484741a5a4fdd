"""Merges a sweep's per-point files into results.csv, summary.json and the figures.

    python -m experiments.report --output_dir=out/sweep

A sweep run as several tasks (`--task_index`/`--num_tasks`, a Slurm array, `scripts/run_local.sh`)
leaves one pair of files per grid point under --output_dir/points; this step reads them (and
--output_dir/sweep_config.json, the grid of the last sweep command) and writes the same files as
a one-task run, which runs this step itself. Missing grid points (never finished, or damaged:
a point file that fails verification is named with why) are listed and the exit status is 1,
unless --allow_partial (then summary.json lists them as missing_points); with no finished point
at all nothing is written. The report is refused while a sweep (or another report) holds
--output_dir (`initjax.lock`): run it once every task has finished.
"""
from __future__ import annotations

import os

from absl import flags

from experiments import cli
from initjax.core import lock
from initjax.studies.sweep import store

FLAGS = flags.FLAGS

flags.DEFINE_string("output_dir", "out/sweep", "The sweep's --output_dir.")
flags.DEFINE_bool("allow_partial", False, "Report the finished points even if some are missing.")


def main(argv):
  del argv
  if not os.path.isdir(FLAGS.output_dir):
    raise cli.UsageError("output_dir", f"{FLAGS.output_dir!r} is not a directory")
  cli.check_output_kind("output_dir", FLAGS.output_dir, "sweep")
  try:
    config = store.load_sweep_config(FLAGS.output_dir)
  except ValueError as e:
    raise cli.UsageError("output_dir", str(e)) from None
  output_dir = cli.output_dir("output_dir", FLAGS.output_dir)  # writable?
  with cli.hold_output_dir("output_dir", output_dir,
                           lock.Holder(role="report", what="a sweep report")):
    status = cli.print_report(output_dir, config, FLAGS.allow_partial)
  if status:
    raise SystemExit(status)


if __name__ == "__main__":
  cli.run(main)
