#!/usr/bin/env python
"""Benchmarks of initjax against what researchers run instead, with the device's matmul ceiling.

    python scripts/benchmark.py            # full run (longer than --quick; not timed yet)
    python scripts/benchmark.py --quick    # about 5.5 min on 2 CPU cores
    python scripts/benchmark.py --tiny     # seconds: tiny sizes, for tests (figures meaningless)
    python scripts/benchmark.py --output=path/to/benchmark.json --skip=sweep_start,memory

PyTorch rows need the optional extra (`pip install -e ".[bench]"`); without it they are skipped
with a note and their ratios are None; INITJAX_BENCH_NO_TORCH=1 runs as if it were not installed
(`import torch` fails in the benchmark's processes; tests/test_benchmark.py uses it).

Prints a table and writes JSON (default ./benchmark.json): the machine and its load, the
versions, the sizes, every figure (median, min and all repeats of every timing, warm-up
separately), `ratios` and `targets` (met/missed).

Sections (`scripts/bench/`, one module each):
  matmul        the dense float32 matmul ceiling, before and after propagation
  propagation   the weight-initialization figure's workload: `propagation.measure` against NumPy,
                jit-per-seed and PyTorch loops over seeds
  training      (child) depth-30 ReLU MLPs trained with momentum SGD, widths 100 and 32:
                `run_networks` against a PyTorch loop over seeds and torch.func vmap
  cnn           (child) the 1-D CNN: vmapped against a per-seed loop and PyTorch
  cnn_batchnorm (child) the same CNN with batchnorm before every ReLU (nn.BatchNorm1d)
  recurrent     (child) tanh rnn and lstm (width 64, MNIST-1D-shaped inputs read as 40 steps)
                trained with momentum SGD: `run_networks` against loops of nn.RNN / nn.LSTM
  models        (child) the probe against a PyTorch loop with hooks; compiles per initializer
                comparison; nn.RNN's probe compile time at 50 and 200 steps; a BatchNorm
                ResNet's vmapped training against a PyTorch loop
  compile       compile time of the propagation and training programs by depth
  memory        (child) peak resident memory of a 10,000-seed propagation run
  sweep_start   (child) cold vs warm start of `python -m experiments.sweep` with a fresh
                persistent compilation cache
  isometry      (child) Jacobian spectra of critical tanh MLPs: `isometry.measure` against a
                NumPy loop (products of layer matrices, then numpy.linalg.svd) and jit per network

Method: the contenders of a comparison run in one process, each called once to warm up
(compilation excluded, reported as first_call_s), then round-robin for several repeats; the
median is reported and ratios are ratios of medians. In --tiny the child sections run at the
same time as the rest (the figures mean nothing there; only the wall time of a test matters).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(SCRIPTS)
for _path in (REPO, SCRIPTS):
  if _path not in sys.path:
    sys.path.insert(0, _path)
# Child processes share an accelerator with this one: no process may take most of its memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# pylint: disable-next=wrong-import-position
from bench import children, machine, modes, report, table, torch_peers

ORDER = ("matmul", "propagation", "training", "cnn", "cnn_batchnorm", "recurrent", "models",
         "compile", "memory", "sweep_start", "isometry")
CHILD_TIMEOUT_S = 3600.0

FLOP_CONVENTION = (
    "propagation: per network, forward 2*N*D_in*D_out for each of the K+1 layers plus the "
    "backward activation-gradient products dl/dh_k = dl/df_k Omega_k, 2*N*D_in*D_out for "
    "k = 1..K (dl/dx not computed); random numbers, elementwise work and reductions not counted. "
    "training: 3 * 2*B*sum(multiply-adds per example of every layer's forward product) per "
    "network-step (forward, activation gradients, weight gradients); a convolution layer counts "
    "L*s*C_in*C_out. isometry: 2*D^3 per hidden layer after the first (the Jacobian products "
    "J_k = D_k W_k J_{k-1}; the forward pass, SVDs and random numbers not counted). "
    "matmul: 2*n^3.")

METHOD = (
    "one process per comparison; one warm-up call per contender excluded (first_call_s, "
    "includes compilation); round-robin repeats; medians; ratios of medians. Training: every "
    "contender trains the same networks from the same initial weights on the same minibatches "
    "(initjax's order) with the same optimizer and number of steps (the rows' losses agree); "
    "network-steps = networks x steps (updates); initjax also evaluates the test set and "
    "records per-layer statistics at steps 0 and T (eval_every = stats_every = steps). PyTorch "
    "rows: the best of 1 thread and one per core enters the ratios. Targets were set for a "
    "2-core CPU. --tiny: sizes for tests, XLA optimizations off, 1-thread baselines; its figures "
    "mean nothing.")


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="smaller run, about 5.5 min on 2 CPU cores")
  parser.add_argument("--tiny", action="store_true", help="tiny sizes (for tests)")
  parser.add_argument("--output", default="benchmark.json", help="JSON output path")
  parser.add_argument("--skip", default="", help=f"comma-separated sections: {','.join(ORDER)}")
  parser.add_argument("--_child", default="", help=argparse.SUPPRESS)
  parser.add_argument("--_mode", default="full", help=argparse.SUPPRESS)
  parser.add_argument("--_result", default="", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  unknown = {s for s in args.skip.split(",") if s} - set(ORDER)
  if unknown:
    parser.error(f"--skip: unknown sections {sorted(unknown)}; known: {', '.join(ORDER)}")
  return args


def in_process(name: str, cfg: dict, log: Callable[[str], None], res: dict) -> Any:
  """The sections this process runs itself (they share its JAX)."""
  # pylint: disable=import-outside-toplevel
  if name == "matmul":
    from bench import matmul
    return matmul.run(cfg)
  if name == "propagation":
    from bench import matmul, propagation
    out = propagation.run(cfg, log)
    if "matmul" in res:   # the ceiling again, after: the machine may be shared
      res["matmul"]["gflops_after_propagation"] = matmul.run(cfg)["gflops"]
    return out
  from bench import compile_time
  return compile_time.run(cfg, log)


def run_sections(mode: str, cfg: dict, skip: set, log: Callable[[str], None]) -> dict:
  res: dict[str, Any] = {}
  wanted = [s for s in ORDER if s not in skip]
  concurrent = mode == "tiny"
  started = {}
  if concurrent:
    started = {s: children.Child(s, mode, CHILD_TIMEOUT_S) for s in wanted
               if s in children.SECTIONS}
  for name in wanted:
    load = machine.load_average()
    if name in children.SECTIONS:
      if concurrent:
        continue
      log(f"{name} (child process), load average {load}")
      res[name] = children.Child(name, mode, CHILD_TIMEOUT_S).result()
    else:
      log(f"{name}, load average {load}")
      res[name] = in_process(name, cfg, log, res)
  for name, child in started.items():
    res[name] = child.result()
  return {name: res[name] for name in wanted}


def main(argv=None) -> int:
  args = parse_args(argv)
  torch_peers.hide_if_asked()
  mode = "tiny" if args.tiny else "quick" if args.quick else "full"
  # pylint: disable=protected-access
  if args._child:
    return children.child_main(args._child, modes.config(args._mode), args._result)
  if mode == "tiny":   # its figures mean nothing: compile fast (children and sweeps inherit it)
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
  cfg = modes.config(mode)
  start = time.perf_counter()

  def log(msg):
    print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

  children.setup_jax()
  res: dict[str, Any] = {"mode": mode, "machine": machine.machine_info(),
                         "versions": machine.versions(REPO), "accelerator": machine.accelerator(),
                         "config": cfg, "flop_convention": FLOP_CONVENTION, "method": METHOD,
                         "torch": torch_peers.missing() or "measured"}
  res.update(run_sections(mode, cfg, {s for s in args.skip.split(",") if s}, log))
  res["machine"]["load_average_at_end"] = machine.load_average()
  res["ratios"] = report.compute_ratios(res)
  res["targets"] = report.evaluate_targets(res["ratios"])
  res["total_wall_s"] = time.perf_counter() - start
  table.print_table(res)
  report.write_json(res, args.output)
  print(f"\nwrote {args.output} ({res['total_wall_s']:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
