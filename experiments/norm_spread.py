r"""Hanin & Rolnick 2018: the spread of log ||h_L||^2 over random ReLU networks against the sum
of 1/width over the layers, for constant and varying widths.

    python -m experiments.norm_spread --output_dir=out/norm_spread

Writes results.csv (profile x quantity: measured, standard error, exact theory, 5 beta),
summary.json and norm_spread.png into --output_dir (all or none), and prints the table.
"""
from __future__ import annotations

import time

from absl import flags

from experiments import cli

_NUM_NETWORKS = flags.DEFINE_integer("num_networks", 4000, "Random networks per width profile.")
_INPUT_DIM = flags.DEFINE_integer("input_dim", 64, "Input dimension n_0.")
_SEED = flags.DEFINE_integer("seed", 0, "Root PRNG seed.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/norm_spread", "Where results go.")
cli.define_config_flag()

FILES = ("results.csv", "summary.json", "norm_spread.png")


def main(argv):
  del argv
  import os  # pylint: disable=import-outside-toplevel

  from initjax.core import lock, results  # pylint: disable=import-outside-toplevel
  from initjax.studies import norm_spread  # pylint: disable=import-outside-toplevel
  config = norm_spread.SpreadConfig(num_networks=_NUM_NETWORKS.value,
                                    input_dim=_INPUT_DIM.value, seed=_SEED.value)
  output_dir = cli.output_dir("output_dir", _OUTPUT_DIR.value)
  with cli.hold_output_dir("output_dir", output_dir,
                           lock.Holder(role="norm_spread", what="a norm-spread run")) as held:
    cli.claim_output_dir("output_dir", output_dir, held, "norm_spread", FILES)
    start = time.perf_counter()
    result = norm_spread.run(config)
    paths = [os.path.join(output_dir, n) for n in FILES]
    try:
      results.atomic_write_files({
          paths[0]: results.csv_bytes(result["rows"], norm_spread.COLUMNS)[0],
          paths[1]: results.json_bytes(norm_spread.summary(config, result)),
          paths[2]: results.figure_bytes(norm_spread.plot(result), dpi=110)})
    except OSError as e:
      raise SystemExit(f"error: cannot write into {output_dir}: {e.strerror or e}; no file was "
                       "changed") from None
  print(f"{'profile':20s} {'beta':>6s} {'Var measured':>14s} {'exact':>7s} {'5 beta':>7s}")
  for r in result["rows"]:
    if r["quantity"] == "var_log_norm":
      print(f"{r['profile']:20s} {r['beta']:6.3f} {r['measured']:8.3f} +- "
            f"{r['standard_error']:.3f} {r['theory']:7.3f} {r['first_order']:7.3f}")
  print(f"wrote {', '.join(paths)} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  cli.run(main)
