"""What a researcher runs instead of initjax: PyTorch, on the same workload (`bench.workload`).

  * `TorchRun.loop`: the common script. One `nn.Sequential` per seed (nn.Linear/ReLU, or
    nn.Conv1d with circular padding/ReLU and a linear head; for a recurrent workload
    `RecurrentNet`: `nn.RNN` / `nn.LSTM`, batch_first, and a linear head on the last hidden
    state), `torch.optim.SGD(momentum=0.9)`,
    a plain Python loop over seeds and steps: forward, backward, `opt.step()`.
  * `TorchRun.vmap`: PyTorch's model-ensembling recipe. `torch.func.stack_module_state` over
    the S modules, `vmap(grad_and_value(loss))` of a `functional_call`, and the same momentum
    update written by hand on the stacked parameters (buf = 0.9 buf + g; p -= lr buf, with
    torch's multi-tensor `_foreach` ops).
  * `ProcessLoop`: the loop split over one process per core, one thread each (how a PyTorch
    user fills several cores with independent seeds); for information.

Every contender starts from initjax's initial weights (converted to PyTorch's layouts), visits
the training examples in initjax's order (each network's epoch permutations, drawn by initjax
beforehand and handed over as an (S, E, N) array: PyTorch indexes them, it does not draw them),
records the minibatch loss of every step without synchronizing, and returns the (S, T) losses on
the host: initjax's and every PyTorch contender's losses agree up to float rounding.
"""
from __future__ import annotations

import concurrent.futures
import copy
import functools
import multiprocessing
import os
import sys
from typing import Any, Sequence

import numpy as np

from bench.workload import RECURRENT, Workload

# Set (to anything but "" or "0") to run as if PyTorch were not installed: `hide_if_asked` makes
# `import torch` fail in the benchmark's processes (its children inherit the variable).
NO_TORCH_ENV = "INITJAX_BENCH_NO_TORCH"


def hidden() -> bool:
  return os.environ.get(NO_TORCH_ENV, "") not in ("", "0")


def hide_if_asked() -> None:
  """With $INITJAX_BENCH_NO_TORCH set, `import torch` raises ImportError in this process, as it
  does where PyTorch is not installed (call before anything imports it)."""
  if hidden():
    sys.modules["torch"] = None  # type: ignore[assignment]


def missing() -> str | None:
  """None if PyTorch can be imported, else why its rows are skipped."""
  try:
    import torch  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    if hidden():
      return f"skipped: ${NO_TORCH_ENV} is set (run as if torch were not installed)"
    return "skipped: torch is not installed (pip install -e '.[bench]')"
  return None


def device_name(jax_platform: str) -> str:
  """"cuda" when JAX runs on a GPU and PyTorch sees one (the same accelerator), else "cpu"."""
  import torch  # pylint: disable=import-outside-toplevel
  return "cuda" if jax_platform == "gpu" and torch.cuda.is_available() else "cpu"


@functools.lru_cache(maxsize=1)
def _recurrent_net_class():
  """`RecurrentNet`, defined on first use (this module imports PyTorch lazily)."""
  from torch import nn  # pylint: disable=import-outside-toplevel

  class RecurrentNet(nn.Module):
    """nn.RNN (tanh) or nn.LSTM over the input read as `steps` steps, then nn.Linear on the
    last hidden state: initjax's `rnn` / `lstm` architecture."""

    def __init__(self, cell: str, input_size: int, hidden: int, classes: int, steps: int):
      super().__init__()
      self.steps = steps
      self.rnn = {"rnn": nn.RNN, "lstm": nn.LSTM}[cell](input_size, hidden, batch_first=True)
      self.head = nn.Linear(hidden, classes)

    def forward(self, x):
      out, _ = self.rnn(x.reshape(x.shape[0], self.steps, -1))
      return self.head(out[:, -1])

  return RecurrentNet


def build_module(w: Workload):
  """The network of `w` as an `nn.Sequential` or `RecurrentNet` (weights are overwritten by
  `state_dicts`)."""
  from torch import nn  # pylint: disable=import-outside-toplevel
  if w.arch in RECURRENT:
    return _recurrent_net_class()(w.arch, w.length // w.depth, w.width, w.classes, w.depth)
  if w.arch == "mlp":
    layers: list[Any] = [nn.Linear(w.length, w.width), nn.ReLU()]
    for _ in range(w.depth - 1):
      layers += [nn.Linear(w.width, w.width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(w.width, w.classes))
  mode = "circular" if w.padding == "circular" else "zeros"
  layers = []
  for c_in in [1] + [w.width] * (w.depth - 1):
    layers.append(nn.Conv1d(c_in, w.width, w.kernel_size, padding="same", padding_mode=mode))
    if w.norm == "batchnorm":   # eps 1e-5 as initjax's; momentum only moves running averages
      layers.append(nn.BatchNorm1d(w.width))
    layers.append(nn.ReLU())
  return nn.Sequential(*layers, nn.Flatten(), nn.Linear(w.length * w.width, w.classes))


def state_dicts(w: Workload, params: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
  """initjax's stacked initial parameters (NumPy, leading axis S) as S PyTorch state dicts.

  MLP: initjax's Omega_k is (out, in), as nn.Linear's weight. CNN: kernels (s, C_in, C_out) ->
  Conv1d's (C_out, C_in, s); the head reads the last layer flattened as (L, C) in initjax and
  (C, L) in PyTorch, so its columns are reordered. Recurrent: the gates' kernels (G, D, H) and
  (G, H, H) -> weight_ih (G H, D) and weight_hh (G H, H), gates in the same order (PyTorch's
  LSTM, like Flax's: i, f, g, o); initjax's one bias per gate is bias_ih, bias_hh is zero.
  """
  out = []
  for s in range(w.networks):
    if w.arch in RECURRENT:
      kx, kh = params["kernel_x"][s], params["kernel_h"][s]
      sd = {"rnn.weight_ih_l0": np.concatenate([k.T for k in kx]),
            "rnn.weight_hh_l0": np.concatenate([k.T for k in kh]),
            "rnn.bias_ih_l0": params["beta"][s],
            "rnn.bias_hh_l0": np.zeros_like(params["beta"][s]),
            "head.weight": params["omega_out"][s], "head.bias": params["beta_out"][s]}
      out.append({k: np.array(v, np.float32, order="C") for k, v in sd.items()})
      continue
    if w.arch == "mlp":
      weights = ([params["omega_0"][s]] + list(params["omega_hidden"][s])
                 + [params["omega_out"][s]])
      biases = [params["beta_0"][s]] + list(params["beta_hidden"][s]) + [params["beta_out"][s]]
      names = [str(2 * i) for i in range(len(weights))]
    else:
      kernels = [params["kernel_0"][s]] + list(params["kernel_hidden"][s])
      head = params["omega_out"][s].reshape(w.classes, w.length, w.width)
      weights = [k.transpose(2, 1, 0) for k in kernels] + [
          head.transpose(0, 2, 1).reshape(w.classes, -1)]
      biases = [params["beta_0"][s]] + list(params["beta_hidden"][s]) + [params["beta_out"][s]]
      per = 3 if w.norm == "batchnorm" else 2          # Conv1d, [BatchNorm1d,] ReLU
      names = [str(per * i) for i in range(len(kernels))] + [str(per * len(kernels) + 1)]
    sd = {}
    for name, weight, bias in zip(names, weights, biases):
      sd[f"{name}.weight"] = np.array(weight, np.float32, order="C")   # a writable copy
      sd[f"{name}.bias"] = np.array(bias, np.float32)
    if w.arch == "cnn" and w.norm == "batchnorm":       # gamma, delta; running mean 0, var 1
      scales = [params["norm_scale_0"][s]] + list(params["norm_scale_hidden"][s])
      shifts = [params["norm_shift_0"][s]] + list(params["norm_shift_hidden"][s])
      for i, (scale, shift) in enumerate(zip(scales, shifts)):
        sd.update({f"{3 * i + 1}.weight": np.array(scale, np.float32),
                   f"{3 * i + 1}.bias": np.array(shift, np.float32),
                   f"{3 * i + 1}.running_mean": np.zeros(w.width, np.float32),
                   f"{3 * i + 1}.running_var": np.ones(w.width, np.float32),
                   f"{3 * i + 1}.num_batches_tracked": np.zeros((), np.int64)})
    out.append(sd)
  return out


class TorchRun:
  """S PyTorch networks of workload `w` on `device`, ready to be trained from their initial
  weights by `loop` or `vmap` (every call starts again from those weights); `orders` (S, E, N):
  the order in which network s visits the N training examples in epoch e."""

  def __init__(self, w: Workload, data: dict[str, np.ndarray],
               initial: Sequence[dict[str, np.ndarray]], orders: np.ndarray,
               device: str = "cpu"):
    import torch  # pylint: disable=import-outside-toplevel
    self.w, self.device = w, device
    self.orders = torch.from_numpy(np.asarray(orders, np.int64)).to(device)
    x = data["x_train"][:, None, :] if w.arch == "cnn" else data["x_train"]   # (N, C_in, L)
    self.x = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    self.y = torch.from_numpy(data["y_train"].astype(np.int64)).to(device)
    self.initial = [{k: torch.from_numpy(v).to(device) for k, v in sd.items()} for sd in initial]
    self.modules = [build_module(w).to(device) for _ in initial]
    for module, sd in zip(self.modules, self.initial):
      module.load_state_dict(sd)
    self.base = copy.deepcopy(self.modules[0]).to("meta")
    # torch.func vmap cannot update batchnorm's running statistics in place: its modules are
    # copies without them (PyTorch's recipe), made once at the initial weights (stacking copies
    # the parameters, so these copies never change).
    self.vmap_modules, self.vmap_base = self.modules, self.base
    if w.norm == "batchnorm":
      from torch.func import replace_all_batch_norm_modules_  # pylint: disable=import-outside-toplevel
      self.vmap_modules = [replace_all_batch_norm_modules_(copy.deepcopy(m))
                           for m in self.modules]
      self.vmap_base = replace_all_batch_norm_modules_(copy.deepcopy(self.base))
    if device == "cuda":   # TF32 matmuls, as JAX's default precision does on such GPUs
      torch.set_float32_matmul_precision("high")

  def _minibatch(self, step: int) -> tuple[int, slice]:
    """(epoch, slice of its order) of minibatch `step`, as initjax's `training.minibatch`."""
    per_epoch = self.x.shape[0] // self.w.batch
    j = step % per_epoch
    return step // per_epoch, slice(j * self.w.batch, (j + 1) * self.w.batch)

  def loop(self, seeds: Sequence[int] | None = None) -> np.ndarray:
    """The common script: for each seed, for each step: forward, backward, SGD step."""
    import torch  # pylint: disable=import-outside-toplevel
    import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
    seeds = range(len(self.modules)) if seeds is None else seeds
    out = []
    for s in seeds:
      model = self.modules[s]
      model.load_state_dict(self.initial[s])
      opt = torch.optim.SGD(model.parameters(), lr=self.w.learning_rate,
                            momentum=self.w.momentum)
      losses = []
      for step in range(self.w.steps):
        epoch, part = self._minibatch(step)
        idx = self.orders[s, epoch, part]
        loss = F.cross_entropy(model(self.x[idx]), self.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
      out.append(torch.stack(losses))
    return torch.stack(out).cpu().numpy()

  def vmap(self) -> np.ndarray:
    """PyTorch's model ensembling: one vmapped gradient of the stacked modules per step."""
    # pylint: disable=import-outside-toplevel,protected-access
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad_and_value, stack_module_state, vmap
    for module, sd in zip(self.modules, self.initial):   # `loop` trains them in place
      module.load_state_dict(sd)
    params, buffers = stack_module_state(self.vmap_modules)
    params = {k: v.detach() for k, v in params.items()}
    names = list(params)
    p_list = [params[k] for k in names]
    m_list = [torch.zeros_like(p) for p in p_list]
    base = self.vmap_base

    def loss_fn(p, b, x, y):
      return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    step_fn = vmap(grad_and_value(loss_fn))
    losses = []
    for step in range(self.w.steps):
      epoch, part = self._minibatch(step)
      idx = self.orders[:, epoch, part]                                  # (S, B)
      grads, loss = step_fn(params, buffers, self.x[idx], self.y[idx])
      with torch.no_grad():
        g_list = [grads[k] for k in names]
        torch._foreach_mul_(m_list, self.w.momentum)         # buf = 0.9 buf + g
        torch._foreach_add_(m_list, g_list)
        torch._foreach_add_(p_list, m_list, alpha=-self.w.learning_rate)   # p -= lr buf
      losses.append(loss.detach())
    return torch.stack(losses, dim=1).cpu().numpy()


# ------------------------------------------------------------------------------------------------
# The loop over seeds, one process per core.

_WORKER: dict[str, TorchRun] = {}


def _worker_start(w: Workload, data: dict, initial: list, orders: np.ndarray) -> None:
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(1)
  _WORKER["run"] = TorchRun(w, data, initial, orders)


def _worker_train(seeds: list[int]) -> np.ndarray:
  return _WORKER["run"].loop(seeds)


class ProcessLoop:
  """`TorchRun.loop` over the seeds split into one share per process (1 thread each). The
  processes start (and import PyTorch) in the first call, which the harness counts as warm-up."""

  def __init__(self, w: Workload, data: dict, initial: list, orders: np.ndarray,
               processes: int):
    self.shares = [list(map(int, a)) for a in np.array_split(np.arange(w.networks), processes)
                   if a.size]
    self.pool = concurrent.futures.ProcessPoolExecutor(
        len(self.shares), mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_start, initargs=(w, data, initial, orders))

  def __call__(self) -> np.ndarray:
    return np.concatenate(list(self.pool.map(_worker_train, self.shares)))

  def close(self) -> None:
    self.pool.shutdown(wait=True, cancel_futures=True)
