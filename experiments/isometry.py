r"""Dynamical isometry: Jacobian spectra of critical random networks against free probability.

    python -m experiments.isometry --output_dir=/tmp/iso

For linear, tanh and ReLU MLPs at the critical point (chi_1 = 1; tanh with --tanh_sigma2_b so
that q* is small), with Gaussian and orthogonal weights, measures the spectrum of J_k J_k^T
(J_k = dh_k/dx, inputs at the fixed point) of --num_seeds networks of --width units at every
depth in --depths, and compares it with Pennington, Schoenholz & Ganguli's free-probability
prediction. Writes results.csv (depth x quantity, measured, standard error, theory),
densities.csv (the density of log10 s^2 per bin, measured and predicted), summary.json
(configuration, per-depth summaries, the variance's slope in depth) and spectra.png,
moments.png into --output_dir (all or none), and prints the slopes. --quick: small sizes.
"""
from __future__ import annotations

import os

# LAPACK's own threads slow the SVDs and QRs a hundredfold on a loaded machine, and the
# workers already use the cores (`initjax.core.parallel.workers`): before NumPy or JAX load.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time  # noqa: E402  pylint: disable=wrong-import-position

from absl import flags, logging  # noqa: E402  pylint: disable=wrong-import-position

from experiments import cli  # noqa: E402  pylint: disable=wrong-import-position

_ACTIVATIONS = flags.DEFINE_list("activations", ["identity", "tanh", "relu"],
                                 "Activations (identity is the linear network).")
_WEIGHTS = flags.DEFINE_list("weights", ["gaussian", "orthogonal"], "Weight distributions.")
_DEPTHS = flags.DEFINE_list("depths", ["1", "2", "4", "8", "16", "32", "64", "128", "256"],
                            "Depths L at which the spectrum is taken (one network of the "
                            "largest depth per seed: J_L for each L).")
_DENSITY_DEPTHS = flags.DEFINE_list("density_depths", ["4", "16", "64", "256"],
                                    "Depths (among --depths) whose densities are compared.")
_WIDTH = flags.DEFINE_integer("width", 256, "Units per layer (and input dimension).")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 64, "Random networks per case.")
_TANH_SIGMA2_B = flags.DEFINE_float("tanh_sigma2_b", 1e-3, "tanh bias variance; its critical "
                                    "sigma_w^2 and q* follow (1e-3: 1.189, 0.107).")
_SEED = flags.DEFINE_integer("seed", 0, "Root PRNG seed.")
_QUICK = flags.DEFINE_bool("quick", False, "Small sizes (width 32, depths up to 16, 8 seeds) "
                           "for a smoke test; other size flags are ignored.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/isometry", "Where results go.")
cli.define_compilation_cache_flag()

FILES = ("results.csv", "densities.csv", "summary.json", "spectra.png", "moments.png")


def config_from_flags():
  """The SpectraConfig of the flags (it checks itself; errors name the flag)."""
  from initjax.studies import isometry_spectra as study  # pylint: disable=import-outside-toplevel
  common = dict(
      activations=tuple(cli.parse_choices("activations", _ACTIVATIONS.value, study.ACTIVATIONS)),
      weights=tuple(cli.parse_choices("weights", _WEIGHTS.value, study.spectra.WEIGHTS)),
      tanh_sigma2_b=_TANH_SIGMA2_B.value, seed=_SEED.value)
  if _QUICK.value:
    return study.SpectraConfig(depths=(1, 2, 4, 8, 16), density_depths=(4, 16), width=32,
                               num_seeds=8, **common)
  return study.SpectraConfig(
      depths=tuple(cli.parse_ints("depths", _DEPTHS.value)),
      density_depths=tuple(cli.parse_ints("density_depths", _DENSITY_DEPTHS.value)),
      width=_WIDTH.value, num_seeds=_NUM_SEEDS.value, **common)


def write_files(output_dir: str, config, result) -> list[str]:
  """Every file of FILES, all or none (`atomic_write_files`)."""
  from initjax.core import results  # pylint: disable=import-outside-toplevel
  from initjax.studies import isometry_spectra as study  # pylint: disable=import-outside-toplevel
  paths = [os.path.join(output_dir, n) for n in FILES]
  results.atomic_write_files({
      paths[0]: results.csv_bytes(result["rows"], study.RESULT_COLUMNS)[0],
      paths[1]: results.csv_bytes(result["density_rows"], study.DENSITY_COLUMNS)[0],
      paths[2]: results.json_bytes(study.summary(config, result)),
      paths[3]: results.figure_bytes(study.plot_densities(config, result), dpi=110),
      paths[4]: results.figure_bytes(study.plot_moments(config, result), dpi=110)})
  return paths


def main(argv):
  del argv
  config = config_from_flags()
  from initjax.core import lock  # pylint: disable=import-outside-toplevel
  from initjax.studies import isometry_spectra as study  # pylint: disable=import-outside-toplevel
  output_dir = cli.output_dir("output_dir", _OUTPUT_DIR.value)
  with cli.hold_output_dir("output_dir", output_dir,
                           lock.Holder(role="isometry", what="a Jacobian spectra run")) as held:
    cli.claim_output_dir("output_dir", output_dir, held, "isometry", FILES)
    start = time.perf_counter()
    result = study.run(config)
    flagged = sum(r["num_flagged"] for r in result["rows"] if r["quantity"] == "mean_s2")
    if flagged:
      logging.warning("%d (network, depth) spectra could not be measured (overflow); they are "
                      "counted in num_flagged and left out of the summaries", flagged)
    try:
      paths = write_files(output_dir, config, result)
    except OSError as e:
      raise SystemExit(f"error: cannot write into {output_dir}: {e.strerror or e}; no file was "
                       "changed") from None
  print(study.slope_table(result))
  print(f"{len(result['rows'])} rows; wrote {', '.join(paths)} "
        f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  cli.run(main)
