"""Learning-rate transfer on the sweep (initjax.studies.lr_transfer, experiments.lr_transfer):
parametrizations as a sweep axis that leaves the standard points' names and fingerprints as
they were, the per-leaf learning rates of `TrainSpec.update_scales`, and the summary."""
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from initjax.core.errors import ConfigError
from initjax.studies import coord_check as cc
from initjax.studies import lr_transfer
from initjax.studies.sweep import SweepConfig, expand_grid, store
from initjax.studies.sweep.group import PointResult
from initjax.training import loop
from tests.flax_models import MLP
from tests.subprocess_env import REPO, one_error_line, subprocess_env


def test_sp_points_keep_their_names_and_fingerprints():
  # The fingerprints of the default sweep's first points, computed by the code before
  # parametrizations existed (main at 3a110fa): finished sweeps resume without recomputing.
  config = SweepConfig()
  points = expand_grid(config)
  assert len(points) == 8
  got = [(p.point_id, store.fingerprint(store.point_config(config, p))) for p in points[:3]]
  assert got == [("he_normal-d10-w100-relu-momentum-lr0.01", "0d3eec9981487217"),
                 ("xavier_normal-d10-w100-relu-momentum-lr0.01", "6eb338ed85f4c98d"),
                 ("he_normal-d10-w100-relu-adam-lr0.001", "0d53859ec3c99b5f")]


def test_parametrizations_are_a_grid_axis():
  config = SweepConfig(inits=("he_normal",), depths=(3,), widths=(64, 256), optimizers=("adam",),
                       parametrizations=("sp", "mup"))
  points = expand_grid(config)
  assert [p.point_id for p in points if p.width == 64] == [
      "he_normal-d3-w64-relu-adam-lr0.001", "he_normal-d3-w64-relu-adam-lr0.001-mup"]
  sp, mup = points[:2]
  assert sp.group_key != mup.group_key
  assert "parametrization" not in store.point_config(config, sp)
  assert store.point_config(config, mup)["base_width"] == 64
  assert config.base() == 64 and SweepConfig(widths=(64, 256), base_width=32).base() == 32


def test_bad_parametrizations_are_config_errors():
  with pytest.raises(ConfigError, match="parametrizations: unknown value 'mu'"):
    SweepConfig(parametrizations=("mu",))
  with pytest.raises(ConfigError, match="needs --archs=mlp"):
    SweepConfig(parametrizations=("mup",), archs=("cnn",))
  with pytest.raises(ConfigError, match="base_width"):
    SweepConfig(base_width=-1)


def test_update_scales_are_per_leaf_learning_rates():
  params = {"a": jnp.ones(2), "b": {"c": jnp.ones(3)}}
  grads = {"a": jnp.ones(2), "b": {"c": jnp.full(3, 2.0)}}
  assert loop.TrainSpec().update_scales is None
  spec = loop.TrainSpec(optimizer="sgd", update_scales=(("a", 0.5), ("b/c", 3.0)))
  hash(spec)   # a static argument of the compiled programs
  opt = loop.spec_optimizer(spec, 0.1, params)
  updates, _ = opt.update(grads, opt.init(params), params)
  np.testing.assert_allclose(updates["a"], [-0.05, -0.05])
  np.testing.assert_allclose(updates["b"]["c"], [-0.6] * 3)
  plain = loop.spec_optimizer(loop.TrainSpec(optimizer="sgd"), 0.1, params)
  assert isinstance(plain.init(params), type(optax.sgd(0.1).init(params)))


def _result(point, loss):
  diverged = not np.isfinite(loss)
  return PointResult(point=point, records={}, eval_steps=np.array([0]),
                     stats_steps=np.array([0]), rows=[],
                     summary={"median_final_train_loss": float("nan") if diverged else loss,
                              "num_diverged": 2 if diverged else 0, "num_seeds": 2})


def test_summary_finds_the_best_learning_rate_per_width_and_its_spread():
  config = lr_transfer.config((64, 256), (1e-3, 1e-2, 1e-1), steps=20)
  # sp: best at 1e-2 on width 64 and 1e-3 on 256 (1 decade); mup: 1e-2 on both; lr 1e-1 at
  # width 256 under sp diverged (NaN): it counts as +inf, never as the best.
  loss = {("sp", 64): [2, 1, 3], ("sp", 256): [1, 2, np.nan], ("mup", 64): [2, 1, 3],
          ("mup", 256): [2, 0.5, 3]}
  results = {}
  for p in expand_grid(config):
    value = loss[(p.parametrization, p.width)][[1e-3, 1e-2, 1e-1].index(p.learning_rate)]
    results[p.point_id] = _result(p, value)
  s = lr_transfer.summary(config, results)["parametrizations"]
  assert s["sp"]["best_learning_rates"] == [1e-2, 1e-3]
  assert s["sp"]["best_lr_spread_decades"] == pytest.approx(1.0)
  assert s["sp"]["widths"][256]["final_train_loss"][2] is None
  assert s["sp"]["widths"][256]["best_at_grid_edge"]
  assert s["mup"]["best_lr_spread_decades"] == 0.0
  lr_transfer.plot(lr_transfer.summary(config, results))


def test_flag_errors_exit_2(tmp_path_factory, tmp_path):
  env = subprocess_env(tmp_path_factory)
  proc = subprocess.run([sys.executable, "-m", "experiments.lr_transfer", "--widths=64",
                         f"--output_dir={tmp_path / 'bad'}"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300, check=False)
  one_error_line(proc, "--widths: needs at least two different widths")
  assert not (tmp_path / "bad").exists()


@pytest.mark.slow   # about 5 min on a loaded 2-core CPU: 8 points trained, then merged
def test_entry_point_trains_merges_and_mup_is_sp_at_the_base_width(tmp_path_factory, tmp_path):
  import json  # pylint: disable=import-outside-toplevel
  env = subprocess_env(tmp_path_factory)
  out = tmp_path / "run"
  proc = subprocess.run([sys.executable, "-m", "experiments.lr_transfer", "--widths=16,32",
                         "--learning_rates=1e-3,1e-2", "--steps=20", "--depth=2",
                         f"--output_dir={out}"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  s = json.loads((out / "lr_transfer.json").read_text())["parametrizations"]
  # at the base width (16) muP is SP: the same network, the same losses, to the bit
  assert s["sp"]["widths"]["16"]["final_train_loss"] == s["mup"]["widths"]["16"][
      "final_train_loss"]
  assert s["sp"]["widths"]["32"]["final_train_loss"] != s["mup"]["widths"]["32"][
      "final_train_loss"]
  assert (out / "lr_transfer.png").stat().st_size > 0
  assert (out / "points" / "he_normal-d2-w32-relu-adam-lr0.01-mup.json").exists()


def _flax_data(n=200, d=12):
  rng = np.random.default_rng(0)
  return {"x_train": rng.normal(size=(n, d)).astype(np.float32),
          "y_train": (np.arange(n) % 10).astype(np.int32), "output_dim": 10}


@pytest.mark.slow   # about 30 s: six compiled programs
def test_a_flax_models_transfer_trains_as_the_coordinate_check_does():
  """run_model vmaps the learning rates of a width into one program; each rate's losses must
  equal those of the coordinate check trained at that rate alone (a separate program), and at
  the base width muP is SP."""
  data = _flax_data()
  factory = cc.flax(MLP, data["x_train"][:2])
  kw = dict(parametrizations=("sp", "mup"), optimizer="adam", steps=3, num_seeds=2,
            batch_size=20)
  out = lr_transfer.run_model(factory, data, widths=(8, 32), learning_rates=(0.01, 0.001), **kw)
  for j, lr in enumerate((0.01, 0.001)):
    alone = cc.run(cc.CoordCheckConfig(widths=(8, 32), learning_rate=lr, stats_batch_size=8,
                                       **kw), data, factory=factory)
    for key, losses in alone["losses"].items():
      # float32, the same operations in another program: equal to rounding
      np.testing.assert_allclose(out["losses"][key][j], losses, rtol=1e-5)
  np.testing.assert_allclose(out["losses"][(8, "sp")], out["losses"][(8, "mup")], rtol=1e-6)
  for name in ("sp", "mup"):
    s = out["parametrizations"][name]
    for width, curve in s["widths"].items():
      finals = {lr: lr_transfer.final_loss(out["losses"][(width, name)][j])
                for j, lr in enumerate((0.01, 0.001))}
      assert curve["learning_rates"] == [0.001, 0.01]
      assert curve["final_train_loss"] == [finals[0.001], finals[0.01]]
      assert curve["best_learning_rate"] == min(finals, key=finals.get)
    assert s["best_lr_spread_decades"] in (0.0, 1.0)


def test_final_loss_is_the_tail_mean_median_and_inf_when_half_diverge():
  losses = np.array([[3.0] * 19 + [1.0], [3.0] * 19 + [2.0], [3.0] * 19 + [np.nan]])
  assert lr_transfer.final_loss(losses) == 1.5         # last 5% of 20 steps = 1; seed 3 out
  assert lr_transfer.final_loss(losses[1:]) == float("inf")   # 1 of 2 diverged
  with pytest.raises(ValueError, match="learning_rates"):
    lr_transfer.run_model(lambda w: None, _flax_data(), widths=(8, 16), learning_rates=())
