"""experiments.zoo and initjax.studies.zoo: the three studies on small settings (their findings'
direction, not the README's numbers), their files, and one-line errors for bad flags."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from initjax.core.errors import ConfigError
from initjax.studies import zoo
from tests.subprocess_env import REPO, subprocess_env


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_transformer_he_doubles_every_projection_and_layernorm_resets():
  config = zoo.ZooConfig(model="transformer", num_seeds=8, layers=1, width=16)
  result = zoo.run(config)
  he, xavier = result["summary"]["he_normal"], result["summary"]["xavier_normal"]
  query = "EncoderBlock_0/MultiHeadDotProductAttention_0/query"
  # gain_forward = fan_in Var[W]: 2 under He, 1 under Xavier for a square projection (the
  # medians of 8 networks x 8 x 16 x 16 outputs: 10%).
  assert he[query]["gain_forward"] == pytest.approx(2.0, rel=0.1)
  assert xavier[query]["gain_forward"] == pytest.approx(1.0, rel=0.1)
  for init in (he, xavier):       # LayerNorm: unit variance, whatever comes in
    assert init["EncoderBlock_0/LayerNorm_0"]["var_out"] == pytest.approx(1.0, rel=0.05)
  assert {r["init"] for r in result["rows"]} == {"he_normal", "xavier_normal", "flax_default"}
  assert "step" in zoo.COLUMNS and zoo.table(config, result).count("\n") > 5


def test_rnn_study_follows_its_theory():
  result = zoo.run(zoo.ZooConfig(model="rnn", num_seeds=8, steps=12, width=32))
  for init, s in result["summary"].items():
    # Vanishing through time for all three, at about the mean-field rate (25% here: 8 networks
    # of 32 units over 12 steps; the README's run has 64 x 64 x 50 and agrees within 6%).
    assert s["decades_per_step_backward"] < 0, init
    assert s["decades_per_step_backward"] == pytest.approx(
        s["theory_decades_per_step_backward"], rel=0.25), init
  assert (result["summary"]["he_normal"]["decades_per_step_backward"]
          > result["summary"]["orthogonal"]["decades_per_step_backward"])


@pytest.mark.slow     # about 13 s, most of it compiling the BatchNorm ResNet
def test_resnet_study_trains_and_moves_its_running_statistics():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((200, 40)).astype(np.float32)
  y = rng.integers(0, 10, 200).astype(np.int32)
  data = {"x_train": x[:150], "y_train": y[:150], "x_test": x[150:], "y_test": y[150:]}
  data = jax.tree.map(jax.numpy.asarray, data)
  result = zoo.resnet(zoo.ZooConfig(model="resnet", num_seeds=2, train_steps=4, width=4), data)
  for init, s in result["summary"].items():
    assert s["diverged"] == 0 and 0 <= s["test_accuracy_mean"] <= 1
    assert s["bn_mean_change"] > 0 and s["bn_var_log10_range"][1] > 0, init


@pytest.mark.parametrize("kw, field", [(dict(model="cnn"), "model"),
                                       (dict(num_seeds=-1), "num_seeds"),
                                       (dict(model="transformer", width=6), "width")])
def test_bad_config_names_the_field(kw, field):
  with pytest.raises(ConfigError) as e:
    zoo.ZooConfig(**kw)
  assert e.value.field == field


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  return subprocess_env(tmp_path_factory)


def _zoo(args, env):
  return subprocess.run([sys.executable, "-m", "experiments.zoo", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_writes_its_files_and_refuses_bad_flags(tmp_path, env):
  out = tmp_path / "zoo"
  proc = _zoo(["--model=rnn", "--num_seeds=2", "--steps=5", "--width=8",
               f"--output_dir={out}"], env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  written = sorted(n for n in os.listdir(out) if not n.startswith("."))
  assert written == sorted(["results.csv", "summary.json", "zoo_rnn.png", "initjax_output.json"])
  assert json.loads((out / "summary.json").read_text())["config"]["steps"] == 5
  bad = _zoo(["--model=cnn", f"--output_dir={tmp_path / 'bad'}"], env)
  assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
      "error: --model: Unknown model 'cnn'")
  assert not (tmp_path / "bad").exists()
  assert _zoo(["--help"], env).returncode == 0
