"""Glorot & Bengio's per-layer distributions (initjax.studies.saturation): checked against the
MLP's own statistics (initjax.models.mlp, written separately) and against NumPy on the trace."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from initjax.core.errors import ConfigError
from initjax.nn import models, networks
from initjax.studies import saturation
from initjax.studies.sweep.group import weight_initializer
from initjax.training import loop
from tests.subprocess_env import REPO, one_error_line, subprocess_env

X = np.asarray(jax.random.normal(jax.random.key(0), (64, 12)))
Y = np.asarray(jax.random.randint(jax.random.key(1), (64,), 0, 3))


def _params(activation_init="xavier_uniform"):
  return networks.init_mlp(jax.random.key(2), input_dim=12, width=16, depth=4, output_dim=3,
                           weight_init=weight_initializer(activation_init))


def _loss(f_out, y):
  return loop.batch_loss(f_out, y, "classification")


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_distributions_agree_with_the_mlp_statistics_and_numpy(activation):
  params = _params()
  got = jax.jit(lambda p: saturation.distribution_statistics(p, X, Y, _loss, activation))(params)
  mlp = models.mlp_layer_statistics(params, X, Y, _loss, activation)
  np.testing.assert_allclose(got["h_std"] ** 2, mlp["var_h"], rtol=1e-5)
  np.testing.assert_allclose(got["dl_df_var"], mlp["var_dl_df"], rtol=1e-5)
  h = np.asarray(networks.trace_mlp(params, X, activation)["h"]).reshape(4, -1)
  lo, hi = saturation.RANGES[activation]
  edge = saturation.SATURATION * (hi - lo)
  np.testing.assert_allclose(got["h_mean"], h.mean(axis=1), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(got["saturated_low"], (h <= lo + edge).mean(axis=1))
  np.testing.assert_allclose(got["saturated_high"], (h >= hi - edge).mean(axis=1))
  np.testing.assert_allclose(got["h_quantiles"], np.quantile(h, saturation.QUANTILES, axis=1).T,
                             rtol=1e-5, atol=1e-6)
  # Every value of a bounded activation falls in one bin of its range.
  np.testing.assert_allclose(np.asarray(got["h_histogram"]).sum(axis=1), 1.0, rtol=1e-6)
  # Weight gradients: Var over each matrix of jax.grad of the same loss.
  g = jax.grad(lambda p: _loss(networks.apply_mlp(p, X, activation), Y))(params)
  want = [np.var(g["omega_0"]), *np.var(g["omega_hidden"], axis=(1, 2)), np.var(g["omega_out"])]
  np.testing.assert_allclose(got["weight_grad_var"], want, rtol=1e-4)


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_standard_init_decays_per_layer_as_the_linear_regime_says():
  # Glorot & Bengio's analysis: n Var[W] = 1/3 per layer, -0.477 decades per layer forward in
  # the linear regime (tanh's is a little steeper, E[tanh'^2] < 1). Width 256, 4 networks.
  params = jax.vmap(lambda k: networks.init_mlp(
      k, input_dim=40, width=256, depth=5, output_dim=10,
      weight_init=weight_initializer(saturation.STANDARD)))(
          jax.random.split(jax.random.key(3), 4))
  x = jax.random.normal(jax.random.key(4), (256, 40))
  y = jax.random.randint(jax.random.key(5), (256,), 0, 10)
  stats = jax.vmap(lambda p: saturation.distribution_statistics(p, x, y, _loss, "tanh"))(params)
  slope = saturation._slope(np.median(np.asarray(stats["h_std"]) ** 2, axis=0))  # pylint: disable=protected-access
  assert -0.56 < slope < -0.47, slope


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_run_rows_summary_and_figure():
  data = {"x_train": np.asarray(jax.random.normal(jax.random.key(6), (200, 12)), np.float32),
          "y_train": np.asarray(jax.random.randint(jax.random.key(7), (200,), 0, 3)),
          "x_test": np.asarray(jax.random.normal(jax.random.key(8), (50, 12)), np.float32),
          "y_test": np.asarray(jax.random.randint(jax.random.key(9), (50,), 0, 3)),
          "output_dim": 3, "task": "classification"}
  config = saturation.SaturationConfig(width=8, depth=3, num_seeds=2, steps=6, stats_every=3,
                                       batch_size=20, stats_batch_size=32)
  result = saturation.run(config, data)
  assert list(result["steps"]) == [0, 3, 6]
  # 2 activations x 2 inits x 2 seeds x 3 steps x (5 scalars x 3 layers + 4 weights
  # + 2 x 7 quantiles x 3 layers)
  assert len(result["rows"]) == 2 * 2 * 2 * 3 * (5 * 3 + 4 + 2 * 7 * 3)
  assert set(result["rows"][0]) == set(saturation.COLUMNS)
  # histograms averaged over seeds: fractions of each (setting, step, layer) sum to 1
  sums = {}
  for r in result["histogram_rows"]:
    key = (r["activation"], r["init"], r["step"], r["layer"])
    sums[key] = sums.get(key, 0.0) + r["fraction"]
  assert len(sums) == 2 * 2 * 3 * 3 and np.allclose(list(sums.values()), 1.0, atol=1e-5)
  summary = saturation.summary(config, result)
  json.dumps(summary)
  assert len(summary["settings"]) == 4
  saturation.plot(result)


def test_config_names_what_is_wrong():
  with pytest.raises(ConfigError, match="unknown value 'relu'; allowed: tanh, softsign, sigmoid"):
    saturation.SaturationConfig(activations=("relu",))
  with pytest.raises(ConfigError, match="depth"):
    saturation.SaturationConfig(depth=1)
  with pytest.raises(ConfigError, match="inits"):
    saturation.SaturationConfig(inits=("he_uniform:gain=x",))


@pytest.mark.slow   # about 40 s: the entry point end to end, and a bad flag
def test_entry_point_writes_its_files_and_refuses_bad_flags(tmp_path_factory, tmp_path):
  env = subprocess_env(tmp_path_factory)
  out = tmp_path / "run"
  proc = subprocess.run([sys.executable, "-m", "experiments.saturation", "--activations=tanh",
                         "--width=16", "--num_seeds=2", "--steps=20", "--stats_every=10",
                         f"--output_dir={out}"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr
  for name in ("results.csv", "histograms.csv", "summary.json", "saturation.png"):
    assert (out / name).stat().st_size > 0
  bad = subprocess.run([sys.executable, "-m", "experiments.saturation", "--activations=relu",
                        f"--output_dir={tmp_path / 'bad'}"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120, check=False)
  one_error_line(bad, "--activations: unknown value 'relu'")
  assert not (tmp_path / "bad").exists()
