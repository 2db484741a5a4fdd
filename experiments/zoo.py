r"""The standard models researchers write, measured and trained (`initjax.studies.zoo`).

    python -m experiments.zoo --model=transformer --output_dir=/tmp/zoo_transformer
    python -m experiments.zoo --model=rnn --output_dir=/tmp/zoo_rnn
    python -m experiments.zoo --model=resnet --output_dir=/tmp/zoo_resnet

transformer: a pre-LayerNorm encoder (Flax's attention), He vs Xavier vs Flax's default, every
layer's forward and backward variance; rnn: nn.RNN over a tanh cell, orthogonal vs He vs
Xavier recurrent kernels, per time step against the mean field; resnet: a 1-D ResNet with
BatchNorm trained on MNIST-1D many seeds at once, He vs Xavier. Writes results.csv (tidy:
study, init, layer, step, seed, quantity, value), summary.json (configuration and summary) and
zoo_<model>.png into --output_dir (all or none), and prints the table.
"""
from __future__ import annotations

import dataclasses
import os
import time

from absl import flags

from experiments import cli

_MODEL = flags.DEFINE_string("model", "transformer", "Study: transformer, rnn or resnet.")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 0, "Random networks per initializer (0: 64 for "
                                  "transformer and rnn, 8 trained ones for resnet).")
_SEED = flags.DEFINE_integer("seed", 0, "Root PRNG seed.")
_LAYERS = flags.DEFINE_integer("layers", 4, "transformer: encoder blocks.")
_STEPS = flags.DEFINE_integer("steps", 50, "rnn: time steps.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 300, "resnet: training steps.")
_WIDTH = flags.DEFINE_integer("width", 0, "d_model (transformer), hidden units (rnn), "
                              "channels (resnet); 0: 64, 64, 32.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/zoo", "Where results go.")
cli.define_compilation_cache_flag()


def main(argv):
  del argv
  from initjax.core import lock, results  # pylint: disable=import-outside-toplevel
  from initjax.studies import zoo  # pylint: disable=import-outside-toplevel
  config = zoo.ZooConfig(model=_MODEL.value, num_seeds=_NUM_SEEDS.value, seed=_SEED.value,
                         layers=_LAYERS.value, steps=_STEPS.value,
                         train_steps=_TRAIN_STEPS.value, width=_WIDTH.value)
  output_dir = cli.output_dir("output_dir", _OUTPUT_DIR.value)
  names = ("results.csv", "summary.json", f"zoo_{config.model}.png")
  with cli.hold_output_dir("output_dir", output_dir,
                           lock.Holder(role="zoo", what="a model-zoo study")) as held:
    cli.claim_output_dir("output_dir", output_dir, held, "zoo", names)
    start = time.perf_counter()
    result = zoo.run(config)
    paths = [os.path.join(output_dir, n) for n in names]
    try:
      results.atomic_write_files({
          paths[0]: results.csv_bytes(result["rows"], zoo.COLUMNS)[0],
          paths[1]: results.json_bytes({"config": dataclasses.asdict(config),
                                        "summary": result["summary"]}),
          paths[2]: results.figure_bytes(zoo.plot(config, result), dpi=110)})
    except OSError as e:
      raise SystemExit(f"error: cannot write into {output_dir}: {e.strerror or e}; no file was "
                       "changed") from None
  print(zoo.table(config, result))
  print(f"{len(result['rows'])} rows; wrote {', '.join(paths)} "
        f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  cli.run(main)
