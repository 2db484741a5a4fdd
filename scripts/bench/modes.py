"""The sizes of the three modes: full (longer; not timed yet), --quick (about 5.5 min on 2
CPU cores) and --tiny (seconds, for tests: every code path runs, the figures mean nothing).

One dict per section, and `max_threads`: the most threads a NumPy or PyTorch baseline is tried
with (None: one per core; 1 in --tiny, whose concurrent sections would make spinning threads
the slowest part of a test). The training and CNN workloads share `data` (MNIST-1D-shaped: 4000 x 40
training inputs, 10 classes, drawn with NumPy; a test set of one minibatch, which only initjax
evaluates, at steps 0 and T).
"""
from __future__ import annotations

from typing import Any

# The default He vs Xavier sweep, and the reduced ones of --quick and --tiny (flags appended to
# `python -m experiments.sweep`; the empty list is the default sweep).
SWEEP_QUICK = ["--steps=100", "--num_seeds=2"]
SWEEP_TINY = ["--steps=10", "--num_seeds=1", "--depths=2", "--widths=8", "--inits=he_normal",
              "--optimizers=momentum", "--batch_size=10", "--eval_every=5", "--stats_every=5",
              "--log_every=5", "--stats_batch_size=10"]

_DATA = dict(n_train=4000, n_test=100, input_dim=40, classes=10)

FULL: dict[str, Any] = dict(
    max_threads=None,
    matmul=dict(n=2048, n_accelerator=8192, repeats=15),
    propagation=dict(depth=50, width=100, input_dim=100, batch_sizes=(100, 1000),
                     seeds={100: 256, 1000: 32}, loop_seeds={100: 16, 1000: 4}, repeats=7),
    data=_DATA,
    training=dict(depth=30, widths={"w100": 100, "w32": 32}, batch=100, networks=8,
                  steps=200, repeats=3, learning_rate=0.01, torch_processes=True),
    cnn=dict(depth=6, channels=32, kernel_size=5, padding="circular", batch=100, networks=8,
             steps=20, repeats=3, learning_rate=0.01, torch_processes=True),
    cnn_batchnorm=dict(depth=6, channels=32, kernel_size=5, padding="circular", batch=100,
                       networks=8, steps=20, repeats=3, learning_rate=0.01, torch_processes=True,
                       norm="batchnorm"),
    recurrent=dict(cells=("rnn", "lstm"), width=64, time_steps=40, batch=100, networks=8,
                   steps=100, repeats=3, learning_rate=0.01, torch_processes=True),
    models=dict(probe=dict(depth=6, width=256, batch=256, seeds=256, loop_seeds=32, repeats=3),
                comparison=dict(d_model=64, tokens=16, seeds=8),
                rnn_compile=dict(hidden=64, steps=(50, 200), repeats=2),
                bn_resnet=dict(networks=8, steps=50, batch=100, channels=32, repeats=2)),
    compile=dict(depths=(10, 50, 200), batch=100, repeats=3),
    memory=dict(num_seeds=10000, batch_size=100),
    sweep=dict(flags=[], timeout_s=1800),
    isometry=dict(depth=128, width=256, networks=128, loop_networks=16, repeats=3))


def _changed(base: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
  """`base` with some entries of some sections changed."""
  return {name: {**value, **sections[name]} if name in sections else value
          for name, value in base.items()}


MODES: dict[str, dict[str, Any]] = {
    "full": FULL,
    "quick": _changed(
        FULL, matmul=dict(repeats=10),
        propagation=dict(seeds={100: 64, 1000: 8}, loop_seeds={100: 6, 1000: 2}, repeats=5),
        training=dict(steps=100), cnn=dict(networks=4, repeats=2),
        cnn_batchnorm=dict(networks=4, repeats=2), compile=dict(repeats=1),
        recurrent=dict(steps=50, repeats=2),
        models=dict(probe=dict(depth=6, width=256, batch=256, seeds=128, loop_seeds=16,
                               repeats=2),
                    comparison=dict(d_model=64, tokens=16, seeds=8),
                    rnn_compile=dict(hidden=64, steps=(50, 200), repeats=1),
                    bn_resnet=dict(networks=4, steps=30, batch=100, channels=32, repeats=1)),
        sweep=dict(flags=SWEEP_QUICK, timeout_s=900),
        isometry=dict(loop_networks=8, repeats=2)),
    # Tiny: both width slots use the same width, so the second reuses the compiled programs of
    # the first (compilation is most of a tiny run's time), and no PyTorch worker processes are
    # started (their start-up would be most of it; tests/test_benchmark.py runs them on their
    # own).
    "tiny": dict(
        max_threads=1,
        matmul=dict(n=128, n_accelerator=256, repeats=3),
        propagation=dict(depth=4, width=16, input_dim=16, batch_sizes=(8,), seeds={8: 8},
                         loop_seeds={8: 2}, repeats=2),
        data=dict(n_train=64, n_test=32, input_dim=8, classes=3),
        training=dict(depth=3, widths={"w100": 16, "w32": 16}, batch=8, networks=2, steps=4,
                      repeats=1, learning_rate=0.01, torch_processes=False),
        cnn=dict(depth=2, channels=4, kernel_size=3, padding="circular", batch=8, networks=2,
                 steps=4, repeats=1, learning_rate=0.01, torch_processes=False),
        cnn_batchnorm=dict(depth=2, channels=4, kernel_size=3, padding="circular", batch=8,
                           networks=2, steps=4, repeats=1, learning_rate=0.01,
                           torch_processes=False, norm="batchnorm"),
        recurrent=dict(cells=("rnn", "lstm"), width=4, time_steps=4, batch=8, networks=2,
                       steps=4, repeats=1, learning_rate=0.01, torch_processes=False),
        models=dict(probe=dict(depth=2, width=8, batch=8, seeds=4, loop_seeds=2, repeats=1),
                    comparison=dict(d_model=8, tokens=2, seeds=1),
                    rnn_compile=dict(hidden=4, steps=(5, 20), repeats=1),
                    bn_resnet=dict(networks=2, steps=2, batch=8, channels=4, repeats=1)),
        compile=dict(depths=(2, 8), batch=8, repeats=1),
        memory=dict(num_seeds=1000, batch_size=8),
        sweep=dict(flags=SWEEP_TINY, timeout_s=600),
        isometry=dict(depth=4, width=16, networks=4, loop_networks=2, repeats=1)),
}


def config(mode: str) -> dict[str, Any]:
  """The sizes of `mode` (a copy), JSON-ready (dict keys as strings)."""
  def jsonable(v):
    if isinstance(v, dict):
      return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
      return [jsonable(x) for x in v]
    return v
  return jsonable(MODES[mode])
