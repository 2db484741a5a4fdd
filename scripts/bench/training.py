"""Training throughput (network-steps per second): initjax against what PyTorch users run.

One comparison per workload (`bench.workload`), all contenders in this one process, interleaved:

  initjax run_networks             `batch_training.run_networks` with its default workers (one
                                   thread per core on a CPU, one per device on accelerators):
                                   what the sweep runs, and the figure in the ratios
  initjax train_networks (1 device)  `training.train_networks`, vmapped on one device (info)
  initjax train_network_jit, network by network
                                   the same per-network program called for one network after
                                   another (the retired "sequential" row; the CNN's seed loop)
  torch loop (k threads)           the common PyTorch script, k = 1 and the number of cores
  torch.func vmap (k threads)      PyTorch's model-ensembling recipe
  torch loop, one process per core the PyTorch loop over seeds split over processes (info)

Every contender trains the same S networks from the same initial weights on the same
minibatches (initjax's order) for T steps and returns the (S, T) minibatch losses; each row
reports their first and final mean, which agree between contenders up to float rounding (same
work, same optimization). initjax's loop additionally evaluates the
test set and records per-layer statistics at steps 0 and T (its sparsest schedule) and computes
the loss of step T: a few percent of extra work for initjax, counted against it.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import numpy as np

from bench import threads, timing, torch_peers, workload
from bench.workload import Workload


def initjax_contenders(w: Workload, data: dict[str, np.ndarray], params,
                       keys) -> dict[str, Any]:
  """name -> (callable returning the (S, T) losses, details for the row)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from initjax import training
  from initjax.core import parallel
  from initjax.training import batch_training  # pylint: disable=import-outside-toplevel
  model, spec = workload.initjax_model(w), workload.train_spec(w)
  lrs = jnp.full((w.networks,), w.learning_rate, jnp.float32)
  arrays = workload.jax_data(data, w)
  workers = parallel.workers()
  dev0 = jax.local_devices()[0]
  params0, keys0, lrs0, arrays0 = jax.device_put((params, keys, lrs, arrays), dev0)
  states = workload.initial_states(w, params)     # batchnorm's running statistics, or ()
  stateful = bool(jax.tree.leaves(states))
  one_by_one = [jax.tree.map(lambda a, i=i: a[i], (params0, states)) for i in range(w.networks)]
  steps = w.steps

  def all_workers():
    out = batch_training.run_networks(model, params, keys, lrs, arrays, spec,
                                      **({"state_B": states} if stateful else {}))
    return out["train_loss"][:, :steps]

  def one_device():
    out = training.train_networks(model, params0, keys0, lrs0, arrays0, spec)
    return np.asarray(out["train_loss"])[:, :steps]

  def network_by_network():
    return np.stack([np.asarray(training.train_network_jit(
        model, p, keys0[i], lrs0[i], arrays0, spec, *([st] if stateful else []))["train_loss"])[
            :steps] for i, (p, st) in enumerate(one_by_one)])

  out = {"initjax run_networks": (all_workers, {"workers": len(workers),
                                                "worker_devices": str(workers[0])}),
         "initjax train_networks (1 device)": (one_device, {"device": str(dev0)}),
         "initjax train_network_jit, network by network": (network_by_network,
                                                           {"device": str(dev0)})}
  if stateful:    # `train_networks` takes no model state
    del out["initjax train_networks (1 device)"]
  return out


def torch_contenders(w: Workload, data: dict[str, np.ndarray], params, orders: np.ndarray,
                     stack: contextlib.ExitStack, processes: bool = True,
                     max_threads: int | None = None) -> dict[str, Any]:
  """name -> (callable, details): the PyTorch loop and torch.func vmap at 1 thread and at one
  thread per core (on a GPU: once, on the GPU), and the loop with one process per core."""
  import jax  # pylint: disable=import-outside-toplevel
  device = torch_peers.device_name(jax.default_backend())
  initial = torch_peers.state_dicts(w, jax.tree.map(np.asarray, params))
  run = torch_peers.TorchRun(w, data, initial, orders, device)
  out: dict[str, Any] = {}
  if device != "cpu":
    out[f"torch loop ({device})"] = (run.loop, {"device": device})
    out[f"torch.func vmap ({device})"] = (run.vmap, {"device": device})
    return out
  for n in threads.thread_counts(max_threads):
    label = threads.thread_label(n)
    out[f"torch loop ({label})"] = (threads.with_threads(n, run.loop),
                                    {"device": device, "threads": n})
    out[f"torch.func vmap ({label})"] = (threads.with_threads(n, run.vmap),
                                         {"device": device, "threads": n})
  cores = threads.usable_cores()
  if processes and cores > 1:
    pool = torch_peers.ProcessLoop(w, data, initial, orders, cores)
    stack.callback(pool.close)
    out["torch loop, one process per core"] = (pool, {"device": device, "processes": cores,
                                                      "threads": 1})
  return out


def _loss_summary(losses: np.ndarray | None) -> dict:
  """The mean minibatch loss over the networks at the first step and over the last tenth of the
  steps (of the contender's last completed call)."""
  if losses is None:
    return {"loss_first_step": None, "loss_last_steps": None, "losses_finite": None}
  losses = np.asarray(losses, np.float64)
  tail = max(1, losses.shape[1] // 10)
  return {"loss_first_step": float(np.mean(losses[:, 0])),
          "loss_last_steps": float(np.mean(losses[:, -tail:])),
          "losses_finite": bool(np.isfinite(losses).all())}


def compare(w: Workload, data: dict[str, np.ndarray], section: dict,
            log: Callable[[str], None], max_threads: int | None = None) -> dict[str, Any]:
  """Every contender on workload `w`: a warm-up call, then `section["repeats"]` interleaved
  rounds; one row each."""
  params, keys = workload.initial_params(w), workload.data_keys(w)
  contenders = initjax_contenders(w, data, params, keys)
  note = torch_peers.missing()
  last: dict[str, np.ndarray] = {}

  def keeping(name, fn):
    def run():
      last[name] = fn()
    return run

  with contextlib.ExitStack() as stack:
    if note is None:
      orders = workload.epoch_orders(w, keys, data["x_train"].shape[0])
      contenders.update(torch_contenders(w, data, params, orders, stack,
                                         section["torch_processes"], max_threads))
    log(f"training {w.arch} width {w.width}: {', '.join(contenders)}")
    timings = timing.interleaved({k: keeping(k, fn) for k, (fn, _) in contenders.items()},
                                 section["repeats"], timing.thread_twin_budget())
  flops = workload.flops_per_network_step(w)
  rows: dict[str, Any] = {}
  for name, (_, details) in contenders.items():
    rows[name] = {**timing.rate(timings[name], w.network_steps, flops, unit="network_steps"),
                  **details, **_loss_summary(last.get(name))}
  rows["_workload"] = dict(vars(w), flops_per_network_step=flops)
  rows["_torch"] = note or "measured"
  return rows


def run_mlp(cfg: dict, log: Callable[[str], None]) -> dict[str, Any]:
  """The MLP workload at every width slot of the mode (w100, w32)."""
  t, d = cfg["training"], cfg["data"]
  data = workload.make_data(**d)
  return {slot: compare(workload.mlp_workload(t, d, width), data, t, log, cfg["max_threads"])
          for slot, width in t["widths"].items()}


def run_recurrent(cfg: dict, log: Callable[[str], None]) -> dict[str, Any]:
  """The recurrent workloads, one slot per cell (rnn, lstm): the input read as time steps,
  tanh, PyTorch's nn.RNN / nn.LSTM as the peers (issue 19: at least as fast as their loop)."""
  r, d = cfg["recurrent"], cfg["data"]
  data = workload.make_data(**d)
  return {cell: compare(workload.recurrent_workload(r, d, cell), data, r, log, cfg["max_threads"])
          for cell in r["cells"]}


def run_cnn(cfg: dict, log: Callable[[str], None], section: str = "cnn") -> dict[str, Any]:
  """The 1-D CNN workload: its vmapped training must beat a per-seed loop and PyTorch."""
  c, d = cfg[section], cfg["data"]
  return compare(workload.cnn_workload(c, d), workload.make_data(**d), c, log,
                 cfg["max_threads"])


def run_cnn_batchnorm(cfg: dict, log: Callable[[str], None]) -> dict[str, Any]:
  """The same CNN with batchnorm before every ReLU (PyTorch: nn.BatchNorm1d; its torch.func
  vmap row uses `replace_all_batch_norm_modules_`, the batch's statistics only, as PyTorch's
  ensembling recipe does)."""
  return run_cnn(cfg, log, "cnn_batchnorm")
