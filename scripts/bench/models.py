"""The models researchers write (child section "models"): `initjax.probe` and stateful training
against what a PyTorch user runs instead, and the probe's compile counts and times.

  probe        a 6-layer ReLU MLP written with Flax linen, He-initialized, `probe.measure` over
               S seeds (Var of every Linear's output and of its gradient, least squares on the
               output) against the Signal-Propagation-Plot way: a PyTorch loop over seeds with
               forward hooks (output variance) and full backward hooks (gradient variance) on
               every nn.Linear; the same statistics, networks per second.
  comparison   He vs Xavier vs LeCun vs the model's own init on a pre-LN transformer block: how
               many programs `probe.measure(weight_init=[...])` compiles, and its time against
               four calls.
  rnn_compile  the first `probe.measure` of nn.RNN over a SimpleCell (compile dominated, JAX's
               caches cleared) at T = 50 and T = 200 time steps: the scan is kept as a scan.
  bn_resnet    a 1-D ResNet with BatchNorm (`initjax.studies.zoo.ResNet1D`) trained on
               MNIST-1D-shaped data, B networks vmapped by `run_networks` with their batch
               statistics, against a PyTorch loop over seeds of the same architecture
               (nn.Conv1d/BatchNorm1d, Adam, the same minibatches); weights are each
               framework's own He draws.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from bench import threads, timing, torch_peers


def _flax_mlp(depth: int, width: int):
  import flax.linen as nn  # pylint: disable=import-outside-toplevel

  class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
      for _ in range(depth - 1):
        x = nn.relu(nn.Dense(width)(x))
      return nn.Dense(width)(x)

  return MLP()


def _torch_hooks_loop(depth: int, width: int, x: np.ndarray, seeds: int) -> Callable[[], Any]:
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  xt = torch.from_numpy(np.asarray(x, np.float32))

  def run():
    out = np.zeros((seeds, depth, 2))
    for s in range(seeds):
      torch.manual_seed(s)
      layers = []
      for i in range(depth):
        lin = nn.Linear(width, width)
        nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        nn.init.zeros_(lin.bias)
        layers += [lin] + ([nn.ReLU()] if i < depth - 1 else [])
      model = nn.Sequential(*layers)
      stats: dict[int, list] = {}
      for i, lin in enumerate(m for m in model if isinstance(m, nn.Linear)):
        lin.register_forward_hook(
            lambda m, a, o, i=i: stats.setdefault(i, [None, None]).__setitem__(
                0, o.detach().var(unbiased=False).item()))
        lin.register_full_backward_hook(
            lambda m, gi, go, i=i: stats[i].__setitem__(1, go[0].var(unbiased=False).item()))
      loss = model(xt).pow(2).sum()
      loss.backward()
      out[s] = [stats[i] for i in range(depth)]
    return out

  return run


def probe_section(c: dict, log) -> dict:
  import jax  # pylint: disable=import-outside-toplevel

  from initjax.measurement import probe  # pylint: disable=import-outside-toplevel
  x = np.asarray(jax.random.normal(jax.random.key(0), (c["batch"], c["width"])))
  model = _flax_mlp(c["depth"], c["width"])
  key = jax.random.key(1)
  results = {}

  def ours():
    results["initjax"] = probe.measure(model, x, key=key, num_seeds=c["seeds"],
                                       weight_init="he_normal")

  contenders: dict[str, Callable[[], Any]] = {"initjax probe.measure": ours}
  note = torch_peers.missing()
  if note is None:
    for n in threads.thread_counts(c.get("max_threads")):
      contenders[f"torch loop with hooks ({threads.thread_label(n)})"] = threads.with_threads(
          n, _torch_hooks_loop(c["depth"], c["width"], x, c["loop_seeds"]))
  rows = timing.interleaved(contenders, c["repeats"], timing.thread_twin_budget())
  out = {"_torch": note or "measured"}
  for name, r in rows.items():
    out[name] = timing.rate(r, c["seeds"] if name.startswith("initjax") else c["loop_seeds"],
                            unit="networks")
  stats = results["initjax"]
  out["_initjax_median_log10_var_out"] = np.log10(np.median(stats["var_out"], axis=0)).tolist()
  log(f"probe: {out['initjax probe.measure']['networks_per_s']:.1f} networks/s")
  return out


def comparison_section(c: dict, log) -> dict:
  import jax  # pylint: disable=import-outside-toplevel

  from initjax.measurement import probe  # pylint: disable=import-outside-toplevel
  from initjax.studies import zoo  # pylint: disable=import-outside-toplevel
  x = jax.random.normal(jax.random.key(0), (4, c["tokens"], c["d_model"]))
  inits = ["he_normal", "xavier_normal", "lecun_normal", None]
  kw = dict(key=jax.random.key(1), num_seeds=c["seeds"])
  jax.clear_caches()
  before, start = probe.trace_count(), time.perf_counter()
  probe.measure(zoo.EncoderBlock(c["d_model"]), x, weight_init=inits, **kw)
  together_s, together = time.perf_counter() - start, probe.trace_count() - before
  jax.clear_caches()
  before, start = probe.trace_count(), time.perf_counter()
  for init in inits:       # a module of its own, so nothing is reused from the call above
    probe.measure(zoo.EncoderBlock(c["d_model"], heads=4), x + 0.0, weight_init=init, **kw)
  apart_s, apart = time.perf_counter() - start, probe.trace_count() - before
  log(f"comparison: {together} compile(s) in {together_s:.1f} s for {len(inits)} initializers; "
      f"one call each: {apart} compile(s) in {apart_s:.1f} s")
  return {"initializers": [str(i) for i in inits], "compiles_one_call": together,
          "seconds_one_call": together_s, "compiles_separate_calls": apart,
          "seconds_separate_calls": apart_s}


def rnn_compile_section(c: dict, log) -> dict:
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel

  from initjax.measurement import probe  # pylint: disable=import-outside-toplevel

  class RNN(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.RNN(nn.SimpleCell(c["hidden"]))(x)[:, -1]

  out = {}
  for steps in c["steps"]:
    times = []
    for _ in range(c["repeats"]):
      jax.clear_caches()
      x = jax.random.normal(jax.random.key(0), (8, steps, 8))
      start = time.perf_counter()
      probe.measure(RNN(), x, key=jax.random.key(1), num_seeds=2, weight_init="he_normal")
      times.append(time.perf_counter() - start)
    out[str(steps)] = {"median_s": float(np.median(times)), "all_s": times}
    log(f"rnn probe, {steps} steps: first call {out[str(steps)]['median_s']:.2f} s")
  return out


def _torch_resnet(channels: int, classes: int):
  from torch import nn  # pylint: disable=import-outside-toplevel

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      self.c1 = nn.Conv1d(channels, channels, 3, padding=1)
      self.b1 = nn.BatchNorm1d(channels, momentum=0.1)
      self.c2 = nn.Conv1d(channels, channels, 3, padding=1)
      self.b2 = nn.BatchNorm1d(channels, momentum=0.1)

    def forward(self, x):
      y = nn.functional.relu(self.b1(self.c1(x)))
      return nn.functional.relu(x + self.b2(self.c2(y)))

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      self.stem = nn.Conv1d(1, channels, 3, padding=1)
      self.bn = nn.BatchNorm1d(channels, momentum=0.1)
      self.blocks = nn.Sequential(Block(), Block())
      self.head = nn.Linear(channels, classes)

    def forward(self, x):
      h = nn.functional.relu(self.bn(self.stem(x[:, None, :])))
      return self.head(self.blocks(h).mean(dim=2))

  net = Net()
  for m in net.modules():
    if isinstance(m, (nn.Conv1d, nn.Linear)):
      nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
      nn.init.zeros_(m.bias)
  return net


def bn_resnet_section(c: dict, data_cfg: dict, log) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from initjax import training  # pylint: disable=import-outside-toplevel
  from initjax.nn import models  # pylint: disable=import-outside-toplevel
  from initjax.training import batch_training  # pylint: disable=import-outside-toplevel
  from initjax.studies import zoo  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  n, d, k = data_cfg["n_train"], data_cfg["input_dim"], data_cfg["classes"]
  x = rng.standard_normal((n, d)).astype(np.float32)
  y = rng.integers(0, k, n).astype(np.int32)
  data = {"x_train": jnp.asarray(x), "y_train": jnp.asarray(y), "x_test": jnp.asarray(x[:100]),
          "y_test": jnp.asarray(y[:100])}
  b, steps, batch = c["networks"], c["steps"], c["batch"]
  net = models.networks(zoo.ResNet1D(stage_sizes=[2], filters=c["channels"], num_classes=k),
                        jax.random.split(jax.random.key(0), b), data["x_train"][:4],
                        weight_init="he_normal", train_kwargs={"train": True},
                        eval_kwargs={"train": False})
  spec = training.TrainSpec(optimizer="adam", steps=steps, batch_size=batch, eval_every=steps,
                            stats_every=steps)
  keys = jax.random.split(jax.random.key(1), b)

  def ours():
    return batch_training.run_networks(net.model, net.params, keys, np.full(b, 1e-3), data, spec,
                                       state_B=net.state)

  contenders: dict[str, Callable[[], Any]] = {"initjax run_networks": ours}
  note = torch_peers.missing()
  if note is None:
    import torch  # pylint: disable=import-outside-toplevel
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    def torch_loop():
      for s in range(b):
        torch.manual_seed(s)
        model = _torch_resnet(c["channels"], k)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        order = torch.randperm(n)
        for step in range(steps):
          idx = order[(step * batch) % (n - batch + 1):][:batch]
          loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
          opt.zero_grad()
          loss.backward()
          opt.step()
    for t in threads.thread_counts(c.get("max_threads")):
      contenders[f"torch loop ({threads.thread_label(t)})"] = threads.with_threads(t, torch_loop)
  rows = timing.interleaved(contenders, c["repeats"], timing.thread_twin_budget())
  out = {"_torch": note or "measured", "_workload": {"networks": b, "steps": steps,
                                                     "batch": batch, "channels": c["channels"]}}
  for name, r in rows.items():
    out[name] = timing.rate(r, b * steps, unit="network_steps")
  log(f"bn_resnet: {out['initjax run_networks']['network_steps_per_s']:.1f} network-steps/s")
  return out


def run(cfg: dict, log) -> dict:
  m = {**cfg["models"], "max_threads": cfg["max_threads"]}
  return {"probe": probe_section({**m["probe"], "max_threads": m["max_threads"]}, log),
          "comparison": comparison_section(m["comparison"], log),
          "rnn_compile": rnn_compile_section(m["rnn_compile"], log),
          "bn_resnet": bn_resnet_section({**m["bn_resnet"], "max_threads": m["max_threads"]},
                                         cfg["data"], log)}
