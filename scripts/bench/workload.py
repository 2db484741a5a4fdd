"""The training workload every contender runs: the same networks, data, optimizer and steps.

  * data: MNIST-1D-shaped (N x 40 inputs, 10 classes), drawn with NumPy: standard-normal inputs,
    labels from a random linear teacher (argmax of x W), so the loss falls and the contenders'
    losses can be compared (same work, same optimization);
  * networks: the book's ReLU MLP (`initjax.models.mlp`), the 1-D CNN
    (`initjax.architectures.get("cnn")`, optionally with batchnorm before every ReLU), or a tanh
    recurrent net (`rnn`, `lstm`: the input read as `depth` time steps, a readout of the last
    hidden state; orthogonal recurrent kernels),
    He-initialized (plain normal, variance 2 / fan_in, zero biases) by initjax; the PyTorch
    peers start from the very same weights;
  * optimizer: SGD with momentum 0.9 (optax's `sgd(lr, momentum=0.9)`, PyTorch's
    `SGD(lr, momentum=0.9)`: the same update), softmax cross-entropy, minibatches drawn from a
    per-network permutation of the training set, a new one every epoch: initjax's, drawn from
    each network's data key (`epoch_orders` hands them to PyTorch), so every contender sees the
    same minibatches in the same order.

This module imports neither JAX nor PyTorch at import time (PyTorch worker processes load it).
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Workload:
  """S networks trained for T steps; `width` is the CNN's number of channels."""
  arch: str                   # "mlp", "cnn", or a recurrent cell: "rnn", "lstm"
  length: int                 # inputs per example (MNIST-1D: 40)
  width: int
  depth: int                  # MLP: hidden layers K; CNN: convolutional layers; rnn: steps
  classes: int
  networks: int
  steps: int
  batch: int
  learning_rate: float
  momentum: float = 0.9
  kernel_size: int = 5        # cnn
  padding: str = "circular"   # cnn
  norm: str = "none"          # cnn: "none" or "batchnorm" (PyTorch: nn.BatchNorm1d)

  @property
  def network_steps(self) -> int:
    return self.networks * self.steps


def mlp_workload(t: dict, d: dict, width: int) -> Workload:
  return Workload("mlp", d["input_dim"], width, t["depth"], d["classes"], t["networks"],
                  t["steps"], t["batch"], t["learning_rate"])


def cnn_workload(c: dict, d: dict) -> Workload:
  return Workload("cnn", d["input_dim"], c["channels"], c["depth"], d["classes"],
                  c["networks"], c["steps"], c["batch"], c["learning_rate"],
                  kernel_size=c["kernel_size"], padding=c["padding"],
                  norm=c.get("norm", "none"))


RECURRENT = ("rnn", "lstm")
GATES = {"rnn": 1, "lstm": 4}


def recurrent_workload(r: dict, d: dict, cell: str) -> Workload:
  return Workload(cell, d["input_dim"], r["width"], r["time_steps"], d["classes"],
                  r["networks"], r["steps"], r["batch"], r["learning_rate"])


def make_data(n_train: int, n_test: int, input_dim: int, classes: int,
              seed: int = 0) -> dict[str, np.ndarray]:
  """x (N, D) float32 standard normal; y (N,) int32 = argmax(x W) for a random teacher W."""
  rng = np.random.default_rng(seed)
  teacher_DxC = rng.standard_normal((input_dim, classes))
  out = {}
  for split, n in (("train", n_train), ("test", n_test)):
    x = rng.standard_normal((n, input_dim)).astype(np.float32)
    out[f"x_{split}"] = x
    out[f"y_{split}"] = np.argmax(x @ teacher_DxC, axis=1).astype(np.int32)
  return out


def layer_products(w: Workload) -> list[float]:
  """Multiply-adds per example of every layer's forward product."""
  if w.arch == "mlp":
    dims = [(w.length, w.width)] + [(w.width, w.width)] * (w.depth - 1) + [(w.width, w.classes)]
    return [float(a * b) for a, b in dims]
  if w.arch in RECURRENT:     # per time step: every gate's input and recurrent products
    step = GATES[w.arch] * (w.length // w.depth + w.width) * w.width
    return [float(step)] * w.depth + [float(w.width * w.classes)]
  convs = [w.length * w.kernel_size * 1 * w.width]
  convs += [w.length * w.kernel_size * w.width * w.width] * (w.depth - 1)
  return [float(c) for c in convs] + [float(w.length * w.width * w.classes)]


def flops_per_network_step(w: Workload) -> float:
  """3 x the forward products (forward, activation gradients, weight gradients): 6 B sum(MACs)."""
  return 3 * 2.0 * w.batch * sum(layer_products(w))


# ------------------------------------------------------------------------------------------------
# initjax's side (public API only).

def _options(w: Workload):
  from initjax.theory import architectures  # pylint: disable=import-outside-toplevel
  return architectures.ArchOptions(kernel_size=w.kernel_size, padding=w.padding, norm=w.norm)


def initjax_model(w: Workload):
  """The `Model` that trains `w`'s networks: the book's MLP (`models.mlp`), the CNN's, or the
  recurrent net's (tanh, as PyTorch's `nn.RNN` / `nn.LSTM`)."""
  from initjax.theory import architectures  # pylint: disable=import-outside-toplevel
  activation = "tanh" if w.arch in RECURRENT else "relu"
  return architectures.get(w.arch).model(activation, _options(w))


def initial_params(w: Workload, seed: int = 0):
  """S He-initialized networks of initjax's architecture `w.arch`, stacked on a leading axis
  (its `init`, vmapped over S keys and jitted: one compilation, a fraction of the eager
  `init_networks`' start-up in a short run; the same weights up to float rounding)."""
  import jax  # pylint: disable=import-outside-toplevel

  from initjax.theory import architectures  # pylint: disable=import-outside-toplevel
  arch = architectures.get(w.arch)
  shape = (w.length, 1) if w.arch == "cnn" else (w.length,)
  init = jax.jit(jax.vmap(lambda key: arch.init(
      key, input_shape=shape, width=w.width, depth=w.depth, output_dim=w.classes,
      weight_init="he_normal", options=_options(w))))
  return init(jax.random.split(jax.random.key(seed), w.networks))


def initial_states(w: Workload, params):
  """The networks' initial model states (batchnorm's running statistics; () if stateless)."""
  from initjax.theory import architectures  # pylint: disable=import-outside-toplevel
  return architectures.init_states(architectures.get(w.arch), params, _options(w))


def data_keys(w: Workload, seed: int = 1):
  """One data key per network: initjax draws its minibatch order from it."""
  import jax  # pylint: disable=import-outside-toplevel
  return jax.random.split(jax.random.key(seed), w.networks)


def epoch_orders(w: Workload, keys, n_train: int) -> np.ndarray:
  """(S, E, N) int32: the order in which each network visits the training examples in every
  epoch that its T steps reach (initjax's `training.epoch_permutation` of its data key)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from initjax import training  # pylint: disable=import-outside-toplevel
  epochs = (w.steps - 1) // (n_train // w.batch) + 1
  one = jax.vmap(lambda key, e: training.epoch_permutation(key, e, n_train), in_axes=(None, 0))
  return np.asarray(jax.jit(jax.vmap(one, in_axes=(0, None)))(keys, jnp.arange(epochs)))


STATS_EXAMPLES = 10


def train_spec(w: Workload):
  """Momentum SGD, T steps; test metrics and per-layer statistics only at steps 0 and T (the
  sparsest schedule initjax's loop has), the statistics on 10 training examples. With a test set
  of one minibatch, initjax's extra work is about one network-step's worth per network (two
  forward passes on the test set, two small statistics passes, the loss at step T)."""
  from initjax import training  # pylint: disable=import-outside-toplevel
  return training.TrainSpec(optimizer="momentum", steps=w.steps, batch_size=w.batch,
                            eval_every=w.steps, stats_every=w.steps,
                            stats_batch_size=min(STATS_EXAMPLES, w.batch))


def jax_data(data: dict[str, np.ndarray], w: Workload) -> dict:
  """The four arrays on the default device; the CNN's inputs channel-last (N, L, 1)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  out = {}
  for k, v in data.items():
    if k.startswith("x_") and w.arch == "cnn":
      v = v[:, :, None]
    out[k] = jnp.asarray(v)
  return out
