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
from initjax.studies.sweep.config import SweepConfig, fan_in_variance
from initjax.studies.sweep.grid import GridPoint, expand_grid
from initjax.studies.sweep.group import PointResult
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
    ({"learning_rates": (0.01, 0.01)}, "learning_rates"),
    ({"learning_rates": (0.0,)}, "learning_rates"),
    ({"tune_depth": 4}, "tune_depth"),
    ({"tune_depth": -1, "learning_rates": (0.01,)}, "tune_depth"),
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


def test_a_pinned_learning_rate_replaces_the_grid_rates_of_its_init_only():
  sweep = SweepConfig(inits=("sigma2_w=1", "sigma2_w=4", "he_normal"), depths=(2,),
                      optimizers=("momentum",), learning_rates=(("momentum", (0.01, 0.1)),),
                      init_learning_rates=(("sigma2_w=1", "momentum", 0.003),
                                           ("sigma2_w=4", "momentum", 0.1)))
  got = sorted((p.init, p.learning_rate) for p in expand_grid(sweep))
  assert got == [("he_normal", 0.01), ("he_normal", 0.1), ("sigma2_w=1", 0.003),
                 ("sigma2_w=4", 0.1)]
  # Kept in sweep_config.json: a resumed run rebuilds the same grid.
  again = SweepConfig.from_dict(json.loads(json.dumps(sweep.to_dict())))
  assert again == sweep and expand_grid(again) == expand_grid(sweep)
  for pins, needle in [((("xavier_normal", "momentum", 0.1),), "not in --inits"),
                       ((("he_normal", "adam", 0.1),), "not in --optimizers"),
                       ((("he_normal", "momentum", 0.1), ("he_normal", "momentum", 0.2)),
                        "listed twice"),
                       ((("he_normal", "momentum", -1.0),), "learning rates")]:
    with pytest.raises(ConfigError, match=needle):
      SweepConfig(inits=("he_normal",), optimizers=("momentum",), init_learning_rates=pins)


def _point(config, sigma2_w, depth, lr, losses, accuracies=None, diverged=()):
  """A finished grid point as the store returns it, from per-seed final losses/accuracies."""
  point = GridPoint(phase_diagram.init_of(sigma2_w), depth, config.width, config.activation,
                    config.optimizer, lr)
  rows = []
  for seed, loss in enumerate(losses):
    rows.append({"seed": seed, "step": None, "metric": "final_train_loss", "value": loss})
    rows.append({"seed": seed, "step": None, "metric": "diverged_step",
                 "value": 7 if seed in diverged else -1})
  acc = np.full((len(losses), 2), 0.5) if accuracies is None else np.asarray(accuracies)
  return point.point_id, PointResult(point, {"test_accuracy": acc}, None, None, rows, {})


def test_the_search_picks_the_lowest_mean_loss_and_never_a_rate_that_diverged():
  config = phase_diagram.PhaseConfig(sigma2_w=(1.0, 4.0, 2.0), depths=(4, 8), num_seeds=2,
                                     learning_rates=(0.1, 0.01, 0.001), tune_depth=8)
  assert config.tuning_config().depths == (8,) and config.search_depth == 8
  tuning = dict([
      _point(config, 1.0, 8, 0.1, [0.2, 0.4]), _point(config, 1.0, 8, 0.01, [0.3, 0.2]),
      _point(config, 1.0, 8, 0.001, [1.0, 1.0]),
      # 4.0: the lowest loss belongs to a rate at which one seed diverged: not chosen.
      _point(config, 4.0, 8, 0.1, [0.01, 0.01], diverged=(1,)),
      _point(config, 4.0, 8, 0.01, [0.9, 0.7]), _point(config, 4.0, 8, 0.001, [0.5, 0.6]),
      # 2.0: a tie goes to the smaller rate.
      _point(config, 2.0, 8, 0.1, [0.5, 0.5]), _point(config, 2.0, 8, 0.01, [0.5, 0.5]),
      _point(config, 2.0, 8, 0.001, [0.9, 0.9])])
  chosen = phase_diagram.choose_learning_rates(config, tuning)
  assert chosen == {1.0: 0.01, 4.0: 0.001, 2.0: 0.01}
  sweep = config.sweep_config(chosen)
  assert sorted((fan_in_variance(p.init), p.depth, p.learning_rate) for p in expand_grid(sweep)) \
      == sorted((s, d, chosen[s]) for s in (1.0, 4.0, 2.0) for d in (4, 8))
  del tuning[next(iter(tuning))]
  with pytest.raises(ConfigError, match="not complete"):
    phase_diagram.choose_learning_rates(config, tuning)


def test_the_summary_reads_the_fitting_depth_from_the_training_loss():
  config = phase_diagram.PhaseConfig(sigma2_w=(1.0, 4.0), depths=(2, 4, 8), num_seeds=2)
  lr = config.learning_rate
  results = dict([
      _point(config, 1.0, 2, lr, [0.01, 0.03]), _point(config, 1.0, 4, lr, [0.2, 0.4]),
      _point(config, 1.0, 8, lr, [2.3, 2.3]),
      _point(config, 4.0, 2, lr, [0.1, 0.1]), _point(config, 4.0, 4, lr, [0.1, 9.0],
                                                     diverged=(1,)),
      _point(config, 4.0, 8, lr, [0.1, 0.1])])
  summary = phase_diagram.summary(config, results)
  # Threshold: the best median (0.02) plus half the way up to ln 10.
  assert summary["train_loss_threshold"] == pytest.approx(0.02 + 0.5 * (math.log(10) - 0.02))
  # 1.0 fits at 2 and 4, not at 8; 4.0's depth 4 has a diverged median network (inf).
  assert summary["fitting_depth"] == [4.0, 2.0]
  assert summary["first_unfitted_depth"] == [8, 4]
  assert summary["median_final_train_loss"][1] == [pytest.approx(0.3), "diverged"]
  assert summary["learning_rate"] == [lr, lr] and "tuning" not in summary


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


@pytest.mark.slow  # about 40 s: two CLI runs
def test_tiny_tuned_phase_diagram_end_to_end(tmp_path):
  data_dir, out = tmp_path / "data", tmp_path / "pd"
  args = ["--sigma2_w=0.5,4", "--depths=2,4", "--width=8", "--num_seeds=2", "--steps=30",
          "--learning_rates=0.001,0.1", "--tune_depth=4", f"--data_dir={data_dir}",
          f"--output_dir={out}"]
  proc = _run(args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  # The choice, recomputed from tuning.csv: per sigma2_w the rate of the lowest mean final
  # training loss at depth 4.
  with open(out / "tuning.csv", newline="") as fh:
    tuning = [r for r in csv.DictReader(fh) if r["metric"] == "final_train_loss"]
  assert {r["depth"] for r in tuning} == {"4"} and len(tuning) == 2 * 2 * 2
  expected = []
  for s2 in (0.5, 4.0):
    mean = {lr: np.mean([float(r["value"]) for r in tuning if float(r["sigma2_w"]) == s2
                         and float(r["learning_rate"]) == lr]) for lr in (0.001, 0.1)}
    expected.append(min(mean, key=mean.get))
  assert summary["learning_rate"] == expected
  assert summary["tuning"]["depth"] == 4 and summary["tuning"]["learning_rates"] == [0.001, 0.1]
  with open(out / "results.csv", newline="") as fh:
    rows = list(csv.DictReader(fh))
  for s2, lr in zip((0.5, 4.0), expected):
    assert {float(r["learning_rate"]) for r in rows if float(r["sigma2_w"]) == s2} == {lr}
  assert "learning rate per sigma_w^2" in proc.stdout and "lr" in proc.stdout
  again = _run(args)
  assert again.returncode == 0, again.stderr[-3000:]
  # Both resumed: the search (2 sigma2_w x 2 rates) and the grid (2 sigma2_w x 2 depths).
  assert (again.stderr + again.stdout).count("skipping 4 finished") == 2


@pytest.mark.parametrize("flag, needle", [
    ("--sigma2_w=1,0", "--sigma2_w"),
    ("--sigma2_w=-2", "--sigma2_w"),
    pytest.param("--sigma2_w=", "--sigma2_w", marks=pytest.mark.slow),
    pytest.param("--sigma2_b=-0.1", "--sigma2_b", marks=pytest.mark.slow),
    pytest.param("--sigma2_b=nan", "--sigma2_b", marks=pytest.mark.slow),
    pytest.param("--depths=0", "--depths", marks=pytest.mark.slow),
    pytest.param("--activation=nope", "--activation", marks=pytest.mark.slow),
    pytest.param("--learning_rates=0.01,x", "--learning_rates", marks=pytest.mark.slow),
    pytest.param("--tune_depth=4", "--tune_depth", marks=pytest.mark.slow),
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
