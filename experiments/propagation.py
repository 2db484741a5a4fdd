r"""The weight-initialization figure, measured over many random networks and exact at any depth.

    python -m experiments.propagation --output_dir=/tmp/fig

With no flags: the book's setup (50 hidden layers of 100 ReLU units, 100-dimensional standard
normal inputs, one output, y = 0, least squares, zero biases) for sigma2_Omega in
{0.001, 0.01, 0.02, 0.1, 1.0} plus he_normal and xavier_normal. Writes results.csv,
summary.json and propagation.png into --output_dir (all three or none) and prints the per-layer
slopes. A network whose one seed cannot fit in the available memory is refused before anything
is compiled; the run holds --output_dir (`initjax.lock`), so a second run into it is refused.
A value listed twice in --sigma2 or --inits is used once (with a warning).
"""
from __future__ import annotations

import os
import time

from absl import flags, logging

from experiments import cli

_SIGMA2 = flags.DEFINE_list("sigma2", ["0.001", "0.01", "0.02", "0.1", "1.0"],
                            "Fixed weight variances sigma2_Omega (all layers); may be empty.")
_INITS = flags.DEFINE_list("inits", ["he_normal", "xavier_normal"],
                           "Registered initializers to add as curves; may be empty.")
_DEPTH = flags.DEFINE_integer("depth", 50, "Number of hidden layers K.")
_WIDTH = flags.DEFINE_integer("width", 100, "Hidden units per layer D_h.")
_INPUT_DIM = flags.DEFINE_integer("input_dim", 100, "Input dimension D_in.")
_ACTIVATION = flags.DEFINE_string("activation", "relu", "Activation function.")
_BIAS_VARIANCE = flags.DEFINE_float("bias_variance", 0.0, "Variance of the biases beta_k.")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 200, "Random networks per setting.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Standard-normal inputs per network.")
_SEED = flags.DEFINE_integer("seed", 0, "Root PRNG seed.")
_DTYPE = flags.DEFINE_string("dtype", "float32", "float32, or float64 as a cross-check.")
_SEED_CHUNK = flags.DEFINE_integer("seed_chunk", 0,
                                   "Networks vmapped per step (0: chosen from memory).")
_NUM_DEVICES = flags.DEFINE_integer("num_devices", 0,
                                    "Local devices to spread the seeds over (0: all; on a CPU, "
                                    "one per core).")
_ARCH = flags.DEFINE_string("arch", "mlp", "Architecture: mlp (the book's, exact in log space), "
                           "resmlp (residual), cnn (1-D convolutions; --input_dim is the "
                           "sequence length, --width the channels), or the recurrent rnn, lstm, "
                           "gru (--depth time steps of --input_dim values, --recurrent_init).")
_BRANCH_SCALE = flags.DEFINE_string("branch_scale", "one",
                                    "resmlp branch scale: one, invsqrt (1/sqrt(depth)) or skipinit.")
_KERNEL_SIZE = flags.DEFINE_integer("kernel_size", 5, "cnn kernel size.")
_PADDING = flags.DEFINE_string("padding", "circular", "cnn padding: circular or zero.")
_RECURRENT_INIT = flags.DEFINE_list(
    "recurrent_init", [], "rnn/lstm/gru: initializers of the recurrent kernels, one curve each "
    "per --sigma2/--inits setting (which draw the input kernels and the readout); default "
    "orthogonal; identity is Le et al.'s IRNN. For these architectures --depth is the number of "
    "time steps and --input_dim the values per step.")
_NORM = flags.DEFINE_string("norm", "none", "Normalization of the hidden pre-activations (mlp): "
                            "none, batchnorm (statistics over the --batch_size inputs, as at "
                            "initialization) or layernorm.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/propagation", "Where results go.")
cli.define_compilation_cache_flag()
cli.define_config_flag()


def config_from_flags():
  """The FigureConfig of the flags (it checks itself; errors name the flag)."""
  from initjax.studies import propagation_figure  # pylint: disable=import-outside-toplevel
  cli.check_arch_flags([_ARCH.value], "recurrent_init")
  return propagation_figure.FigureConfig(
      sigma2=tuple(cli.parse_floats("sigma2", _SIGMA2.value, positive=True, allow_empty=True)),
      inits=tuple(cli.unique("inits", [v.strip() for v in _INITS.value if v.strip()])),
      depth=_DEPTH.value,
      width=_WIDTH.value, input_dim=_INPUT_DIM.value, activation=_ACTIVATION.value,
      bias_variance=_BIAS_VARIANCE.value, num_seeds=_NUM_SEEDS.value,
      batch_size=_BATCH_SIZE.value, seed=_SEED.value, dtype=_DTYPE.value,
      seed_chunk=_SEED_CHUNK.value, num_devices=_NUM_DEVICES.value, arch=_ARCH.value,
      branch_scale=_BRANCH_SCALE.value, kernel_size=_KERNEL_SIZE.value, padding=_PADDING.value,
      recurrent_init=tuple(cli.unique("recurrent_init", [v.strip() for v in _RECURRENT_INIT.value
                                                          if v.strip()])),
      norm=_NORM.value)


def check_fits(config, devices) -> None:
  """Refuses a network whose seeds cannot fit in the available memory, before compiling: each
  worker measures at least one seed at a time (--seed_chunk per worker when given), and the
  workers of a CPU share the host's memory."""
  from initjax.core import parallel  # pylint: disable=import-outside-toplevel
  from initjax.measurement import propagation
  need = propagation.seed_bytes(config.spec(), 8 if config.dtype == "float64" else 4)
  device, gib = devices[0], 2.0 ** 30
  available = parallel.available_memory_bytes(device)
  # Workers drawing on `available` at once: every thread of a CPU, one per accelerator.
  shared = len(parallel.workers(devices)) if device.platform == "cpu" else 1
  what = (f"one network of depth {config.depth}, width {config.width} (--input_dim="
          f"{config.input_dim}, --batch_size={config.batch_size}, {config.dtype}) needs about "
          f"{need / gib:.3g} GiB")
  where = f"{available / gib:.3g} GiB available on {device.platform} device {device.id}"
  if need * shared > available:
    together = (f"; the {shared} CPU workers measure one each at once: "
                f"{need * shared / gib:.3g} GiB" if shared > 1 else "")
    raise cli.UsageError("depth/--width", f"{what}{together}; {where}")
  chunk = min(config.seed_chunk, max(len(config.sigma2), 1) * config.num_seeds)
  if chunk and need * chunk * shared > available:
    raise cli.UsageError("seed_chunk", f"{config.seed_chunk} networks per worker at once need "
                         f"about {need * chunk * shared / gib:.3g} GiB: {what}; {where}")


def write_files(output_dir: str, config, result) -> list[str]:
  """results.csv, summary.json and propagation.png, all or none (`atomic_write_files`)."""
  from initjax.core import results  # pylint: disable=import-outside-toplevel
  from initjax.studies import propagation_figure as figure  # pylint: disable=import-outside-toplevel
  paths = [os.path.join(output_dir, n) for n in figure.OUTPUT_FILES]
  results.atomic_write_files({
      paths[0]: results.csv_bytes(result["rows"], figure.RESULT_COLUMNS)[0],
      paths[1]: results.json_bytes(figure.summary(config, result)),
      paths[2]: results.figure_bytes(figure.plot(config, result), dpi=110)})
  return paths


def main(argv):
  del argv
  config = config_from_flags()

  import jax  # pylint: disable=import-outside-toplevel

  from initjax.core import lock, parallel  # pylint: disable=import-outside-toplevel
  from initjax.studies import propagation_figure as figure  # pylint: disable=import-outside-toplevel
  if config.dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  devices = jax.local_device_count()
  if config.num_devices > devices:
    raise cli.UsageError("num_devices", f"must be between 0 (all) and {devices} (the local "
                         f"devices); got {config.num_devices}")
  check_fits(config, parallel.local_devices(config.num_devices or None))
  output_dir = cli.output_dir("output_dir", _OUTPUT_DIR.value)
  with cli.hold_output_dir("output_dir", output_dir,
                           lock.Holder(role="figure", what="a propagation figure run")) as held:
    cli.claim_output_dir("output_dir", output_dir, held, "propagation_figure", figure.OUTPUT_FILES)
    logging.info("%d setting(s) x %d seeds; %s network(s) vmapped per step (--seed_chunk), "
                 "%d worker(s) on %d device(s)", len(config.sigma2) + len(config.inits),
                 config.num_seeds, config.seed_chunk or "default",
                 len(parallel.workers(parallel.local_devices(config.num_devices or None))),
                 config.num_devices or devices)
    start = time.perf_counter()
    result = figure.run(config)
    for label, count in result["flagged"].items():
      if count:
        logging.warning(
            "%s: %d (seed, layer, quantity) values could not be measured in %s (overflow, "
            "underflow to zero or NaN); they are flagged in results.csv and left out of the "
            "summaries. Try --dtype=float64 or a ReLU network with zero bias (exact in log "
            "space).", label, count, config.dtype)
    if len(result["rows"]) >= 100_000:
      logging.info("writing %d rows and the figure into %s", len(result["rows"]), output_dir)
    try:
      paths = write_files(output_dir, config, result)
    except OSError as e:
      raise SystemExit(f"error: cannot write into {output_dir}: {e.strerror or e}; no file was "
                       "changed") from None
  print(figure.slope_table(result))
  print(f"{len(result['rows'])} rows; wrote {', '.join(paths)} "
        f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  cli.run(main)
