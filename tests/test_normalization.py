"""Batch and layer normalization of the MLP (`initjax.nn.normalization`): each layer against
Flax's, the running statistics, training through the built-in architecture record, the sweep's
norms axis (existing points keep their names and fingerprints) and the flags' bad input."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initjax import batch_training, training
from initjax.core.errors import ConfigError
from initjax.nn import models, networks, normalization
from initjax.nn.models import forward_eval, forward_train
from initjax.studies.sweep import config as sweep_config, grid, store
from initjax.theory import architectures

N, D = 32, 12


def _f():
  return 3.0 * jax.random.normal(jax.random.key(0), (N, D)) + 1.5


def test_batch_norm_equals_flax_in_training_with_its_running_averages():
  f = _f()
  scale = 1.0 + 0.1 * jnp.arange(D, dtype=jnp.float32)
  shift = 0.05 * jnp.arange(D, dtype=jnp.float32)
  bn = nn.BatchNorm(use_running_average=False, momentum=normalization.MOMENTUM,
                    epsilon=normalization.EPS)
  variables = bn.init(jax.random.key(1), f)
  variables = {"params": {"scale": scale, "bias": shift},
               "batch_stats": variables["batch_stats"]}
  ours = normalization.batch_norm(f, scale, shift)
  theirs, updated = bn.apply(variables, f, mutable=["batch_stats"])
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
  mean, var = normalization.batch_moments(f)
  new = lambda old, b: normalization.MOMENTUM * old + (1 - normalization.MOMENTUM) * b  # noqa
  np.testing.assert_allclose(new(0.0, mean), updated["batch_stats"]["mean"], rtol=1e-5)
  np.testing.assert_allclose(new(1.0, var), updated["batch_stats"]["var"], rtol=1e-5)
  # Standardized: each unit has batch mean shift and batch std scale (to eps / var ~ 1e-6).
  np.testing.assert_allclose(ours.mean(0), shift, atol=1e-5)
  np.testing.assert_allclose(ours.std(0), scale, rtol=1e-5)


def test_layer_norm_equals_flax():
  f = _f()
  scale, shift = 2.0 * jnp.ones(D), jnp.full(D, 0.3)
  ln = nn.LayerNorm(epsilon=normalization.EPS)
  theirs = ln.apply({"params": {"scale": scale, "bias": shift}}, f)
  np.testing.assert_allclose(normalization.layer_norm(f, scale, shift), theirs, rtol=1e-5,
                             atol=1e-5)


def _net(norm, depth=4, width=16, key=0):
  p = networks.init_mlp(jax.random.key(key), input_dim=D, width=width, depth=depth,
                        output_dim=3, weight_init="he_normal")
  return normalization.init_norm_params(p, norm)


def _flax_mlp(norm, depth, train):
  """The same network written as a Flax user writes it (Dense, norm, relu), for comparison."""
  class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
      for _ in range(depth):
        x = nn.Dense(16)(x)
        x = (nn.BatchNorm(use_running_average=not train, momentum=normalization.MOMENTUM,
                          epsilon=normalization.EPS)(x) if norm == "batchnorm"
             else nn.LayerNorm(epsilon=normalization.EPS)(x))
        x = nn.relu(x)
      return nn.Dense(3)(x)
  return MLP()


def _to_flax(p, norm, depth):
  omegas = [p["omega_0"]] + list(p["omega_hidden"]) + [p["omega_out"]]
  betas = [p["beta_0"]] + list(p["beta_hidden"]) + [p["beta_out"]]
  scales = [p["norm_scale_0"]] + list(p["norm_scale_hidden"])
  shifts = [p["norm_shift_0"]] + list(p["norm_shift_hidden"])
  kind = "BatchNorm" if norm == "batchnorm" else "LayerNorm"
  params = {f"Dense_{i}": {"kernel": omegas[i].T, "bias": betas[i]} for i in range(depth + 1)}
  params.update({f"{kind}_{i}": {"scale": scales[i], "bias": shifts[i]} for i in range(depth)})
  return params


@pytest.mark.parametrize("norm", [pytest.param("batchnorm", marks=pytest.mark.slow),  # ~10 s
                                  "layernorm"])
def test_the_normalized_mlp_is_flax_dense_norm_relu(norm):
  depth, x = 4, _f()
  p = _net(norm, depth)
  p = {**p, "norm_scale_hidden": p["norm_scale_hidden"] * 1.3,
       "norm_shift_0": p["norm_shift_0"] + 0.2}
  module = _flax_mlp(norm, depth, train=True)
  variables = {"params": _to_flax(p, norm, depth)}
  if norm == "batchnorm":
    stats = normalization.init_norm_state(p, norm)
    variables["batch_stats"] = {f"BatchNorm_{i}": {"mean": m, "var": v} for i, (m, v) in
                                enumerate(zip([stats["mean_0"]] + list(stats["mean_hidden"]),
                                              [stats["var_0"]] + list(stats["var_hidden"])))}
    theirs, upd = jax.jit(lambda v: module.apply(v, x, mutable=["batch_stats"]))(variables)
    ours, new_state = jax.jit(lambda p, s: normalization.apply_train(p, s, x, norm=norm))(p, stats)
    np.testing.assert_allclose(new_state["var_hidden"][1],
                               upd["batch_stats"]["BatchNorm_2"]["var"], rtol=1e-5)
    # Evaluation with those running averages, as Flax's use_running_average=True.
    ev = jax.jit(_flax_mlp(norm, depth, train=False).apply)(
        {**variables, "batch_stats": upd["batch_stats"]}, x)
    ours_ev = jax.jit(lambda p, s: normalization.apply_eval(p, s, x, norm=norm))(p, new_state)
    np.testing.assert_allclose(ours_ev, ev, rtol=2e-4, atol=2e-5)
  else:
    theirs = module.apply(variables, x)
    ours = normalization.apply_normalized_mlp(p, x, norm=norm)
  np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5)


@pytest.mark.slow  # about 20 s on a loaded 2-core CPU: compiles a training loop
def test_architecture_record_builds_state_and_trains_batchnorm_with_running_statistics():
  arch = architectures.get("mlp")
  opts = architectures.ArchOptions(norm="batchnorm")
  keys = jax.random.split(jax.random.key(3), 2)
  params_B = architectures.init_networks(arch, keys, "he_normal", input_shape=(D,), width=16,
                                         depth=4, output_dim=3, options=opts)
  state_B = architectures.init_states(arch, params_B, opts)
  assert params_B["norm_scale_hidden"].shape == (2, 3, 16)
  assert state_B["var_hidden"].shape == (2, 3, 16)
  model = arch.model("relu", opts)
  assert model.stateful and model is arch.model("relu", opts)
  assert architectures.init_states(arch, params_B, architectures.ArchOptions()) == ()
  assert arch.model("relu", architectures.ArchOptions()) is models.mlp("relu")
  x = jax.random.normal(jax.random.key(4), (96, D))
  y = (jnp.sum(x[:, :4], 1) > 0).astype(jnp.int32) + (x[:, 5] > 1).astype(jnp.int32)
  data = {"x_train": x[:64], "y_train": y[:64], "x_test": x[64:], "y_test": y[64:]}
  spec = training.TrainSpec(optimizer="momentum", steps=20, eval_every=10, stats_every=20,
                            batch_size=16, stats_batch_size=32)
  out = batch_training.run_networks(model, params_B, keys, np.full(2, 0.05), data, spec,
                                    state_B=state_B, return_final=True)
  assert np.all(np.isfinite(out["train_loss"])) and np.all(out["diverged_step"] == -1)
  assert out["var_dl_dh"].shape == (2, 2, 4) and out["var_f"].shape == (2, 2, 4)
  final = out["final_state"]
  assert np.all(np.abs(final["mean_0"]).max(axis=1) > 1e-3)       # the running mean moved
  # The recorded test loss is the eval-mode loss with the final running averages.
  for b in range(2):
    p = jax.tree.map(lambda a, b=b: a[b], out["final_params"])
    s = jax.tree.map(lambda a, b=b: a[b], final)
    loss = training.batch_loss(forward_eval(model, p, s, data["x_test"]), data["y_test"],
                               "classification")
    np.testing.assert_allclose(out["test_loss"][b, -1], loss, rtol=2e-5)
    train_out = forward_train(model, p, s, data["x_test"], None)[0]
    assert not np.allclose(train_out, forward_eval(model, p, s, data["x_test"]))


def test_sweep_norms_axis_keeps_existing_point_names_and_fingerprints():
  config = sweep_config.SweepConfig()
  plain = grid.GridPoint("xavier_normal", 30, 100, "relu", "momentum", 0.01)
  # Computed with the code before the norms axis existed (main at 3a110fa): unchanged.
  assert plain.point_id == "xavier_normal-d30-w100-relu-momentum-lr0.01"
  assert store.fingerprint(store.point_config(config, plain)) == "9b788f7dc83c188c"
  both = sweep_config.SweepConfig(norms=("none", "batchnorm"), depths=(30,),
                                  optimizers=("momentum",))
  ids = [p.point_id for p in grid.expand_grid(both)]
  assert "xavier_normal-d30-w100-relu-momentum-lr0.01" in ids
  assert "batchnorm-xavier_normal-d30-w100-relu-momentum-lr0.01" in ids
  bn = grid.GridPoint("xavier_normal", 30, 100, "relu", "momentum", 0.01, norm="batchnorm")
  assert store.point_config(both, bn)["norm"] == "batchnorm"
  assert bn.group_key != plain.group_key
  # Paired: the same initial weights with and without the normalization.
  k0, k1 = grid.point_keys(jax.random.PRNGKey(0), plain, 2), grid.point_keys(
      jax.random.PRNGKey(0), bn, 2)
  np.testing.assert_array_equal(jax.random.key_data(k0[0]), jax.random.key_data(k1[0]))
  assert sweep_config.SweepConfig.from_dict(both.to_dict()).norms == ("none", "batchnorm")
  old = {k: v for k, v in config.to_dict().items() if k != "norms"}  # a sweep_config.json
  assert sweep_config.SweepConfig.from_dict(old).norms == ("none",)   # from before norms


@pytest.mark.parametrize("kwargs, field, needle", [
    (dict(norms=("groupnorm",)), "norms", "unknown value 'groupnorm'"),
    (dict(norms=("batchnorm",), archs=("resmlp",)), "norms", "not built for --arch=resmlp"),
    (dict(norms=("batchnorm",), batch_size=1), "norms/batch_size", "at least 2"),
    (dict(norms=("none", "none")), "norms", "listed twice"),
])
def test_sweep_config_refuses_bad_norms(kwargs, field, needle):
  with pytest.raises(ConfigError, match=needle) as e:
    sweep_config.SweepConfig(**kwargs)
  assert e.value.field == field and "\n" not in str(e.value)


def test_figure_config_refuses_bad_norms():
  from initjax.studies.propagation_figure import FigureConfig  # pylint: disable=import-outside-toplevel
  for kwargs, field in ((dict(norm="bn"), "norm"), (dict(norm="batchnorm", batch_size=1),
                                                    "norm/batch_size"),
                        (dict(norm="layernorm", arch="resmlp"), "norm")):
    with pytest.raises(ConfigError) as e:
      FigureConfig(**kwargs)
    assert e.value.field == field
  assert FigureConfig(norm="layernorm", batch_size=1).norm == "layernorm"   # per example
  assert FigureConfig(norm="batchnorm", arch="cnn").options().norm == "batchnorm"


def test_check_batch():
  normalization.check_batch("layernorm", 1)
  normalization.check_batch("batchnorm", 2)
  with pytest.raises(ValueError, match="at least 2"):
    normalization.check_batch("batchnorm", 1)


@pytest.mark.parametrize("module, flags, needle", [
    ("experiments.propagation", ["--norm=groupnorm"], "--norm: Unknown norm 'groupnorm'; valid "
     "choices: none, batchnorm, layernorm"),
    pytest.param("experiments.propagation", ["--norm=batchnorm", "--batch_size=1"],
                 "--norm/--batch_size: batchnorm needs at least 2", marks=pytest.mark.slow),
    pytest.param("experiments.propagation", ["--norm=batchnorm", "--arch=resmlp"],
                 "--norm: norm 'batchnorm' is not built for --arch=resmlp",
                 marks=pytest.mark.slow),
    pytest.param("experiments.sweep", ["--norms=none,groupnorm"], "--norms: unknown value "
                 "'groupnorm'; allowed: none, batchnorm, layernorm", marks=pytest.mark.slow),
    ("experiments.sweep", ["--norms=batchnorm", "--batch_size=1"],
     "--norms/--batch_size: batchnorm needs at least 2"),
])
def test_bad_norm_flags_are_one_line_exit_2_nothing_written(tmp_path, tmp_path_factory, module,
                                                            flags, needle):
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from tests.subprocess_env import REPO, one_error_line, subprocess_env  # pylint: disable=import-outside-toplevel
  out = tmp_path / "o"
  proc = subprocess.run([sys.executable, "-m", module, *flags, f"--output_dir={out}"], cwd=REPO,
                        env=subprocess_env(tmp_path_factory), capture_output=True, text=True,
                        timeout=120, check=False)
  one_error_line(proc, needle)
  assert not out.exists()


@pytest.mark.parametrize("norm", [pytest.param("batchnorm", marks=pytest.mark.slow),  # ~10-30 s
                                  "layernorm"])
def test_the_normalized_cnn_is_flax_conv_norm_relu(norm):
  from initjax.nn import convolutional  # pylint: disable=import-outside-toplevel
  depth, length, channels = 3, 10, 4
  x = jax.random.normal(jax.random.key(5), (N, length))
  p = normalization.init_norm_params(convolutional.init_cnn(
      jax.random.key(6), input_shape=(length,), channels=channels, depth=depth, output_dim=3,
      kernel_size=3), norm)
  p = {**p, "norm_scale_hidden": p["norm_scale_hidden"] * 0.7}

  class CNN(nn.Module):
    @nn.compact
    def __call__(self, h):
      h = h[..., None]
      for _ in range(depth):
        h = nn.Conv(channels, (3,), padding="CIRCULAR")(h)
        h = (nn.BatchNorm(use_running_average=False, momentum=normalization.MOMENTUM,
                          epsilon=normalization.EPS)(h) if norm == "batchnorm"
             else nn.LayerNorm(epsilon=normalization.EPS)(h))
        h = nn.relu(h)
      return nn.Dense(3)(h.reshape(h.shape[0], -1))

  kind = "BatchNorm" if norm == "batchnorm" else "LayerNorm"
  kernels = [p["kernel_0"]] + list(p["kernel_hidden"])
  biases = [p["beta_0"]] + list(p["beta_hidden"])
  scales = [p["norm_scale_0"]] + list(p["norm_scale_hidden"])
  shifts = [p["norm_shift_0"]] + list(p["norm_shift_hidden"])
  params = {f"Conv_{i}": {"kernel": kernels[i], "bias": biases[i]} for i in range(depth)}
  params.update({f"{kind}_{i}": {"scale": scales[i], "bias": shifts[i]} for i in range(depth)})
  params["Dense_0"] = {"kernel": p["omega_out"].T, "bias": p["beta_out"]}
  variables = {"params": params}
  if norm == "batchnorm":
    variables["batch_stats"] = {f"BatchNorm_{i}": {"mean": jnp.zeros(channels),
                                                   "var": jnp.ones(channels)}
                                for i in range(depth)}
    theirs, upd = jax.jit(lambda v: CNN().apply(v, x, mutable=["batch_stats"]))(variables)
    ours, state = jax.jit(lambda p: normalization.apply_cnn_train(
        p, normalization.init_norm_state(p, norm), x, norm=norm))(p)
    np.testing.assert_allclose(state["mean_hidden"][0], upd["batch_stats"]["BatchNorm_1"]["mean"],
                               rtol=1e-4, atol=1e-6)
  else:
    theirs = jax.jit(CNN().apply)(variables, x)
    ours = jax.jit(lambda p: normalization.apply_normalized_cnn(p, x, norm=norm))(p)
  np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5)
