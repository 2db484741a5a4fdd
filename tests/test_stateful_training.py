"""Training models with state, written as their users write them: a linen ResNet block with
BatchNorm (a list attribute, call arguments per mode) whose running statistics update and are
used for evaluation, and an nnx model with Dropout whose masks differ across networks and
steps and are off at evaluation; He vs Xavier as one argument of `models.networks`; a resumed
stateful run equals an uninterrupted one; one clear line per bad argument."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from initjax import batch_training, models, training
from initjax.nn.models import forward_eval, forward_train

N, LENGTH, CLASSES = 96, 12, 3


def _data():
  x = jax.random.normal(jax.random.key(0), (N, LENGTH))
  y = (jnp.sum(x[:, :4], axis=1) > 0).astype(jnp.int32) + (x[:, 5] > 1).astype(jnp.int32)
  return {"x_train": x[:64], "y_train": y[:64], "x_test": x[64:], "y_test": y[64:]}


DATA = _data()


class ResNetBlock(nn.Module):
  """The flax imagenet example's block, 1-D: conv-BN-relu-conv-BN, plus the skip."""
  filters: int

  @nn.compact
  def __call__(self, x, train: bool = True):
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)  # noqa: E731
    y = nn.relu(norm()(nn.Conv(self.filters, (3,))(x)))
    y = norm()(nn.Conv(self.filters, (3,))(y))
    return nn.relu(x + y)


class ResNet(nn.Module):
  stages: list            # a list attribute, as the flax examples' stage_sizes: not hashable

  @nn.compact
  def __call__(self, x, train: bool = True):
    h = nn.Conv(8, (3,))(x[..., None])
    for filters in self.stages:
      h = ResNetBlock(filters)(h, train)
    return nn.Dense(CLASSES)(h.mean(axis=1))


SPEC = training.TrainSpec(optimizer="adam", steps=30, eval_every=10, stats_every=30,
                          batch_size=32)


def _resnet(weight_init):
  return models.networks(ResNet(stages=[8, 8]), jax.random.split(jax.random.key(1), 2),
                         DATA["x_train"][:4], weight_init=weight_init,
                         train_kwargs={"train": True}, eval_kwargs={"train": False})


@pytest.mark.slow  # end to end, several seconds: runs in the slow pass
def test_batchnorm_resnet_trains_with_running_statistics():
  net = _resnet("he_normal")
  keys = jax.random.split(jax.random.key(2), 2)
  out = batch_training.run_networks(net.model, net.params, keys, np.full(2, 3e-3), DATA, SPEC,
                                    state_B=net.state, return_final=True)
  assert np.all(np.isfinite(out["train_loss"])) and np.all(out["diverged_step"] == -1)
  assert np.all(out["train_loss"][:, -5:].mean(1) < out["train_loss"][:, :5].mean(1))
  stats0 = net.state["batch_stats"]["ResNetBlock_0"]["BatchNorm_0"]
  stats1 = out["final_state"]["batch_stats"]["ResNetBlock_0"]["BatchNorm_0"]
  np.testing.assert_array_equal(stats0["mean"], 0.0)          # Flax's init: mean 0, var 1
  assert np.all(np.abs(stats1["mean"] - stats0["mean"]).max(axis=1) > 1e-3)   # updated, per net
  assert not np.allclose(stats1["mean"][0], stats1["mean"][1])
  # Evaluation ran in eval mode with these running statistics: the final test loss recomputed
  # from the final parameters and state, with use_running_average=True, is the recorded one.
  for b in range(2):
    params = jax.tree.map(lambda a, b=b: a[b], out["final_params"])
    state = jax.tree.map(lambda a, b=b: a[b], out["final_state"])
    logits = forward_eval(net.model, params, state, DATA["x_test"])
    loss = training.batch_loss(logits, DATA["y_test"], "classification")
    np.testing.assert_allclose(out["test_loss"][b, -1], loss, rtol=2e-5)


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_he_vs_xavier_is_one_argument_for_training():
  he, xavier = _resnet("he_normal"), _resnet("xavier_normal")
  k_he = he.params["Conv_0"]["kernel"]          # (2 networks, window 3, 1, 8): fan_in 3
  k_xa = xavier.params["Conv_0"]["kernel"]
  # Same keys, one family: Xavier's kernel is He's times sqrt((2 / 24 + 3) ... ) exactly:
  # variance 2 / (3 + 24) against 2 / 3.
  np.testing.assert_allclose(k_xa, k_he * np.sqrt((2 / 27) / (2 / 3)), rtol=1e-5)
  assert he.model is xavier.model           # one compiled program for both


class DropMLP(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(LENGTH, 32, rngs=rngs)
    self.drop = nnx.Dropout(0.5, rngs=rngs)
    self.out = nnx.Linear(32, CLASSES, rngs=rngs)

  def __call__(self, x):
    return self.out(self.drop(nnx.relu(self.hidden(x))))


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_dropout_masks_differ_across_networks_and_steps_and_are_off_at_eval():
  net = models.networks(DropMLP, jax.random.split(jax.random.key(3), 2), DATA["x_train"])
  one = lambda tree, b: jax.tree.map(lambda a: a[b], tree)  # noqa: E731
  params, state = one(net.params, 0), one(net.state, 0)
  keys = jax.random.split(jax.random.key(4), 2)
  x = DATA["x_train"][:8]
  train_out = {(n, s): forward_train(net.model, params, state, x, training.step_rng(keys[n], s))[0]
               for n in range(2) for s in range(2)}
  assert not np.allclose(train_out[0, 0], train_out[0, 1])    # another step, another mask
  assert not np.allclose(train_out[0, 0], train_out[1, 0])    # another network, another mask
  np.testing.assert_array_equal(train_out[0, 0], forward_train(
      net.model, params, state, x, training.step_rng(keys[0], 0))[0])   # reproducible
  evals = forward_eval(net.model, params, state, x)
  manual = nnx.relu(x @ params["hidden"]["kernel"][...] + params["hidden"]["bias"][...])
  manual = manual @ params["out"]["kernel"][...] + params["out"]["bias"][...]
  np.testing.assert_allclose(evals, manual, rtol=1e-5, atol=1e-6)   # no dropout at eval
  # In training: with learning rate 0 and the full training set as one batch every step, a
  # network's loss changes from step to step only through its dropout masks.
  spec = training.TrainSpec(optimizer="sgd", steps=4, eval_every=4, stats_every=4,
                            batch_size=64)
  out = batch_training.run_networks(net.model, net.params, keys, np.zeros(2), DATA, spec,
                                    state_B=net.state)
  assert np.unique(np.round(out["train_loss"][0], 6)).size == 5
  # Evaluation: deterministic, so both evaluations of a frozen network agree.
  np.testing.assert_allclose(out["test_loss"][:, 0], out["test_loss"][:, -1], rtol=1e-6)


class MemoryCheckpoint:
  """Saves every segment; a restore returns the first save (as after a kill mid-run)."""
  every_chunks = 1

  def __init__(self, saved=None):
    self.saved, self.first = saved, None

  def restore(self):
    return self.saved

  def segment_done(self, payload):
    if self.first is None:
      self.first = payload()


def test_a_resumed_stateful_run_equals_an_uninterrupted_one():
  net = models.networks(DropMLP, jax.random.split(jax.random.key(3), 2), DATA["x_train"])
  keys = jax.random.split(jax.random.key(4), 2)
  args = (net.model, net.params, keys, np.full(2, 1e-2), DATA, SPEC)
  first = MemoryCheckpoint()
  whole = batch_training.run_networks(*args, state_B=net.state, checkpoint=first)
  resumed = batch_training.run_networks(*args, state_B=net.state,
                                        checkpoint=MemoryCheckpoint(first.first))
  for k in whole:
    np.testing.assert_array_equal(whole[k], resumed[k], err_msg=k)


@pytest.mark.parametrize("change, match", [
    (dict(keys=3), r"disagree on the number of networks.*params_B 2, data_keys_B 3"),
    (dict(lrs=np.zeros((2, 2))), "learning_rates_B must be 1-D"),
    (dict(state=None), "needs its state"),
])
def test_bad_training_arguments_are_one_line(change, match):
  net = models.networks(DropMLP, jax.random.split(jax.random.key(3), 2), DATA["x_train"])
  keys = jax.random.split(jax.random.key(4), change.get("keys", 2))
  kw = {"state_B": change["state"]} if "state" in change else {"state_B": net.state}
  with pytest.raises(ValueError, match=match) as e:
    batch_training.run_networks(net.model, net.params, keys, change.get("lrs", np.zeros(2)),
                                DATA, SPEC, **kw)
  assert "\n" not in str(e.value)


def test_model_errors_are_one_line():
  with pytest.raises(ValueError, match=r"does not accept 'training'") as e:
    models.networks(ResNet(stages=[8]), jax.random.split(jax.random.key(0), 2),
                    DATA["x_train"][:4], train_kwargs={"training": True})
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="matches no kernel"):
    models.networks(ResNet(stages=[8]), jax.random.split(jax.random.key(0), 2),
                    DATA["x_train"][:4], weight_init={"*/recurrent*": "orthogonal"})
  with pytest.raises(ValueError, match="has state that training updates"):
    models.nnx_networks(DropMLP, jax.random.split(jax.random.key(0), 2))
  # A BatchNorm model evaluated without eval_kwargs still updates its statistics: one line.
  net = models.networks(ResNet(stages=[8]), jax.random.split(jax.random.key(1), 2),
                        DATA["x_train"][:4], train_kwargs={"train": True})
  with pytest.raises(ValueError, match="cannot train.*eval_kwargs") as e:
    batch_training.run_networks(net.model, net.params, jax.random.split(jax.random.key(2), 2),
                                np.zeros(2), DATA, SPEC, state_B=net.state)
  assert "\n" not in str(e.value)


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_equinox_mlp_trains_and_from_flax_takes_unhashable_modules():
  eqx = pytest.importorskip("equinox")
  net = models.networks(models.equinox(lambda key: eqx.nn.MLP(LENGTH, CLASSES, 16, 1, key=key)),
                        jax.random.split(jax.random.key(0), 2), DATA["x_train"][:4],
                        weight_init="he_normal")
  out = batch_training.run_networks(net.model, net.params, jax.random.split(jax.random.key(1), 2),
                                    np.full(2, 1e-2), DATA, SPEC, state_B=net.state)
  assert np.all(out["train_loss"][:, -5:].mean(1) < out["train_loss"][:, :5].mean(1))
  # from_flax with a list attribute (not hashable): the same Model for an equal module.
  a = models.from_flax(ResNet(stages=[8]), {"train": True}, {"train": False})
  b = models.from_flax(ResNet(stages=[8]), {"train": True}, {"train": False})
  assert a is b


@pytest.mark.slow  # about 10 s: two compiled training loops of a BatchNorm ResNet
def test_a_convolutional_model_trains_one_step_per_call_on_a_cpu_with_the_same_numbers():
  # XLA's CPU backend runs convolution gradients slowly inside a scan over steps, so "auto"
  # trains a model that convolves one step per call; both loops compute the same steps.
  net = models.networks(ResNet(stages=[8]), jax.random.split(jax.random.key(1), 2),
                        DATA["x_train"][:4], weight_init="he_normal",
                        train_kwargs={"train": True}, eval_kwargs={"train": False})
  spec = training.TrainSpec(optimizer="adam", steps=6, eval_every=3, stats_every=6,
                            batch_size=32)
  args = (net.model, net.params, jax.random.split(jax.random.key(2), 2), np.full(2, 1e-3),
          DATA, spec)
  assert batch_training.convolves(net.model, spec, jax.tree.map(lambda a: a[0], net.params),
                                  jax.tree.map(lambda a: a[0], net.state), DATA)
  host = batch_training.run_networks(*args, state_B=net.state, step_loop="host")
  scan = batch_training.run_networks(*args, state_B=net.state, step_loop="scan")
  # The same step functions, compiled into different programs: float32 rounding differs in the
  # last bits and six Adam steps amplify it to about 2e-4 (measured); 1e-3 allows for that.
  for k in ("train_loss", "test_loss", "test_accuracy"):
    np.testing.assert_allclose(host[k], scan[k], rtol=1e-3, atol=1e-5, err_msg=k)
  with pytest.raises(ValueError, match="step_loop must be one of auto, scan, host"):
    batch_training.run_networks(*args, state_B=net.state, step_loop="unrolled")
