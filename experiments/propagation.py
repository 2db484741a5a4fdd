r"""The weight-initialization figure, measured over many random networks and exact at any depth.

    python -m experiments.propagation --output_dir=/tmp/fig

With no flags: the book's setup (50 hidden layers of 100 ReLU units, 100-dimensional standard
normal inputs, one output, y = 0, least squares, zero biases) for sigma2_Omega in
{0.001, 0.01, 0.02, 0.1, 1.0} plus he_normal and xavier_normal. Writes results.csv,
summary.json and propagation.png into --output_dir and prints the per-layer slopes.
"""
from __future__ import annotations

import logging
import time

from absl import flags

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
                                    "Local devices to shard the seeds over (0: all).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/propagation", "Where results go.")


def main(argv):
  del argv
  from initjax import activations, initializers  # pylint: disable=import-outside-toplevel
  weight_inits = [n for n in initializers.initializer_names() if n not in ("zeros", "constant")]
  sigma2 = cli.parse_floats("sigma2", _SIGMA2.value, positive=True, allow_empty=True)
  inits = cli.parse_choices("inits", _INITS.value, weight_inits, allow_empty=True)
  if not sigma2 and not inits:
    raise cli.UsageError("sigma2", "--sigma2 and --inits are both empty: nothing to measure")
  cli.parse_choices("activation", [_ACTIVATION.value], activations.activation_names())
  cli.parse_choices("dtype", [_DTYPE.value], ["float32", "float64"])
  for name, flag in (("depth", _DEPTH), ("width", _WIDTH), ("input_dim", _INPUT_DIM),
                     ("num_seeds", _NUM_SEEDS), ("batch_size", _BATCH_SIZE)):
    cli.check_min(name, flag.value, 1)
  cli.check_min("bias_variance", _BIAS_VARIANCE.value, 0.0)
  cli.check_min("seed_chunk", _SEED_CHUNK.value, 0)
  cli.check_min("num_devices", _NUM_DEVICES.value, 0)
  output_dir = cli.output_dir("output_dir", _OUTPUT_DIR.value)

  import jax  # pylint: disable=import-outside-toplevel
  if _DTYPE.value == "float64":
    jax.config.update("jax_enable_x64", True)
  if _NUM_DEVICES.value > jax.local_device_count():
    raise cli.UsageError("num_devices", f"must be between 0 and {jax.local_device_count()} "
                         f"(the local devices); got {_NUM_DEVICES.value}")
  from initjax import propagation_experiment as pe  # pylint: disable=import-outside-toplevel
  config = pe.config_from_values(
      sigma2=tuple(sigma2), inits=tuple(inits), depth=_DEPTH.value, width=_WIDTH.value,
      input_dim=_INPUT_DIM.value, activation=_ACTIVATION.value,
      bias_variance=_BIAS_VARIANCE.value, num_seeds=_NUM_SEEDS.value,
      batch_size=_BATCH_SIZE.value, seed=_SEED.value, dtype=_DTYPE.value,
      seed_chunk=_SEED_CHUNK.value, num_devices=_NUM_DEVICES.value)
  start = time.perf_counter()
  result = pe.run_propagation(config)
  paths = pe.write_outputs(output_dir, config, result)
  print(pe.slope_table(result))
  print(f"{len(result['rows'])} rows; wrote {', '.join(paths)} "
        f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  cli.run(main)
