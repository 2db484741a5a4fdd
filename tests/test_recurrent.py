"""Tests for initjax.nn.recurrent and the built-in rnn/lstm/gru architectures: the cells against
Flax's, the time loop as one scan, and the vanilla RNN's per-time-step statistics over many
random networks against its mean field (initjax.theory.recurrent)."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initjax.measurement import propagation
from initjax.nn import recurrent
from initjax.theory import architectures
from initjax.theory.recurrent import predict_rnn


def _flax_params(cell, params):
  """Our parameters in the layout of Flax's cell (gates as separate Dense layers)."""
  kx, kh = params["kernel_x"], params["kernel_h"]
  b = params["beta"].reshape(kx.shape[0], -1)
  if cell == "rnn":
    return {"i": {"kernel": kx[0], "bias": b[0]}, "h": {"kernel": kh[0]}}
  if cell == "lstm":   # Flax's LSTMCell has its biases on the recurrent side; they add up
    return {**{f"i{g}": {"kernel": kx[j]} for j, g in enumerate("ifgo")},
            **{f"h{g}": {"kernel": kh[j], "bias": b[j]} for j, g in enumerate("ifgo")}}
  return {**{f"i{g}": {"kernel": kx[j], "bias": b[j]} for j, g in enumerate("rzn")},
          **{f"h{g}": {"kernel": kh[j]} for j, g in enumerate("rz")},
          "hn": {"kernel": kh[2], "bias": params["beta_hn"]}}


@pytest.mark.parametrize("cell", recurrent.CELLS)
def test_cells_match_flax(cell):
  # Flax's SimpleCell / LSTMCell / GRUCell under nn.RNN, on the same weights (random biases, so
  # every term counts), give the same last hidden state as our scan.
  key = jax.random.key(0)
  params = recurrent.init_recurrent(key, cell=cell, input_dim=3, width=5, output_dim=2,
                                    weight_init="he_normal", recurrent_init="orthogonal")
  params = {k: (v if k not in ("beta", "beta_hn") else
                jax.random.normal(jax.random.key(len(k)), v.shape)) for k, v in params.items()}
  x = jax.random.normal(jax.random.key(1), (4, 7, 3))
  flax_cell = {"rnn": nn.SimpleCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[cell](features=5)
  h_flax = nn.RNN(flax_cell).apply({"params": {"cell": _flax_params(cell, params)}}, x)[:, -1]
  h_ours = recurrent.trace_recurrent(params, x, "tanh")["h"][-1]
  np.testing.assert_allclose(h_ours, h_flax, rtol=1e-5, atol=1e-6)
  out = recurrent.apply_recurrent(params, x.reshape(4, -1))     # (N, T D) read as T steps
  np.testing.assert_allclose(out, h_flax @ params["omega_out"].T + params["beta_out"],
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_lstm_backward_equals_autodiff(activation):
  # The LSTM's own backward pass (recurrent.lstm_scan) against autodiff of the same loop, in
  # float64: the gradient of a loss that reads every h_t, the candidates' arguments "f" and the
  # output, with respect to every parameter and to the offsets of h_t (dL/dh_t), for two
  # networks vmapped. Random biases and an identity-free kernel so that every gate matters; a
  # wrong term in any gate's derivative is an O(1) relative error, far above the 1e-10 allowed.
  with jax.enable_x64(True):
    keys = jax.random.split(jax.random.key(3), 2)
    params = jax.vmap(lambda k: recurrent.init_recurrent(
        k, cell="lstm", input_dim=2, width=6, output_dim=3, weight_init="he_normal",
        recurrent_init="he_normal", bias_init=jax.nn.initializers.normal(1.0),
        dtype=jnp.float64))(keys)
    x = jax.random.normal(jax.random.key(4), (5, 7, 2), jnp.float64)
    offsets = {"h": jax.random.normal(jax.random.key(5), (7, 5, 6), jnp.float64) * 0.1,
               "f_out": jnp.zeros((5, 3), jnp.float64)}

    def loss(p, o, custom):
      t = recurrent.trace_recurrent(p, x, activation, o, custom_backward=custom)
      return (jnp.sum(jnp.sin(t["h"]) * jnp.arange(6.0)) + jnp.sum(t["f"] ** 2) / 3
              + jnp.sum(t["f_out"] ** 2))

    grads = {c: jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(0, None, None))(
        params, offsets, c) for c in (True, False)}
  for got, want in zip(jax.tree.leaves(grads[True]), jax.tree.leaves(grads[False])):
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max())


def test_lstm_forward_mode_needs_autodiff_backward():
  params = recurrent.init_recurrent(jax.random.key(0), cell="lstm", input_dim=1, width=4,
                                    output_dim=1)
  x = jnp.ones((2, 5))
  tangent = jax.tree.map(jnp.ones_like, params)
  f = lambda custom: lambda p: recurrent.trace_recurrent(p, x, custom_backward=custom)["f_out"]
  out, jvp = jax.jvp(f(False), (params,), (tangent,))
  np.testing.assert_allclose(out, f(True)(params), rtol=1e-6)
  assert np.all(np.isfinite(jvp))
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jvp(f(True), (params,), (tangent,))


def test_per_gate_kernels_have_their_own_fans_and_initializers():
  params = recurrent.init_recurrent(jax.random.key(0), cell="lstm", input_dim=40, width=64,
                                    output_dim=10, weight_init="xavier_normal",
                                    recurrent_init="identity")
  assert params["kernel_x"].shape == (4, 40, 64) and params["kernel_h"].shape == (4, 64, 64)
  np.testing.assert_array_equal(params["kernel_h"], np.broadcast_to(np.eye(64), (4, 64, 64)))
  # Xavier per gate: Var = 2 / (40 + 64) (fan_out 64, not 4 x 64); 4 x 2560 normal draws, the
  # sample variance has SE var sqrt(2 / n) = 1.4%: 5 SE.
  var = 2 / (40 + 64)
  assert abs(np.var(params["kernel_x"]) / var - 1) < 5 * math.sqrt(2 / params["kernel_x"].size)


def test_time_loop_is_one_scan():
  # 4x the steps: the same number of equations (the loop is a lax.scan, not unrolled).
  sizes = []
  for steps in (10, 40):
    params = recurrent.init_recurrent(jax.random.key(0), cell="lstm", input_dim=1, width=8,
                                      output_dim=1)
    x = jnp.ones((2, steps))
    jaxpr = jax.make_jaxpr(functools.partial(recurrent.recurrent_layer_statistics,
                                             loss_fn=lambda f, y: jnp.sum((f - y) ** 2)))(
        params, x, jnp.zeros((2, 1)))
    sizes.append(len(str(jaxpr).splitlines()))
  assert sizes[0] == sizes[1], sizes


def test_depth_must_divide_the_sequence():
  with pytest.raises(ValueError, match="dividing the input's 40 values"):
    recurrent.sequence_shape((40,), 30)
  assert recurrent.sequence_shape((40,), 40) == (40, 1)
  assert recurrent.sequence_shape((40,), 10) == (10, 4)
  with pytest.raises(ValueError, match="recurrent_init"):
    architectures.ArchOptions(recurrent_init="zeros")


def _slopes(recurrent_init, steps=20, width=64, seeds=32):
  out = propagation.measure_architecture(
      jax.random.key(0), "rnn", activation="tanh",
      options=architectures.ArchOptions(recurrent_init=recurrent_init),
      input_shape=(steps, 1), width=width, depth=steps, output_dim=1, batch_size=32,
      weight_init="lecun_normal", num_seeds=seeds)
  pred = architectures.predict_for_init(
      architectures.get("rnn"), "lecun_normal", input_shape=(steps, 1), width=width,
      depth=steps, output_dim=1, activation="tanh",
      options=architectures.ArchOptions(recurrent_init=recurrent_init))
  return out, pred


@pytest.mark.parametrize("recurrent_init, sigma2_h", [
    ("orthogonal", 1.0), ("he_normal", 2.0), ("xavier_normal", 1.0)])
def test_rnn_decades_per_step_back_against_the_mean_field(recurrent_init, sigma2_h):
  # Var[dL/dh_t] of a tanh RNN (64 units, 20 steps of one input value of mean square 1, LeCun
  # input kernel, readout loss) over 32 random networks: each network's least-squares slope of
  # log10 Var[dL/dh_t] in t (decades lost per step back) against the mean field's. Tolerance: 4
  # standard errors of the mean over the 32 networks (from their spread; about 0.006 decades per
  # step here), which also covers the O(1/width) finite-width gap (measured at width 64, 64
  # networks: orthogonal 0.395 vs 0.399, He 0.155 vs 0.160, Xavier 0.390 vs 0.399 decades, each
  # 1-1.6 standard errors). A recurrent kernel of the wrong variance fails by far: sigma2_h = 1
  # vs 2 predicts 0.40 vs 0.16 decades per step.
  out, pred = _slopes(recurrent_init)
  theory_chi = np.asarray(predict_rnn(
      steps=20, sigma2_h=sigma2_h, sigma2_x=1.0, activation="tanh",
      loss="readout_least_squares", width=64)["var_dl_dh"])
  np.testing.assert_allclose(pred["var_dl_dh"], theory_chi, atol=1e-9)  # sigma2_h as stated
  t = np.arange(20)
  slopes = np.array([np.polyfit(t, g, 1)[0] for g in out["var_dl_dh"][0]])
  se = slopes.std(ddof=1) / math.sqrt(slopes.size)
  want = np.polyfit(t, pred["var_dl_dh"], 1)[0]
  assert abs(slopes.mean() - want) < 4 * se, (slopes.mean(), se, want)
  # Forward: log10 Var[h_t] over the last 10 steps (at the fixed point q*), 4 SE of the mean
  # over networks plus 0.01 decades of finite-width bias (measured 0.005-0.007 at width 64).
  h = out["var_h"][0][:, 10:].mean(1)
  assert abs(h.mean() - pred["var_h"][10:].mean()) < 4 * h.std(ddof=1) / math.sqrt(h.size) + 0.01


# ------------------------------------------------------------------------------------------------
# Flags and configs: the recurrent initializer, incompatible options, the sweep's new axis.

def test_figure_config_checks_the_recurrent_fields():
  from initjax.core.errors import ConfigError  # pylint: disable=import-outside-toplevel
  from initjax.studies.propagation_figure import FigureConfig, settings_for  # pylint: disable=import-outside-toplevel
  for kwargs, field in ((dict(arch="rnn", recurrent_init=("nope",)), "recurrent_init"),
                        (dict(arch="mlp", recurrent_init=("orthogonal",)), "recurrent_init"),
                        (dict(arch="lstm", kernel_size=3), "kernel_size"),
                        (dict(arch="gru", padding="zero"), "padding"),
                        (dict(arch="rnn", recurrent_init=("identity", "identity")),
                         "recurrent_init")):
    with pytest.raises(ConfigError) as e:
      FigureConfig(**kwargs)
    assert e.value.field == field, kwargs
  config = FigureConfig(arch="rnn", sigma2=(), inits=("lecun_normal", "he_normal"),
                        recurrent_init=("identity", "orthogonal"), depth=12, input_dim=2)
  assert config.input_shape() == (12, 2)
  labels = [s.label for s in settings_for(config)]
  assert labels == ["lecun_normal, rec identity", "he_normal, rec identity",
                    "lecun_normal, rec orthogonal", "he_normal, rec orthogonal"]
  assert FigureConfig(arch="rnn").recurrent_inits() == ("orthogonal",)


def test_sweep_config_checks_the_recurrent_fields():
  from initjax.core.errors import ConfigError  # pylint: disable=import-outside-toplevel
  from initjax.studies.sweep import SweepConfig  # pylint: disable=import-outside-toplevel
  for kwargs, field, needle in (
      (dict(archs=("rnn",), depths=(40,), recurrent_inits=("qr",)), "recurrent_inits",
       "allowed: delta_orthogonal"),
      (dict(archs=("mlp",), recurrent_inits=("orthogonal",)), "recurrent_inits", "only"),
      (dict(archs=("gru",), depths=(30,)), "depths", "one of 1, 2, 4, 5, 8, 10, 20, 40"),
      (dict(archs=("lstm",), depths=(40,), kernel_size=3), "kernel_size", "cnn")):
    with pytest.raises(ConfigError) as e:
      SweepConfig(**kwargs)
    assert e.value.field == field and needle in e.value.message, (kwargs, e.value.message)
  # A cnn next to the recurrent nets may take its kernel size.
  SweepConfig(archs=("cnn", "rnn"), depths=(10,), kernel_size=3)


def test_existing_sweep_points_keep_their_ids_and_fingerprints():
  # Fingerprints computed by initjax before the recurrent axis existed (main at 3a110fa) for
  # SweepConfig(archs=("mlp", "cnn"), depths=(10,), optimizers=("adam",)).
  from initjax.studies.sweep import SweepConfig  # pylint: disable=import-outside-toplevel
  from initjax.studies.sweep.grid import expand_grid  # pylint: disable=import-outside-toplevel
  from initjax.studies.sweep.store import fingerprint, point_config  # pylint: disable=import-outside-toplevel
  before = {"he_normal-d10-w100-relu-adam-lr0.001": "0d53859ec3c99b5f",
            "xavier_normal-d10-w100-relu-adam-lr0.001": "8bcca92e52aab6a2",
            "cnn-he_normal-d10-w100-relu-adam-lr0.001": "5fbb6e3c3a4437b2",
            "cnn-xavier_normal-d10-w100-relu-adam-lr0.001": "af6049dd700fbb5a"}
  config = SweepConfig(archs=("mlp", "cnn"), depths=(10,), optimizers=("adam",))
  assert {p.point_id: fingerprint(point_config(config, p)) for p in expand_grid(config)} == before
  assert "recurrent_inits" not in config.to_dict()
  # With recurrent nets the grid grows by their axis only, and is paired across it: every
  # recurrent init of a point starts from the same draws' keys and shares its compiled group.
  mixed = SweepConfig(archs=("mlp", "rnn"), depths=(10,), optimizers=("adam",),
                      inits=("he_normal",), recurrent_inits=("orthogonal", "identity"))
  ids = [p.point_id for p in expand_grid(mixed)]
  assert ids == ["he_normal-d10-w100-relu-adam-lr0.001",
                 "rnn-he_normal-rec_orthogonal-d10-w100-relu-adam-lr0.001",
                 "rnn-he_normal-rec_identity-d10-w100-relu-adam-lr0.001"]
  assert fingerprint(point_config(mixed, expand_grid(mixed)[0])) == before[ids[0]]
  assert len({p.group_key for p in expand_grid(mixed)}) == 2
  assert SweepConfig.from_dict(mixed.to_dict()).recurrent_inits == ("orthogonal", "identity")


REPO = __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(
    __file__)))


def _run(module, *flags, timeout=240):
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  return subprocess.run([sys.executable, "-m", module, *flags], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout)


@pytest.mark.parametrize("module, flags, needle", [
    ("experiments.propagation", ["--arch=rnn", "--kernel_size=5"],
     "error: --kernel_size: is an option of cnn, not of rnn, which take --recurrent_init "
     "(allowed: "),
    ("experiments.sweep", ["--archs=lstm", "--depths=40", "--recurrent_inits=nope"],
     "error: --recurrent_inits: unknown value 'nope'; allowed: "),
    pytest.param("experiments.propagation", ["--arch=gru", "--recurrent_init=nope"],
                 "error: --recurrent_init: unknown value 'nope'; allowed: ",
                 marks=pytest.mark.slow),
    pytest.param("experiments.propagation", ["--arch=mlp", "--recurrent_init=identity"],
                 "error: --recurrent_init: applies to the recurrent architectures only",
                 marks=pytest.mark.slow),
    pytest.param("experiments.propagation", ["--arch=lstm", "--padding=zero"],
                 "error: --padding: is an option of cnn", marks=pytest.mark.slow),
    pytest.param("experiments.sweep", ["--archs=gru", "--depths=40", "--kernel_size=3"],
                 "error: --kernel_size: is an option of cnn, not of gru", marks=pytest.mark.slow),
    pytest.param("experiments.sweep", ["--archs=rnn", "--depths=30"],
                 "error: --depths: rnn read each mnist1d example (40 values) as depth time "
                 "steps", marks=pytest.mark.slow),
    pytest.param("experiments.sweep", ["--archs=mlp", "--recurrent_inits=orthogonal"],
                 "error: --recurrent_inits: apply to the recurrent architectures only",
                 marks=pytest.mark.slow),
])
def test_bad_recurrent_flags_fail_with_one_line(tmp_path, module, flags, needle):
  out = tmp_path / "o"
  proc = _run(module, *flags, f"--output_dir={out}", timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(needle), proc.stderr
  assert "identity" in lines[0] or "allowed" not in needle
  assert not out.exists()


@pytest.mark.slow  # end to end, about a minute on 2 loaded cores
def test_recurrent_figure_and_sweep_end_to_end(tmp_path):
  import csv  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel
  fig = tmp_path / "fig"
  proc = _run("experiments.propagation", "--arch=rnn", "--activation=tanh", "--depth=8",
              "--input_dim=1", "--width=16", "--sigma2=", "--inits=lecun_normal",
              "--recurrent_init=orthogonal,identity", "--num_seeds=4", "--batch_size=8",
              f"--output_dir={fig}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "rec identity" in proc.stdout
  rows = list(csv.DictReader(open(fig / "results.csv")))
  assert {r["recurrent_init"] for r in rows} == {"orthogonal", "identity"}
  assert {int(r["layer"]) for r in rows if r["quantity"] == "var_dl_dh"} == set(range(1, 9))
  summary = json.loads((fig / "summary.json").read_text())
  assert summary["settings"]["rec orthogonal"]["recurrent_init"] == "orthogonal"
  sweep = tmp_path / "sweep"
  proc = _run("experiments.sweep", "--archs=rnn,gru", "--depths=40", "--widths=8",
              "--activations=tanh", "--optimizers=adam", "--inits=lecun_normal",
              "--recurrent_inits=orthogonal,identity", "--num_seeds=2", "--steps=4",
              "--eval_every=2", "--stats_every=2", f"--output_dir={sweep}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = list(csv.DictReader(open(sweep / "results.csv")))
  assert {(r["arch"], r["recurrent_init"]) for r in rows} == {
      ("rnn", "orthogonal"), ("rnn", "identity"), ("gru", "orthogonal"), ("gru", "identity")}
  assert {int(r["layer"]) for r in rows if r["metric"] == "var_dl_dh"} == set(range(1, 41))
  assert "rnn   lecun_normal, rec identity" in proc.stdout
