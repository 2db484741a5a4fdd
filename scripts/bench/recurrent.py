"""Training throughput of the built-in recurrent networks: initjax against a PyTorch loop.

    python scripts/bench/recurrent.py [--seeds=8] [--steps=100] [--width=64] [--repeats=3]

Workload: sequential MNIST-1D (40 steps of one value, batch 100), one recurrent layer of
--width units (tanh), a dense readout of the last hidden state, Adam at 1e-3, --seeds networks,
--steps steps. Contenders, each warmed up once (compilation excluded), then run round-robin
--repeats times (the median is reported, in network-steps per second):

  initjax run_networks         `batch_training.run_networks` of the built-in `rnn` / `lstm`
                               (`initjax.theory.architectures`), what `experiments.sweep` runs:
                               its default workers (one thread per core on a CPU) and blocks
  initjax vmapped (one call)   every seed vmapped in one program on one device
  torch loop (k threads)       the common PyTorch script: for each seed, `nn.RNN` / `nn.LSTM`
                               (batch_first) + `nn.Linear`, `torch.optim.Adam`, the same batches;
                               k = 1 and the number of cores

Not part of `scripts/benchmark.py`'s table yet: it prints its own, and writes nothing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
  sys.path.insert(0, REPO)


def initjax_contenders(cell: str, seeds: int, steps: int, width: int):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel

  from initjax.theory import architectures  # pylint: disable=import-outside-toplevel
  from initjax.training import batch_training, data as data_lib, loop  # pylint: disable=import-outside-toplevel

  arch = architectures.get(cell)
  data = data_lib.device_arrays(data_lib.load_mnist1d())
  keys = jax.random.split(jax.random.key(0), seeds)
  params = architectures.init_networks(arch, keys, "lecun_normal", input_shape=(40,),
                                       width=width, depth=40, output_dim=10)
  model = arch.model("tanh", architectures.ArchOptions())
  spec = loop.TrainSpec(optimizer="adam", steps=steps, batch_size=100, eval_every=steps,
                        stats_every=steps)
  lrs = np.full(seeds, 1e-3, np.float32)

  def run_networks():
    out = batch_training.run_networks(model, params, keys, lrs, data, spec)
    return float(np.mean(out["train_loss"][:, -1]))

  opt = optax.adam(1e-3)
  x, y = data["x_train"], data["y_train"]

  def loss(p, xb, yb):
    return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, xb), yb).mean()

  @jax.jit
  def train(p):
    def step(carry, i):
      p, s = carry
      start = (i * 100) % (x.shape[0] - 100)
      xb = jax.lax.dynamic_slice_in_dim(x, start, 100)
      yb = jax.lax.dynamic_slice_in_dim(y, start, 100)
      value, g = jax.vmap(jax.value_and_grad(loss), in_axes=(0, None, None))(p, xb, yb)
      u, s = jax.vmap(opt.update)(g, s, p)
      return (optax.apply_updates(p, u), s), value
    (p, _), values = jax.lax.scan(step, (p, jax.vmap(opt.init)(p)), jnp.arange(steps))
    return values[-1].mean()

  def vmapped():
    return float(train(params))

  return {"initjax run_networks": run_networks, "initjax vmapped (one call)": vmapped}


def torch_contender(cell: str, seeds: int, steps: int, width: int):
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel

  from initjax.training import data as data_lib  # pylint: disable=import-outside-toplevel
  data = data_lib.load_mnist1d()
  x = torch.tensor(np.array(data["x_train"]))[:, :, None]
  y = torch.tensor(np.array(data["y_train"]), dtype=torch.long)
  layer = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]

  def loop(threads):
    torch.set_num_threads(threads)
    losses = []
    for seed in range(seeds):
      torch.manual_seed(seed)
      rnn, head = layer(1, width, batch_first=True), torch.nn.Linear(width, 10)
      opt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=1e-3)
      for i in range(steps):
        start = (i * 100) % (x.shape[0] - 100)
        out, _ = rnn(x[start:start + 100])
        loss = torch.nn.functional.cross_entropy(head(out[:, -1]), y[start:start + 100])
        opt.zero_grad()
        loss.backward()
        opt.step()
      losses.append(loss.item())
    return float(np.mean(losses))

  cores = torch.get_num_threads()
  out = {f"torch loop ({k} thread{'s' if k > 1 else ''})": (lambda k=k: loop(k))
         for k in sorted({1, cores})}
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cells", default="rnn,lstm")
  parser.add_argument("--seeds", type=int, default=8)
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--width", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  for cell in args.cells.split(","):
    contenders = initjax_contenders(cell, args.seeds, args.steps, args.width)
    try:
      contenders.update(torch_contender(cell, args.seeds, args.steps, args.width))
    except ImportError:
      print("PyTorch is not installed: its row is skipped")
    times = {name: [] for name in contenders}
    first = {}
    for name, fn in contenders.items():
      start = time.perf_counter()
      first[name] = (fn(), time.perf_counter() - start)
    for _ in range(args.repeats):
      for name, fn in contenders.items():
        start = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - start)
    work = args.seeds * args.steps
    print(f"{cell}: {args.seeds} networks x {args.steps} steps, width {args.width}, 40 steps "
          "of MNIST-1D, batch 100, Adam")
    for name, ts in times.items():
      median = statistics.median(ts)
      print(f"  {name:32s} {work / median:8.1f} network-steps/s  (median of {len(ts)}: "
            f"{median:.2f} s; first call {first[name][1]:.1f} s; final loss {first[name][0]:.3f})")


if __name__ == "__main__":
  main()
