"""initjax.probe: per-layer statistics of user-written Flax (linen, nnx) and pure-function models
over many random initializations; gradients against a hand-written backward pass; one compiled
program across weight scales; one clear error per bad input; 1 device == 4 devices."""
import math
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from initjax.measurement import probe
from initjax.nn import initializers as I
from initjax.nn import redraw

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_SEEDS = 256
CHANNELS = 8


# ------------------------------------------------------------------------------------------------
# Models as a user writes them.

class CNN(nn.Module):
  """A 1-D CNN: four Conv + ReLU blocks, channel-last, same channels in and out."""
  depth: int = 4

  @nn.compact
  def __call__(self, x):
    for _ in range(self.depth):
      x = nn.relu(nn.Conv(CHANNELS, kernel_size=(3,), padding="VALID")(x))
    return x


class MLP(nnx.Module):
  def __init__(self, rngs: nnx.Rngs, width: int = 16, depth: int = 3):
    self.linear1 = nnx.Linear(width, width, rngs=rngs)
    self.layers = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(depth)])

  def __call__(self, x):
    x = nnx.relu(self.linear1(x))
    for layer in self.layers:
      x = nnx.relu(layer(x))
    return x


def _ratio_and_se(a, b):
  """mean(b) / mean(a) over seeds and its standard error (delta method, from the samples)."""
  n = len(a)
  ma, mb = a.mean(), b.mean()
  cov = np.cov(a, b)
  rel_var = cov[0, 0] / ma**2 + cov[1, 1] / mb**2 - 2 * cov[0, 1] / (ma * mb)
  return mb / ma, (mb / ma) * math.sqrt(max(rel_var, 0.0) / n)


@pytest.fixture(scope="module")
def cnn_runs():
  x = jax.random.normal(jax.random.key(1), (4, 24, CHANNELS))
  kw = dict(key=jax.random.key(0), num_seeds=NUM_SEEDS)
  return x, {name: probe.measure(CNN(), x, weight_init=name, **kw)
             for name in ("he_normal", "xavier_normal")}


@pytest.fixture(scope="module")
def mlp_runs():
  x = jax.random.normal(jax.random.key(1), (8, 16))
  kw = dict(key=jax.random.key(0), num_seeds=NUM_SEEDS)
  return x, {name: probe.measure(MLP, x, weight_init=name, **kw)
             for name in ("he_normal", "xavier_normal")}


def _check_he_flat_xavier_halves(runs):
  # Second moment of each layer's output (pre-activation f_l) = channel_sq_mean + channel_var.
  # With symmetric weights and zero biases, E[f_{l+1}^2] = fan_in Var[W] E[f_l^2] / 2 exactly
  # (VALID convolutions: every position sees a full receptive field): the ratio of
  # across-seed means is 1 for He and 1/2 for Xavier (fan_in = fan_out). 5 standard errors
  # from the NUM_SEEDS samples (delta method), about 0.1 here.
  for name, want in (("he_normal", 1.0), ("xavier_normal", 0.5)):
    second = runs[name]["channel_sq_mean"] + runs[name]["channel_var"]
    var = runs[name]["var_out"]
    for layer in range(second.shape[1] - 1):
      ratio, se = _ratio_and_se(second[:, layer], second[:, layer + 1])
      assert abs(ratio - want) < 5 * se, (name, layer, ratio, se)
      assert se < 0.05 * want  # the test can tell 1 from 1/2
      # The variance (pooled over channels) also subtracts the squared grand mean, at most
      # 1/(pi C) of the second moment for ReLU inputs (each channel's mean^2 is ~1/pi of it,
      # averaged over C channels); allow that on top of 5 SE.
      ratio, se = _ratio_and_se(var[:, layer], var[:, layer + 1])
      assert abs(ratio - want) < 5 * se + 2 * want / (math.pi * CHANNELS), (name, layer, ratio)


def _check_exact_xavier_he_scaling(runs, kernel_shapes):
  # he_normal and xavier_normal are plain normals drawn from the same per-leaf keys, so each
  # Xavier kernel is the He kernel times sqrt(r_k), r_k = their variance ratio. ReLU layers
  # without biases are positively homogeneous: Var[f_l] scales by prod_{k<=l} r_k, exactly.
  r = np.array([I.expected_variance("xavier_normal", s) / I.expected_variance("he_normal", s)
                for s in kernel_shapes])
  scale = np.cumprod(r)
  np.testing.assert_allclose(runs["xavier_normal"]["var_out"] / runs["he_normal"]["var_out"],
                             np.broadcast_to(scale, runs["he_normal"]["var_out"].shape),
                             rtol=1e-4)
  # dL/df_l with L = sum f_K^2 scales by prod_k r_k (from 2 f_K) times prod_{l<k<=K} r_k.
  grad_scale = scale[-1] * scale[-1] / scale
  np.testing.assert_allclose(runs["xavier_normal"]["var_grad"] / runs["he_normal"]["var_grad"],
                             np.broadcast_to(grad_scale, runs["he_normal"]["var_grad"].shape),
                             rtol=1e-4)


def test_linen_cnn_he_flat_xavier_halves(cnn_runs):
  _, runs = cnn_runs
  he = runs["he_normal"]
  assert he["layers"] == ("Conv_0", "Conv_1", "Conv_2", "Conv_3")
  assert he["shapes"] == ((4, 22, 8), (4, 20, 8), (4, 18, 8), (4, 16, 8))
  assert he["kernels"] == tuple(f"params/Conv_{i}/kernel" for i in range(4))
  for stat in probe.STATISTICS:
    assert he[stat].shape == (NUM_SEEDS, 4) and np.all(np.isfinite(he[stat])), stat
  assert he["loss"].shape == (NUM_SEEDS,)
  _check_he_flat_xavier_halves(runs)
  _check_exact_xavier_he_scaling(runs, [(3, CHANNELS, CHANNELS)] * 4)


def test_nnx_mlp_he_flat_xavier_halves(mlp_runs):
  _, runs = mlp_runs
  assert runs["he_normal"]["layers"] == ("linear1", "layers/0", "layers/1", "layers/2")
  _check_he_flat_xavier_halves(runs)
  _check_exact_xavier_he_scaling(runs, [(16, 16)] * 4)


def test_statistics_and_seeds_match_trace(cnn_runs):
  # Seed s of measure is trace(key=split(key, num_seeds)[s]); its statistics are NumPy's.
  x, runs = cnn_runs
  s = 5
  one = probe.trace(CNN(), x, key=jax.random.split(jax.random.key(0), NUM_SEEDS)[s],
                    weight_init="he_normal")
  assert one["layers"] == runs["he_normal"]["layers"]
  for i, name in enumerate(one["layers"]):
    out, grad = one["outputs"][name].astype(np.float64), one["grads"][name].astype(np.float64)
    want = {"var_out": np.var(out), "var_grad": np.var(grad),
            "channel_sq_mean": np.mean(np.mean(out, axis=(0, 1)) ** 2),
            "channel_var": np.mean(np.var(out, axis=(0, 1)))}
    for stat, value in want.items():
      np.testing.assert_allclose(runs["he_normal"][stat][s, i], value, rtol=2e-5, err_msg=stat)
  np.testing.assert_allclose(runs["he_normal"]["loss"][s], np.sum(one["out"].astype(float) ** 2),
                             rtol=1e-5)
  # The output of the last Conv (before its ReLU) is the last layer; the loss is on the ReLU.
  np.testing.assert_allclose(one["grads"]["Conv_3"],
                             2 * np.maximum(one["outputs"]["Conv_3"], 0), rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Exact gradients: a small model against the hand-written backward pass, float64.

def _init_two_layer(key):
  k1, k2, k3 = jax.random.split(key, 3)
  return {"w1": jax.random.normal(k1, (5, 6)), "b1": 0.1 * jax.random.normal(k3, (6,)),
          "w2": jax.random.normal(k2, (6, 3)), "b2": jnp.zeros((3,))}


def _apply_two_layer(params, x):
  f1 = probe.tap("f1", x @ params["w1"] + params["b1"])
  return probe.tap("f2", jax.nn.relu(f1) @ params["w2"] + params["b2"])


class TwoDense(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(6, param_dtype=jnp.float64)(x))
    return nn.Dense(3, param_dtype=jnp.float64)(h)


def _hand_backward(x, w1, b1, w2, b2):
  """The book's backward pass for f1 = x W1 + b1, f2 = relu(f1) W2 + b2, L = sum f2^2."""
  f1 = x @ w1 + b1
  f2 = np.maximum(f1, 0) @ w2 + b2
  dl_df2 = 2 * f2
  dl_df1 = (dl_df2 @ w2.T) * (f1 > 0)
  return {"f1": f1, "f2": f2}, {"f1": dl_df1, "f2": dl_df2}


def test_gradients_equal_hand_written_backprop(x64):
  x = np.asarray(jax.random.normal(jax.random.key(3), (7, 5)))
  one = probe.trace((_init_two_layer, _apply_two_layer), x, key=jax.random.key(4))
  p = one["params"]
  outs, grads = _hand_backward(x, p["w1"], p["b1"], p["w2"], p["b2"])
  assert one["layers"] == ("f1", "f2") and one["outputs"]["f1"].dtype == np.float64
  for name in ("f1", "f2"):
    np.testing.assert_allclose(one["outputs"][name], outs[name], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(one["grads"][name], grads[name], rtol=1e-12, atol=1e-12)
  # The same through Flax's interception, with kernels and biases redrawn by initjax.
  one = probe.trace(TwoDense(), x, key=jax.random.key(4), weight_init="he_normal",
                    bias_init=I.normal(0.01))
  p = one["params"]        # the "params" collection; other collections are in one["state"]
  outs, grads = _hand_backward(x, p["Dense_0"]["kernel"], p["Dense_0"]["bias"],
                               p["Dense_1"]["kernel"], p["Dense_1"]["bias"])
  assert one["layers"] == ("Dense_0", "Dense_1")
  assert np.all(p["Dense_0"]["bias"] != 0) and p["Dense_0"]["kernel"].dtype == np.float64
  for ours, name in (("Dense_0", "f1"), ("Dense_1", "f2")):
    np.testing.assert_allclose(one["outputs"][ours], outs[name], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(one["grads"][ours], grads[name], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Pure functions, taps, one program for many scales.

def test_tap_is_the_identity_outside_measure():
  x = jnp.arange(3.0)
  assert probe.tap("a", x) is x
  np.testing.assert_array_equal(jax.jit(lambda v: probe.tap("a", v) * 2)(x), 2 * x)


def test_scales_share_one_compiled_program():
  # A model object of its own, so the first call compiles and the second must not.
  def init_fn(key):
    return {"w1": jax.random.normal(key, (4, 8)) / 2,
            "w2": jax.random.normal(jax.random.fold_in(key, 1), (8, 2)) / 2}

  def apply_fn(params, x):
    f1 = probe.tap("f1", x @ params["w1"])
    probe.tap("f1_sum", jnp.sum(f1, axis=1))     # rank 1: no channel statistics
    return probe.tap("f2", jax.nn.relu(f1) @ params["w2"])

  x = jax.random.normal(jax.random.key(1), (6, 4))
  before = probe.trace_count()
  low = probe.measure((init_fn, apply_fn), x, key=jax.random.key(0), num_seeds=3,
                      weight_scale=(0.5, 1.0))
  high = probe.measure((init_fn, apply_fn), x, key=jax.random.key(0), num_seeds=3,
                       weight_scale=[2.0, 4.0])
  assert probe.trace_count() - before == 1
  assert low["layers"] == ("f1", "f1_sum", "f2") and low["var_out"].shape == (2, 3, 3)
  assert low["kernels"] == ("w1", "w2") and low["biases"] == ()
  # Same keys for every scale; kernels times sqrt(scale) and a homogeneous network: Var[f1]
  # scales with s, Var[f2] with s^2, exactly.
  np.testing.assert_allclose(high["var_out"][1] / low["var_out"][0],
                             np.broadcast_to([8.0, 8.0, 64.0], (3, 3)), rtol=1e-5)
  assert np.all(np.isnan(low["channel_var"][..., 1]))
  assert np.all(np.isfinite(low["channel_var"][..., [0, 2]]))
  # No scale axis without a sequence; a scalar scale equals the sequence's entry.
  single = probe.measure((init_fn, apply_fn), x, key=jax.random.key(0), num_seeds=3,
                         weight_scale=4.0)
  assert single["var_out"].shape == (3, 3)
  np.testing.assert_allclose(single["var_out"], high["var_out"][1], rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Layer names; redrawing; bad inputs.

class Block(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(x.shape[-1])(x))
    return x + nn.Dense(x.shape[-1])(h)


class ResMLP(nn.Module):
  def setup(self):
    self.embed = nn.Dense(8)
    self.blocks = [Block() for _ in range(2)]
    self.shared = nn.Dense(8)

  def __call__(self, x):
    x = self.embed(x)
    for block in self.blocks:
      x = block(x)
    return self.shared(self.shared(x))


class ConvBNDrop(nnx.Module):
  """nnx layers that update state (batch statistics) or draw (dropout) in the forward pass."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.drop = nnx.Dropout(0.5, rngs=rngs)

  def __call__(self, x):
    return self.drop(nnx.relu(self.bn(self.conv(x))))


def test_layer_names_linen_nested_shared_and_nnx():
  x = jnp.ones((2, 4))
  assert list(probe.layers(ResMLP(), x)) == [
      "embed", "blocks_0/Dense_0", "blocks_0/Dense_1", "blocks_0", "blocks_1/Dense_0",
      "blocks_1/Dense_1", "blocks_1", "shared", "shared#2"]
  assert probe.layers(nn.Dense(3), x) == {"Dense": (2, 3)}   # the top module, alone
  mlp = probe.layers(MLP, jnp.ones((2, 16)))
  assert mlp == {"linear1": (2, 16), "layers/0": (2, 16), "layers/1": (2, 16),
                 "layers/2": (2, 16)}
  assert probe.layers(lambda rngs: MLP(rngs, depth=1), jnp.ones((2, 16))) == {
      "linear1": (2, 16), "layers/0": (2, 16)}
  assert probe.layers((lambda k: {"w": jnp.ones((4, 2))}, lambda p, x: x @ p["w"]), x) == {
      "output": (2, 2)}
  assert list(probe.layers(ConvBNDrop, jnp.ones((2, 5, 5, 3)))) == ["conv", "bn", "drop"]


def test_redraw_does_not_depend_on_other_leaves():
  key = jax.random.key(0)
  small = {"a": {"kernel": jnp.zeros((3, 4))}}
  large = {"a": {"kernel": jnp.zeros((3, 4)), "bias": jnp.zeros(4)}, "b": {"w": jnp.zeros((2, 2))}}

  def drawn(params):
    plan = redraw.plan(redraw.leaves_by_name(params), I.he_normal())
    return redraw.apply(plan.static, params, key, plan.select_CxL[0], plan.std_CxL[0])

  np.testing.assert_array_equal(drawn(small)["a"]["kernel"], drawn(large)["a"]["kernel"])
  assert {leaf.name: leaf.role for leaf in redraw.leaves_by_name(large)} == {
      "a/kernel": "kernel", "a/bias": "bias", "b/w": "kernel"}


class Image(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Conv(4, (3, 3))(x.reshape(x.shape[0], 4, 4, 1))


def _bad_measure(**overrides):
  kw = dict(model=CNN(depth=1), x=jnp.ones((2, 8, CHANNELS)), key=jax.random.key(0),
            num_seeds=2)
  kw.update(overrides)
  return probe.measure(kw.pop("model"), kw.pop("x"), **kw)


def _dup_taps(params, x):
  return probe.tap("h", probe.tap("h", x @ params["w"]))


@pytest.mark.parametrize("overrides, match", [
    (dict(model=MLP, x=jnp.ones((2, 5))), r"nnx class MLP failed on x of shape \(2, 5\)"),
    (dict(model=Image(), x=jnp.ones((2, 10))),
     r"flax.linen module Image failed to initialize on x of shape \(2, 10\): TypeError: "
     "cannot reshape"),
    (dict(model=(lambda k: {"w": jnp.ones((8, 8))}, _dup_taps)), "tap name 'h' is used twice"),
    (dict(weight_init=I.variance_scaling(1.0, "fan_in", "normal", in_axis=3)),
     r"weight_init cannot draw 'params/Conv_0/kernel' of shape \(3, 8, 8\).*in_axis=3"),
    (dict(weight_init=lambda k, shape, dtype: jnp.zeros((2, 2), dtype)),
     "weight_init drew float32.*for 'params/Conv_0/kernel'"),
    (dict(num_seeds=0), "num_seeds must be an integer >= 1"),
    (dict(key=0), "key must be a jax.random key"),
    (dict(weight_init="he_nromal"), "Unknown initializer 'he_nromal'"),
    (dict(weight_scale=[1.0, -2.0]), "weight_scale must be a positive"),
    (dict(model=42), "model must be a flax.linen.Module"),
    (dict(model=MLP(nnx.Rngs(0))), "nnx.Module instance"),
    (dict(loss=lambda out: out), "loss must return a real scalar"),
    (dict(model=(lambda k: {"w": jnp.ones((8, 8))}, lambda p, x: x @ p["w"]), weight_init=None,
          bias_init=3), "bias_init must be an initjax initializer name"),
])
def test_bad_inputs_one_clear_error_before_compiling(overrides, match):
  before = probe.trace_count()
  with pytest.raises(ValueError, match=match) as e:
    _bad_measure(**overrides)
  assert "\n" not in str(e.value)
  assert probe.trace_count() == before


# ------------------------------------------------------------------------------------------------
# Devices.

@pytest.mark.slow  # about 8 s: a subprocess with 4 fake devices
def test_four_fake_devices_equal_one():
  code = textwrap.dedent("""
      import jax, jax.numpy as jnp, numpy as np
      import flax.linen as nn
      from initjax.measurement import probe
      assert jax.local_device_count() == 4

      class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
          return nn.Dense(2)(nn.relu(nn.Dense(8)(x)))

      x = jax.random.normal(jax.random.key(1), (5, 3))
      kw = dict(key=jax.random.key(0), num_seeds=6, weight_init="he_uniform",
                weight_scale=(0.5, 2.0))
      one = probe.measure(Net(), x, num_devices=1, **kw)
      four = probe.measure(Net(), x, **kw)
      # Two devices, seeds vmapped in chunks of 4 (as on an accelerator; 12 items -> padded).
      chunked = probe.measure(Net(), x, num_devices=2, seed_chunk=4, **kw)
      for name in probe.STATISTICS + ("loss",):
        np.testing.assert_allclose(one[name], four[name], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(one[name], chunked[name], rtol=1e-5, err_msg=name)
      print("ok")
  """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=300, env=env, cwd=REPO)
  assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
