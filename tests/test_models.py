"""A user's own Flax model trained through initjax's vmapped path (`initjax.models`,
`initjax.batch_training.run_networks`), written as a user would write it: a linen CNN and an nnx
MLP. Each batch of networks is checked against the same networks trained one at a time, and
against the loss going down."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import initjax
from initjax import training
from initjax.nn import models
from initjax.training import batch_training

CLASSES, LENGTH = 4, 12
SPEC = training.TrainSpec(optimizer="momentum", steps=30, batch_size=16, eval_every=10,
                          stats_every=30, stats_batch_size=16)


def _data(shape):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(k1, (96, *shape))
  y = jax.random.randint(k2, (96,), 0, CLASSES)
  # Make the labels learnable: the class is the sign pattern of two input sums.
  flat = x.reshape(96, -1)
  y = (flat[:, :3].sum(1) > 0).astype(jnp.int32) * 2 + (flat[:, 3:6].sum(1) > 0)
  del k2, k3
  return {"x_train": x[:64], "y_train": y[:64], "x_test": x[64:], "y_test": y[64:]}


class LinenCNN(nn.Module):
  """A small 1-D CNN, He-initialized with initjax's initializer as Flax kernel_init."""

  @nn.compact
  def __call__(self, x):                     # x: (N, LENGTH)
    h = x[..., None]
    for _ in range(2):
      h = nn.relu(nn.Conv(8, (3,), kernel_init=initjax.get_initializer("he_normal"))(h))
    return nn.Dense(CLASSES)(h.reshape(h.shape[0], -1))


class NnxMLP(nnx.Module):

  def __init__(self, rngs: nnx.Rngs):
    init = initjax.get_initializer("he_normal")
    self.hidden = nnx.Linear(LENGTH, 16, kernel_init=init, rngs=rngs)
    self.out = nnx.Linear(16, CLASSES, kernel_init=init, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.relu(self.hidden(x)))


def _check_batch_against_one_at_a_time(model, params_B, data):
  b = jax.tree.leaves(params_B)[0].shape[0]
  keys = jax.random.split(jax.random.PRNGKey(5), b)
  lrs = jnp.linspace(0.01, 0.05, b)
  out = batch_training.run_networks(model, params_B, keys, lrs, data, SPEC)
  for i in range(b):
    one = training.train_network_jit(model, jax.tree.map(lambda a, i=i: a[i], params_B), keys[i],
                                     lrs[i], data, SPEC)
    # Batched and single matmuls may round differently in float32: 30 steps stay within 1e-4.
    np.testing.assert_allclose(out["train_loss"][i], np.asarray(one["train_loss"]), rtol=1e-4,
                               atol=1e-5)
  loss = out["train_loss"]
  assert np.all(np.isfinite(loss))
  assert np.all(loss[:, -3:].mean(1) < 0.8 * loss[:, :3].mean(1)), loss[:, [0, -1]]
  return out


@pytest.mark.slow  # end to end, several seconds: runs in the slow pass
def test_a_linen_cnn_trains_vmapped():
  data = _data((LENGTH,))
  module = LinenCNN()
  keys = jax.random.split(jax.random.PRNGKey(1), 3)
  params_B = jax.vmap(lambda k: module.init(k, data["x_train"][:1])["params"])(keys)
  out = _check_batch_against_one_at_a_time(models.from_flax(module), params_B, data)
  assert out["test_accuracy"].shape == (3, len(training.eval_steps(SPEC)))
  # Three keys, three different networks.
  assert len({float(v) for v in out["train_loss"][:, 0]}) == 3


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_an_nnx_module_trains_vmapped():
  data = _data((LENGTH,))
  keys = jax.random.split(jax.random.PRNGKey(2), 3)
  model, params_B = models.nnx_networks(NnxMLP, keys)
  kernel = params_B["hidden"]["kernel"][...]
  assert kernel.shape == (3, LENGTH, 16)
  # Each network is the module its key builds.
  np.testing.assert_array_equal(kernel[1], NnxMLP(nnx.Rngs(keys[1])).hidden.kernel[...])
  # He: Var[W] = 2 / fan_in, within the sampling error of 3 x 12 x 16 draws (4 sigma).
  n = kernel.size
  assert abs(float(jnp.var(kernel)) * LENGTH / 2 - 1) < 4 * np.sqrt(2 / n)
  _check_batch_against_one_at_a_time(model, params_B, data)


def test_nnx_factory_and_bad_module():
  keys = jax.random.split(jax.random.PRNGKey(3), 2)
  model, params_B = models.nnx_networks(lambda rngs: NnxMLP(rngs), keys)
  out = jax.vmap(model.apply, in_axes=(0, None))(params_B, jnp.ones((5, LENGTH)))
  assert out.shape == (2, 5, CLASSES)
  with pytest.raises(TypeError):
    models.nnx_networks(lambda rngs: "not a module", keys)
