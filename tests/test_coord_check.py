"""The coordinate check (initjax.studies.coord_check, experiments.coord_check): the tidy rows,
summary and figure; muP's activation updates flat in width and SP's growing, for initjax's MLP
and for a Flax model written as the Flax examples write one; bad input in one line."""
import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from initjax.core.errors import ConfigError
from initjax.studies import coord_check as cc
from tests.flax_models import MLP
from tests.subprocess_env import REPO, one_error_line, subprocess_env


def _data(n=400, d=40):
  rng = np.random.default_rng(0)
  return {"x_train": rng.normal(size=(n, d)).astype(np.float32),
          "y_train": (np.arange(n) % 10).astype(np.int32), "output_dim": 10}


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_rows_summary_and_figure_of_a_tiny_check():
  config = cc.CoordCheckConfig(widths=(8, 16), steps=1, num_seeds=2, depth=2,
                               batch_size=20, stats_batch_size=16)
  result = cc.run(config, _data())
  assert result["layer_kinds"] == {"f_0": "input", "f_1": "hidden", "out": "output"}
  # 2 widths x 2 parametrizations x 3 layers x 3 statistics x 2 seeds x 2 steps
  assert len(result["rows"]) == 2 * 2 * 3 * 3 * 2 * 2
  assert set(result["rows"][0]) == set(cc.COLUMNS)
  summary = json.loads(json.dumps(cc.summary(config, result)))
  assert summary["num_nonfinite"] == 0
  assert summary["parameter_kinds"]["omega_hidden"] == "hidden"
  slope = summary["slopes"]["l1"]["sp"]["output"]["slope"]
  assert len(slope) == 2 and all(np.isfinite(slope))
  # the base width is the narrowest: there muP is SP, to the bit
  for layer in ("f_0", "f_1", "out"):
    np.testing.assert_array_equal(result["records"][(8, "sp")][f"{layer}\tl1"],
                                  result["records"][(8, "mup")][f"{layer}\tl1"])
  cc.plot(result)


def test_bad_settings_are_one_line():
  with pytest.raises(ConfigError, match="widths: needs at least two different widths"):
    cc.CoordCheckConfig(widths=(64, 64))
  with pytest.raises(ConfigError, match="unknown value 'mu'; allowed: sp, ntk, mup"):
    cc.CoordCheckConfig(parametrizations=("mu",))
  with pytest.raises(ConfigError, match="learning_rate"):
    cc.CoordCheckConfig(learning_rate=0.0)


def test_a_factory_whose_layers_do_not_change_with_width_is_refused():
  fixed = cc.flax(lambda width: MLP(16), jnp.zeros((1, 40)))
  config = cc.CoordCheckConfig(widths=(8, 16), steps=1, num_seeds=1)
  with pytest.raises(ValueError, match="the model's layers do not change with width") as e:
    cc.run(config, _data(), factory=fixed)
  assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def checks():
  # Widths 64..512, 4 seeds, Adam at lr 0.03 (at the base width 64), 2 steps, Gaussian inputs.
  config = cc.CoordCheckConfig(widths=(64, 128, 256, 512), steps=2, num_seeds=4, depth=2,
                               learning_rate=3e-2, batch_size=50, stats_batch_size=64)
  data = _data()
  return {"mlp": cc.slopes(cc.run(config, data), "delta_l1"),
          "flax": cc.slopes(cc.run(config, data, factory=cc.flax(MLP, jnp.zeros((1, 40)))),
                            "delta_l1")}


@pytest.mark.slow   # about 70 s on a loaded 2-core CPU: 2 models x 4 widths, one program each
@pytest.mark.parametrize("model", ["mlp", "flax"])
def test_mup_updates_are_flat_in_width_and_sp_updates_grow(checks, model):
  # delta_l1 = mean |x_s - x_0|, each layer's change after s Adam steps; its slope against
  # ln(width), at steps 1 and 2. Theory: muP 0 for every layer kind in the limit; SP 1 for the
  # hidden layers (an O(1) update of each of n inputs' weights) and more for the output (the
  # readout's own update times the grown hidden layer). Measured here: SP hidden 0.87-0.90,
  # output 1.32-1.51; muP within 0.27 of 0 (finite-width terms that shrink with width: Adam's
  # normalization at width 64 and the readout's init term W_out dh ~ m^-1/2); standard errors
  # over the 4 seeds 0.004-0.08. The bounds: muP |slope| < 0.3 + 2 SE, SP > 0.6 - 2 SE, and SP
  # above muP by > 0.8 in the hidden and output layers (> 10 SE).
  s = checks[model]
  for step in (1, 2):
    for kind in ("input", "hidden", "output"):
      mup, se = s["mup"][kind]["slope"][step], s["mup"][kind]["slope_se"][step]
      assert abs(mup) < 0.3 + 2 * se, (kind, step, mup)
    assert abs(s["sp"]["input"]["slope"][step]) < 0.1   # the input layer's fan-in is fixed
    for kind in ("hidden", "output"):
      sp, se = s["sp"][kind]["slope"][step], s["sp"][kind]["slope_se"][step]
      assert sp > 0.6 - 2 * se, (kind, step, sp)
      assert sp - s["mup"][kind]["slope"][step] > 0.8, (kind, step)


def _run(args, env):
  return subprocess.run([sys.executable, "-m", "experiments.coord_check", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300, check=False)


def test_flag_errors_exit_2_and_write_nothing(tmp_path_factory, tmp_path):
  env = subprocess_env(tmp_path_factory)
  for args, needle in ((["--widths=64"], "--widths: needs at least two different widths"),
                       (["--parametrizations=sp,mu"], "--parametrizations: unknown value 'mu'")):
    proc = _run([*args, f"--output_dir={tmp_path / 'bad'}"], env)
    one_error_line(proc, needle)
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow   # about 40 s: the entry point end to end
def test_entry_point_writes_its_files(tmp_path_factory, tmp_path):
  env = subprocess_env(tmp_path_factory)
  out = tmp_path / "run"
  proc = _run(["--widths=16,32", "--steps=1", "--num_seeds=2", "--depth=2",
               f"--output_dir={out}"], env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ("results.csv", "summary.json", "coord_check.png"):
    assert (out / name).stat().st_size > 0
  assert "mup" in proc.stdout and "hidden" in proc.stdout
  bad = _run(["--optimizer=adafactor", f"--output_dir={tmp_path / 'bad'}"], env)
  one_error_line(bad, "--optimizer: unknown value 'adafactor'")
