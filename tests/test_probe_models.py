"""initjax.probe on the models researchers write: a pre-LN transformer block with Flax's
attention (4 and 8 heads), an Equinox MLP, nnx BatchNorm and Dropout, nn.RNN and jax.lax.scan
per time step against the vanilla RNN's mean field, jax.vmap, initialization maps, the per-layer
gains, aliases and zero-output notes, one compile for He/Xavier/LeCun/default, and one clear
error per bad input.

Sampling tolerances: the variance of n i.i.d. draws of a zero-mean normal has a relative
standard error sqrt(2 / n); the tests allow 5 of them.
"""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from initjax import models, probe
from initjax.measurement.probe import measurement, prepare
from initjax.theory.recurrent import predict_rnn
from tests.test_probe import ConvBNDrop


class EncoderBlock(nn.Module):
  """A pre-LayerNorm transformer encoder block, as the Flax examples write one."""
  d_model: int = 64
  heads: int = 4

  @nn.compact
  def __call__(self, x):
    h = nn.LayerNorm()(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(h, h)
    h = nn.LayerNorm()(x)
    return x + nn.Dense(self.d_model)(nn.gelu(nn.Dense(4 * self.d_model)(h)))


X_TOKENS = jax.random.normal(jax.random.key(0), (4, 8, 64))


def _rows(model, x, **kw):
  return {r["parameter"]: r for r in probe.describe_init(model, x, **kw)}


def _within(variance, want, n):
  return abs(variance / want - 1) < 5 * math.sqrt(2 / n)


@pytest.mark.parametrize("heads", [4, 8])
def test_attention_kernels_drawn_with_the_fans_they_contract(heads):
  # q/k/v: (d_model, heads, head_dim), fan_in d_model; out: (heads, head_dim, d_model), fan_in
  # heads x head_dim = d_model. He draws 2 / 64 for every one of them (the raw shape read with
  # in_axis=-2 would give 2 / (64 heads) for q/k/v: 4x and 8x too small).
  rows = _rows(EncoderBlock(heads=heads), X_TOKENS, weight_init="he_normal")
  attention = "params/MultiHeadDotProductAttention_0"
  for proj in ("query", "key", "value", "out"):
    row = rows[f"{attention}/{proj}/kernel"]
    assert (row["fan_in"], row["fan_out"], row["axes_from"]) == (64, 64, "DenseGeneral")
    assert row["intended_variance"] == pytest.approx(2 / 64)
    assert _within(row["variance"], 2 / 64, 64 * 64), (proj, row["variance"])
  assert rows["params/Dense_1/kernel"]["fan_in"] == 64        # the MLP's 64 -> 256
  assert rows["params/Dense_0/kernel"]["fan_in"] == 256       # and 256 -> 64
  xavier = _rows(EncoderBlock(heads=heads), X_TOKENS, weight_init="xavier_normal")
  assert _within(xavier[f"{attention}/query/kernel"]["variance"], 2 / 128, 64 * 64)


def test_flax_own_default_init_agrees_with_these_fans():
  # Flax draws its default lecun_normal with fan_in from the flattened (in, out) shape: the
  # model's own kernels have variance 1 / fan_in by initjax's fans, layer by layer.
  for heads in (4, 8):
    for name, row in _rows(EncoderBlock(heads=heads), X_TOKENS).items():
      if row["role"] == "kernel":
        assert row["drawn_by"] == "model"
        assert _within(row["variance"], 1 / row["fan_in"], math.prod(row["shape"])), name


class NnxAttention(nnx.Module):
  def __init__(self, rngs):
    self.attention = nnx.MultiHeadAttention(num_heads=8, in_features=64, decode=False,
                                            rngs=rngs)

  def __call__(self, x):
    return self.attention(x)


def test_nnx_attention_and_its_default_init():
  rows = _rows(NnxAttention, X_TOKENS, weight_init="he_normal")
  for proj in ("query", "key", "value", "out"):
    row = rows[f"attention/{proj}/kernel"]
    assert (row["fan_in"], row["axes_from"]) == (64, "LinearGeneral")
    assert _within(row["variance"], 2 / 64, 64 * 64)
  for name, row in _rows(NnxAttention, X_TOKENS).items():
    if row["role"] == "kernel":
      assert _within(row["variance"], 1 / row["fan_in"], math.prod(row["shape"])), name


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_equinox_mlp_non_square_layers():
  eqx = pytest.importorskip("equinox")
  model = models.equinox(lambda key: eqx.nn.MLP(40, 10, 64, 2, key=key))
  x = jax.random.normal(jax.random.key(1), (16, 40))
  rows = _rows(model, x, weight_init="he_normal")
  want = {"layers/0/weight": 40, "layers/1/weight": 64, "layers/2/weight": 64}
  for name, fan_in in want.items():
    row = rows[name]
    assert (row["fan_in"], row["axes_from"]) == (fan_in, "Linear"), name
    assert _within(row["variance"], 2 / fan_in, math.prod(row["shape"])), name
  # Equinox's own Linear init is U(+-1/sqrt(in)): variance 1 / (3 fan_in) by these fans.
  for name, fan_in in want.items():
    assert _within(_rows(model, x)[name]["variance"] * 3 * fan_in, 1.0, 1000), name
  stats = probe.measure(model, x, key=jax.random.key(2), num_seeds=16, weight_init="he_normal")
  assert stats["layers"] == ("layers/0", "layers/1", "layers/2")
  assert stats["shapes"] == ((16, 64), (16, 64), (16, 10))
  # The forward gain E[out^2] / E[in^2] of a He layer is fan_in Var[W] = 2 (inputs: the ReLU of
  # the layer before; biases zero): 16 seeds x 16 x 64 outputs, 10% covers the sampling.
  np.testing.assert_allclose(stats["gain_forward"][:, 1:].mean(0), 2.0, rtol=0.1)


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_nnx_batchnorm_and_dropout_modes_and_trace():
  x = jax.random.normal(jax.random.key(0), (8, 5, 5, 3))
  train = probe.measure(ConvBNDrop, x, key=jax.random.key(1), num_seeds=4,
                        weight_init="he_normal")
  # BatchNorm in train mode standardizes each channel over the batch: pooled variance 1.
  np.testing.assert_allclose(train["var_out"][:, 1], 1.0, rtol=1e-3)
  evals = probe.measure(ConvBNDrop, x, key=jax.random.key(1), num_seeds=4,
                        weight_init="he_normal", train=False)
  # Eval mode: running averages at their init (mean 0, var 1) leave the conv output as it is,
  # and Dropout is off, so the last output is relu(bn) exactly: no dropout rescaling.
  np.testing.assert_allclose(evals["var_out"][:, 1], evals["var_out"][:, 0], rtol=1e-3)
  one = probe.trace(ConvBNDrop, x, key=jax.random.key(3), train=False)
  np.testing.assert_allclose(one["outputs"]["drop"], np.maximum(one["outputs"]["bn"], 0),
                             rtol=1e-6)
  assert "rng" in one["state"]                   # nnx's RNG state comes back (keys as keys)


class SimpleRNN(nn.Module):
  hidden: int = 64

  @nn.compact
  def __call__(self, x):                          # x: (N, T, D)
    return nn.RNN(nn.SimpleCell(self.hidden))(x)[:, -1]


@pytest.mark.parametrize("recurrent, sigma2_h", [("orthogonal", 1.0), ("he_normal", 2.0)])
def test_rnn_per_time_step_against_the_mean_field(recurrent, sigma2_h):
  # nn.RNN (an nn.scan inside) measured per time step: Var[h_t] and Var[dL/dh_t] of the cell's
  # output at every t, against the vanilla RNN's recursion (initjax.theory.recurrent) with
  # sigma2_x = 1 (LeCun input kernel). Each input x_t is scaled to mean square 1, the constant
  # input drive the mean field assumes (with raw N(0, I_8) inputs the drive fluctuates by
  # 2/8 = 25% in variance across examples and the fixed point sits 0.01 decades lower, measured).
  # Tolerances: forward, 5 standard errors of the across-seed mean plus 0.01 decades of
  # finite-width bias (measured 0.002 at H = 64); backward, the slope of log10 Var[dL/dh_t] in
  # t within 8% of the theory's (measured at H = 64: 0.394 vs 0.399 decades per step for
  # orthogonal, 0.153 vs 0.160 for He's Gaussian W_h, whose gap shrinks with H), and every
  # step within that slope error times its distance from the last step, plus 0.05.
  steps, seeds = 30, 64
  x = jax.random.normal(jax.random.key(0), (32, steps, 8))
  x = x / jnp.sqrt(jnp.mean(x ** 2, axis=-1, keepdims=True))
  stats = probe.measure(SimpleRNN(), x, key=jax.random.key(1), num_seeds=seeds,
                        weight_init={"*/h/kernel": recurrent, "*/i/kernel": "lecun_normal"})
  cell = stats["steps"]["SimpleCell_0"]
  assert len(cell) == steps and stats["layers"][cell[3]] == "SimpleCell_0[3]"
  theory = predict_rnn(steps=steps, sigma2_h=sigma2_h, sigma2_x=1.0)
  values = stats["var_out"][:, cell]
  mean = values.mean(0)
  se = values.std(0, ddof=1) / math.sqrt(seeds) / mean / math.log(10)
  assert np.all(np.abs(np.log10(mean) - theory["var_h"]) < 5 * se + 0.01)
  grad = np.log10(stats["var_grad"][:, cell].mean(0))
  slope = np.polyfit(np.arange(steps), grad, 1)[0]
  want = np.polyfit(np.arange(steps), theory["var_dl_dh"], 1)[0]
  assert abs(slope / want - 1) < 0.08, (slope, want)
  allowance = 0.08 * abs(want) * (steps - 1 - np.arange(steps)) + 0.05
  assert np.all(np.abs(grad - theory["var_dl_dh"]) < allowance)


def test_rnn_program_does_not_unroll_time():
  # The scan stays a scan: 4x the steps give 4x the entries from one program of the same size
  # (its number of equations does not grow with T, so neither does its compile time).
  sizes = []
  for steps in (10, 40):
    x = jnp.ones((2, steps, 3))
    assert probe.layers(SimpleRNN(hidden=8), x)["SimpleCell_0"] == (steps, 2, 8)
    prep = prepare.prepare(SimpleRNN(hidden=8), x, weight_init="he_normal")
    plan = prep.plan
    jaxpr = jax.make_jaxpr(functools.partial(
        measurement.seed_statistics, prep.core, plan.static, prep.loss))(
            jax.random.key(0), 1.0, jnp.asarray(plan.select_CxL[0]),
            jnp.asarray(plan.std_CxL[0]), x)
    sizes.append(_equations(jaxpr.jaxpr))
  assert sizes[0] == sizes[1], sizes


def _equations(jaxpr) -> int:
  """Equations of a jaxpr, counting those of nested ones (scan bodies, ...)."""
  n = 0
  for eqn in jaxpr.eqns:
    n += 1
    for value in eqn.params.values():
      inner = getattr(value, "jaxpr", None)
      if inner is not None:
        n += _equations(getattr(inner, "jaxpr", inner))
  return n


def _scan_model():
  def init_fn(key):
    k1, k2 = jax.random.split(key)
    return {"w": jax.random.normal(k1, (8, 8)) / math.sqrt(8),
            "u": jax.random.normal(k2, (3, 8)) / math.sqrt(3)}

  def apply_fn(params, x):                         # x: (N, T, 3)
    def step(h, x_t):
      h = probe.tap("h", jnp.tanh(h @ params["w"] + x_t @ params["u"]))
      return h, None
    h, _ = jax.lax.scan(step, jnp.zeros((x.shape[0], 8)), jnp.swapaxes(x, 0, 1))
    return h
  return init_fn, apply_fn


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_tap_inside_lax_scan_and_vmap():
  x = jax.random.normal(jax.random.key(0), (4, 6, 3))
  stats = probe.measure(_scan_model(), x, key=jax.random.key(1), num_seeds=3)
  assert stats["layers"] == tuple(f"h[{t}]" for t in range(6))
  one = probe.trace(_scan_model(), x, key=jax.random.split(jax.random.key(1), 3)[0])
  assert one["outputs"]["h"].shape == (6, 4, 8)
  # dL/dh_t through time, from jax.grad of the unrolled loop written by hand.
  p = one["params"]

  def unrolled(offsets):
    h = jnp.zeros((4, 8))
    for t in range(6):
      h = jnp.tanh(h @ p["w"] + x[:, t] @ p["u"]) + offsets[t]
    return jnp.sum(h ** 2)

  want = jax.grad(unrolled)(jnp.zeros((6, 4, 8)))
  np.testing.assert_allclose(one["grads"]["h"], want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(stats["var_grad"][0], np.var(np.asarray(want), axis=(1, 2)),
                             rtol=1e-4)

  def vmapped(params, x):
    return jax.vmap(lambda row: probe.tap("row", jnp.tanh(row @ params["u"])))(x[:, 0])

  stats = probe.measure((_scan_model()[0], vmapped), x, key=jax.random.key(1), num_seeds=2)
  assert stats["layers"] == ("row",) and stats["shapes"] == ((4, 8),)


class Wrapper(nn.Module):
  @nn.compact
  def __call__(self, x):
    return Inner()(x)


class Inner(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(4)(nn.relu(nn.Dense(8)(x)))


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_aliases_zero_scales_and_gains():
  x = jax.random.normal(jax.random.key(0), (16, 6))
  stats = probe.measure(Wrapper(), x, key=jax.random.key(1), num_seeds=8, weight_init="he_normal")
  # Inner returns its last Dense's output, Wrapper returns Inner's: one layer, two aliases.
  assert stats["layers"] == ("Inner_0/Dense_1", "Inner_0/Dense_0")    # called in this order
  assert stats["aliases"] == {"Inner_0": "Inner_0/Dense_0"}   # the top module is no layer

  class ZeroScale(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(4)(nn.LayerNorm(scale_init=nn.initializers.zeros)(nn.Dense(8)(x)))

  stats = probe.measure(ZeroScale(), x, key=jax.random.key(1), num_seeds=2)
  # nn.Dense(4)(LayerNorm(...)(nn.Dense(8)(x))): Dense_0 is the outer one, after the norm.
  assert set(stats["notes"]) == {"LayerNorm_0", "Dense_0"}     # its bias is zero too
  assert "params/LayerNorm_0/scale is all zero" in stats["notes"]["LayerNorm_0"]
  assert "its input is: LayerNorm_0's output is exactly 0" in stats["notes"]["Dense_0"]
  assert np.all(stats["var_out"][:, 0] > 0)


def test_dense_gains_are_the_conditions():
  # A linear layer's forward gain E[out^2] / E[in^2] is fan_in Var[W] (He: 2, LeCun: 1) and its
  # backward gain E[(dL/d in)^2] / E[(dL/d out)^2] is fan_out Var[W] when dL/d out does not
  # depend on W: a loss sum(out * r) with a fixed random r. 32 seeds x 64 x 32 outputs: 5%.
  class Linear(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(32, use_bias=False)(x)

  x = jax.random.normal(jax.random.key(0), (64, 48))
  r = jax.random.normal(jax.random.key(5), (64, 32))
  stats = probe.measure(Linear(), x, key=jax.random.key(1), num_seeds=32,
                        weight_init=["he_normal", "lecun_normal"],
                        loss=lambda out: jnp.sum(out * r))
  forward = stats["gain_forward"][..., 0].mean(1)
  backward = stats["gain_backward"][..., 0].mean(1)
  np.testing.assert_allclose(forward, [2.0, 1.0], rtol=0.05)
  np.testing.assert_allclose(backward, [2.0 * 32 / 48, 32 / 48], rtol=0.05)


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_comparing_initializers_compiles_once():
  block = EncoderBlock(d_model=32, heads=4)
  x = jax.random.normal(jax.random.key(0), (2, 4, 32))
  before = probe.trace_count()
  stats = probe.measure(block, x, key=jax.random.key(1), num_seeds=2,
                        weight_init=["he_normal", "xavier_normal", "lecun_normal", None])
  assert probe.trace_count() - before == 1
  assert stats["inits"] == ("he_normal", "xavier_normal", "lecun_normal", "model")
  assert stats["var_out"].shape == (4, 2, len(stats["layers"]))
  # A later call with another initializer of the same family reuses the program.
  again = probe.measure(block, x, key=jax.random.key(1), num_seeds=2,
                        weight_init=["he_normal", "xavier_normal", "lecun_normal", None][::-1])
  assert probe.trace_count() - before == 1
  np.testing.assert_allclose(again["var_out"][3], stats["var_out"][0], rtol=1e-6)


def test_initialization_map():
  x = jax.random.normal(jax.random.key(0), (4, 5, 8))
  rows = _rows(SimpleRNN(hidden=16), x,
               weight_init={"*/h/kernel": "orthogonal", "*": "he_normal"})
  assert rows["params/SimpleCell_0/h/kernel"]["drawn_by"] == "orthogonal"
  assert rows["params/SimpleCell_0/i/kernel"]["drawn_by"] == "he_normal"
  one = probe.trace(SimpleRNN(hidden=16), x, key=jax.random.key(1),
                    weight_init={"*/h/kernel": "orthogonal"})
  w = one["params"]["SimpleCell_0"]["h"]["kernel"]
  np.testing.assert_allclose(w.T @ w, np.eye(16), atol=1e-5)


def _bad(**kw):
  args = dict(model=EncoderBlock(d_model=32), x=jnp.ones((2, 4, 32)), key=jax.random.key(0),
              num_seeds=2)
  args.update(kw)
  return probe.measure(args.pop("model"), args.pop("x"), **args)


@pytest.mark.parametrize("kw, match", [
    (dict(model_kwargs={"train": True}), r"does not accept 'train' \(its __call__ takes x\)"),
    (dict(weight_init={"*/recurrent_kernel": "orthogonal"}),
     r"pattern '\*/recurrent_kernel' matches no kernel; the kernels are: params/Dense_0/kernel"),
    (dict(weight_init={"*/scale": "he_normal"}), r"matches .*LayerNorm_0/scale.*not kernels"),
    (dict(fan_axes={"*/query/kernel": (5, 0)}), r"in_axes=\(5,\) is out of range"),
    (dict(fan_axes={"nothing": "torch"}), "fan_axes pattern 'nothing' matches no parameter"),
    (dict(x=jnp.ones((0, 4, 32))), r"x must be a non-empty batch.*\(0, 4, 32\)"),
    (dict(num_seeds=10**12), "need about .* GB for their statistics"),
    (dict(train=True), "train= switches nnx and Equinox models"),
    (dict(weight_init=[]), "weight_init is an empty list"),
])
def test_bad_inputs_are_one_line_before_compiling(kw, match):
  before = probe.trace_count()
  with pytest.raises(ValueError, match=match) as e:
    _bad(**kw)
  assert "\n" not in str(e.value)
  assert probe.trace_count() == before


def test_pure_kernels_of_unknown_layout_are_said():
  init_fn = lambda k: {"w": jax.random.normal(k, (6, 3))}   # pylint: disable=unnecessary-lambda-assignment
  apply_fn = lambda p, x: x @ p["w"]                          # pylint: disable=unnecessary-lambda-assignment
  x = jnp.ones((2, 6))
  with pytest.warns(probe.FanAxesWarning, match=r"\(w\)"):
    probe.measure((init_fn, apply_fn), x, key=jax.random.key(0), num_seeds=2,
                  weight_init="he_normal")
  # Declared: (out, in) for a kernel used as x @ w.T would be 'torch'; here the Flax layout.
  rows = _rows((init_fn, apply_fn), x, weight_init="he_normal", fan_axes={"w": "flax"})
  assert rows["w"]["axes_from"] == "declared" and rows["w"]["fan_in"] == 6


def test_equinox_without_equinox_is_one_line(monkeypatch):
  import builtins  # pylint: disable=import-outside-toplevel
  real = builtins.__import__

  def no_equinox(name, *args, **kwargs):
    if name == "equinox" or name.startswith("equinox."):
      raise ImportError("No module named 'equinox'")
    return real(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_equinox)
  with pytest.raises(ValueError, match="needs Equinox, which is not installed") as e:
    probe.measure(models.equinox(lambda key: None), jnp.ones((2, 3)), key=jax.random.key(0),
                  num_seeds=1)
  assert "\n" not in str(e.value)


class HiddenLayer(nn.Module):
  @nn.compact
  def __call__(self, h, _):
    return nn.relu(nn.Dense(16)(h)), None


class ScannedMLP(nn.Module):
  """Five hidden layers stacked by nn.scan (parameters with a leading layer axis)."""

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(16)(x)
    h, _ = nn.scan(HiddenLayer, variable_axes={"params": 0}, split_rngs={"params": True},
                   length=5)()(h, None)
    return nn.Dense(2)(h)


class Jitted(nn.Module):
  @nn.compact
  def __call__(self, x):
    return jax.jit(lambda v: probe.tap("inner", jnp.tanh(v)))(nn.Dense(8)(x))


def test_scanned_layers_vmapped_layers_and_a_jit_inside():
  x = jax.random.normal(jax.random.key(0), (8, 4))
  # nn.scan over depth: the stacked kernel (5, 16, 16) has fan_in 16 (read from the raw shape,
  # it would be 5 x 16), and each scanned layer is an entry of its own.
  rows = _rows(ScannedMLP(), x, weight_init="he_normal")
  assert rows["params/ScanHiddenLayer_0/Dense_0/kernel"]["fan_in"] == 16
  assert _within(rows["params/ScanHiddenLayer_0/Dense_0/kernel"]["variance"], 2 / 16, 5 * 256)
  stats = probe.measure(ScannedMLP(), x, key=jax.random.key(1), num_seeds=2,
                        weight_init="he_normal")
  scanned = tuple(f"ScanHiddenLayer_0/Dense_0[{i}]" for i in range(5))
  assert stats["layers"] == ("Dense_0",) + scanned + ("Dense_1",)
  # nn.vmap: the vmapped layer is one layer with its vmapped axis.
  vmapped = nn.vmap(nn.Dense, variable_axes={"params": 0}, split_rngs={"params": True})(3)
  assert probe.layers(vmapped, jnp.stack([x, x])) == {"Dense": (2, 8, 3)}   # the top module
  # A jit inside the model cannot be recorded inside: its enclosing layers are, no refusal.
  assert probe.layers(Jitted(), x) == {"Dense_0": (8, 8)}


def test_equinox_trace_and_linen_from_flax_unhashable():
  eqx = pytest.importorskip("equinox")
  model = models.equinox(lambda key: eqx.nn.MLP(6, 2, 8, 1, key=key))
  one = probe.trace(model, jnp.ones((3, 6)), key=jax.random.key(0), weight_init="he_normal")
  assert set(one["outputs"]) == {"layers/0", "layers/1"}
  assert one["outputs"]["layers/0"].shape == (3, 8)
