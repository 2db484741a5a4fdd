"""The trainability phase diagram: its config, its reading of the accuracy grid, and the real
entry point end to end (a tiny grid) with its bad inputs."""
import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from initjax.core.errors import ConfigError
from initjax.studies import phase_diagram
from initjax.studies.sweep.config import fan_in_variance
from initjax.theory import phases

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, timeout=300):
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return subprocess.run([sys.executable, "-m", "experiments.phase_diagram", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("kwargs, field", [
    ({"sigma2_w": (1.0, 0.0)}, "sigma2_w"),
    ({"sigma2_w": (-1.0,)}, "sigma2_w"),
    ({"sigma2_w": (math.inf,)}, "sigma2_w"),
    ({"sigma2_w": ()}, "sigma2_w"),
    ({"sigma2_b": -0.1}, "sigma2_b"),
    ({"sigma2_b": math.nan}, "sigma2_b"),
    ({"activation": "nope"}, "activation"),
    ({"depths": ()}, "depths"),
])
def test_config_refuses_bad_values(kwargs, field):
  with pytest.raises(ConfigError) as info:
    phase_diagram.PhaseConfig(**kwargs)
  assert field in info.value.field


def test_sweep_config_trains_each_sigma2_w_as_a_plain_normal():
  config = phase_diagram.PhaseConfig(sigma2_w=(0.5, 1.75), depths=(3,), sigma2_b=0.05)
  sweep = config.sweep_config()
  assert [fan_in_variance(i) for i in sweep.inits] == [0.5, 1.75]
  assert sweep.bias_variance == 0.05 and sweep.activations == ("tanh",)
  assert sweep.depths == (3,)


def test_trainable_depth_is_the_last_depth_of_an_unbroken_run():
  config = phase_diagram.PhaseConfig(sigma2_w=(1.0, 2.0, 3.0), depths=(2, 4, 8))
  mean = np.array([[0.9, 0.9, 0.05],     # depth 2
                   [0.9, 0.2, np.nan],   # depth 4
                   [0.9, 0.9, 0.9]])     # depth 8
  got = phase_diagram.trainable_depths(config, mean, threshold=0.5)
  # sigma2_w = 2 trains at 2, fails at 4: its edge is 2 even though 8 trains again.
  np.testing.assert_array_equal(got, [8, 2, 0])


def test_theory_columns_follow_depth_scales():
  th = phase_diagram.theory("tanh", 0.05, [1.0, 3.0])
  for j, s2 in enumerate([1.0, 3.0]):
    ds = phases.depth_scales("tanh", s2, 0.05)
    assert th["xi_c"][j] == ds.xi_c and th["phase"][j] == ds.phase
  assert list(th["phase"]) == ["ordered", "chaotic"]


@pytest.mark.slow  # about 35 s: two CLI runs
def test_tiny_phase_diagram_end_to_end(tmp_path):
  data_dir, out = tmp_path / "data", tmp_path / "pd"
  args = ["--sigma2_w=0.5,1.76,4", "--depths=2,6", "--width=8", "--num_seeds=2", "--steps=20",
          f"--data_dir={data_dir}", f"--output_dir={out}"]
  proc = _run(args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ("results.csv", "summary.json", "phase_diagram.png"):
    assert (out / name).stat().st_size > 0, name
  with open(out / "results.csv", newline="") as fh:
    rows = list(csv.DictReader(fh))
  assert tuple(rows[0]) == phase_diagram.RESULT_COLUMNS
  cells = {(float(r["sigma2_w"]), int(r["depth"]), int(r["seed"])) for r in rows}
  assert cells == {(s, d, k) for s in (0.5, 1.76, 4.0) for d in (2, 6) for k in (0, 1)}
  accuracies = [float(r["value"]) for r in rows if r["metric"] == "final_test_accuracy"]
  assert len(accuracies) == 12 and all(0.0 <= a <= 1.0 for a in accuracies)
  summary = json.loads((out / "summary.json").read_text())
  assert summary["config"]["sigma2_b"] == 0.05 and summary["depths"] == [2, 6]
  assert np.asarray(summary["mean_test_accuracy"], dtype=float).shape == (2, 3)
  # The table's cells are the means of the CSV's per-seed accuracies.
  cell = [float(r["value"]) for r in rows if r["metric"] == "final_test_accuracy"
          and float(r["sigma2_w"]) == 4.0 and r["depth"] == "6"]
  assert summary["mean_test_accuracy"][1][2] == pytest.approx(np.mean(cell), abs=1e-6)
  # xi_c from the theory, nearly critical at 1.76 (critical sigma_w^2 = 1.76095).
  assert summary["critical_sigma2_w"] == pytest.approx(1.76095, abs=1e-4)
  assert summary["xi_c"][1] > 10 * max(summary["xi_c"][0], summary["xi_c"][2])
  assert "mean test accuracy" in proc.stdout
  # A rerun resumes: every point is finished, nothing is trained again.
  again = _run(args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "skipping 6 finished" in again.stderr + again.stdout


@pytest.mark.parametrize("flag, needle", [
    ("--sigma2_w=1,0", "--sigma2_w"),
    ("--sigma2_w=-2", "--sigma2_w"),
    ("--sigma2_w=", "--sigma2_w"),
    ("--sigma2_b=-0.1", "--sigma2_b"),
    ("--sigma2_b=nan", "--sigma2_b"),
    ("--depths=0", "--depths"),
    ("--activation=nope", "--activation"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, flag, needle):
  out = tmp_path / "pd"
  proc = _run([flag, f"--data_dir={tmp_path / 'data'}", f"--output_dir={out}"], timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and needle in errors[0], proc.stderr
  assert "Traceback" not in proc.stderr
  assert not out.exists()


def test_help_exits_zero():
  proc = _run(["--help"], timeout=120)
  assert proc.returncode == 0 and "sigma2_w" in proc.stdout + proc.stderr
