"""The sweep: grid, keys, learning-rate parsing, and the real entry point end to end."""
import csv
import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import cli
from initjax.core.errors import ConfigError
from initjax.studies.sweep import grid, group, store, summary
from initjax.studies.sweep.config import SweepConfig
from initjax.training.optimizers import optimizer_names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, env_extra=None, timeout=240):
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env.update(env_extra or {})
  return subprocess.run([sys.executable, "-m", "experiments.sweep", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("data"))


@pytest.mark.slow  # about 18 s: the sweep CLI end to end
def test_tiny_sweep_end_to_end(tmp_path, data_dir):
  out = tmp_path / "sweep"
  proc = _run(["--depths=2", "--widths=8", "--steps=20", "--num_seeds=2", "--optimizers=momentum",
               "--learning_rates=momentum:0.01,momentum:0.1", "--eval_every=10",
               "--stats_every=10", "--log_every=5", "--stats_batch_size=32",
               f"--data_dir={data_dir}", f"--output_dir={out}"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ("results.csv", "summary.json", "loss_curves.png", "gradient_variance.png"):
    assert (out / name).stat().st_size > 0, name
  with open(out / "results.csv", newline="") as fh:
    rows = list(csv.DictReader(fh))
  for column in ("init", "depth", "width", "activation", "optimizer", "learning_rate", "seed",
                 "step", "metric", "layer", "value"):
    assert column in rows[0]
  metrics = {r["metric"] for r in rows}
  assert {"train_loss", "test_loss", "test_accuracy", "var_h", "var_dl_dh", "var_dl_df",
          "diverged_step", "final_train_loss", "stalled"} <= metrics
  assert {r["init"] for r in rows} == {"he_normal", "xavier_normal"}
  assert {float(r["learning_rate"]) for r in rows} == {0.01, 0.1}
  train_steps = sorted({int(r["step"]) for r in rows if r["metric"] == "train_loss"})
  assert train_steps == [0, 5, 10, 15, 20]
  layers = {r["layer"] for r in rows if r["metric"] == "var_dl_dh"}
  assert layers == {"1", "2"}
  summary = json.loads((out / "summary.json").read_text())
  assert summary["config"]["steps"] == 20 and summary["config"]["num_seeds"] == 2
  assert summary["config"]["learning_rates"] == {"momentum": [0.01, 0.1]}
  assert summary["config"]["output_dir"] == str(out)
  assert len(summary["summary"]) == 4
  assert "final loss" in proc.stdout and "group 1 of 1" in proc.stderr  # results; progress log


@pytest.mark.parametrize("flag,value", [
    ("optimizers", "nope"),
    ("learning_rates", "-1"),
    pytest.param("num_seeds", "0", marks=pytest.mark.slow),
    pytest.param("output_dir", "/proc/x", marks=pytest.mark.slow),
    pytest.param("dataset", "cifar", marks=pytest.mark.slow),
])
def test_bad_flags_fail_with_one_line(tmp_path, flag, value):
  out = tmp_path / "never"
  args = ["--optimizers=momentum", f"--output_dir={out}"]
  args = [a for a in args if not a.startswith(f"--{flag}=")] + [f"--{flag}={value}"]
  proc = _run(args, env_extra={"JAX_PLATFORMS": "cpu"}, timeout=60)
  assert proc.returncode != 0
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert f"--{flag}" in lines[0]
  assert "Traceback" not in proc.stderr
  assert not (out / "results.csv").exists()
  if flag != "output_dir":
    assert not out.exists()


def test_grid_and_groups():
  config = SweepConfig(inits=("he_normal", "xavier_normal"), depths=(2, 3),
                       optimizers=("momentum", "adam"),
                       learning_rates=(("momentum", (0.01, 0.1)),))
  points = grid.expand_grid(config)
  assert len(points) == 2 * 2 * (2 + 1)
  ids = [p.point_id for p in points]
  assert len(set(ids)) == len(ids)
  assert "he_normal-d2-w100-relu-momentum-lr0.01" in ids
  assert "xavier_normal-d3-w100-relu-adam-lr0.001" in ids  # adam's default learning rate
  groups = grid.group_points(points)
  assert len(groups) == 4
  for g in groups:
    assert len({p.group_key for p in g}) == 1
  assert [len(g) for g in groups] == [4, 2, 4, 2]


def test_keys_are_paired_and_stable():
  key = jax.random.PRNGKey(0)
  he = grid.GridPoint("he_normal", 30, 100, "relu", "momentum", 0.01)
  xavier = grid.GridPoint("xavier_normal", 30, 100, "relu", "adam", 0.001)
  other_depth = grid.GridPoint("he_normal", 10, 100, "relu", "momentum", 0.01)
  init_he, data_he = grid.point_keys(key, he, 3)
  init_xa, data_xa = grid.point_keys(key, xavier, 3)
  init_d10, data_d10 = grid.point_keys(key, other_depth, 3)
  np.testing.assert_array_equal(data_he, data_xa)  # same minibatch order for every point
  np.testing.assert_array_equal(data_he, data_d10)
  np.testing.assert_array_equal(init_he, init_xa)  # same draws across inits/optimizers
  assert not np.array_equal(init_he, init_d10)
  assert len({tuple(np.asarray(k).tolist()) for k in init_he}) == 3  # seeds differ
  assert len({tuple(np.asarray(k).tolist()) for k in data_he}) == 3


def test_parse_learning_rates():
  opts = ("momentum", "adam")
  parse = lambda entries: cli.parse_learning_rates(entries, opts, optimizer_names())
  assert parse([]) == ()
  assert parse(["momentum:0.01", "adam:1e-3"]) == (("momentum", (0.01,)), ("adam", (0.001,)))
  assert parse(["0.1", "adam:0.5"]) == (("momentum", (0.1,)), ("adam", (0.1, 0.5)))
  for bad in (["-1"], ["momentum:0"], ["nope:0.1"], ["sgd:0.1"], ["momentum:x"]):
    with pytest.raises(cli.UsageError) as e:
      parse(bad)
    assert e.value.flag == "learning_rates"
  config = SweepConfig()
  assert config.learning_rates_for("momentum") == (0.01,)
  assert config.learning_rates_for("adam") == (0.001,)


def test_config_checks_itself_and_names_the_field():
  # The entry point turns ConfigError(field) into a one-line "--field: ..." error.
  for field, value in (("inits", ("nope",)), ("activations", ("swish9",)), ("num_seeds", 0),
                       ("loss_threshold", -1.0), ("batch_size", 5000), ("steps", 0),
                       ("depths", (0,)), ("optimizers", ()), ("dataset", "x")):
    with pytest.raises(ConfigError) as e:
      SweepConfig(**{field: value})
    assert e.value.field == field
  default = SweepConfig()
  assert SweepConfig.from_dict(default.to_dict()).to_dict() == default.to_dict()


@pytest.mark.parametrize("num_tasks", [1, 2, 3, 4, 9])
def test_task_points_partition_the_grid(num_tasks):
  config = SweepConfig(depths=(2, 10, 30), optimizers=("momentum", "adam"),
                       learning_rates=(("momentum", (0.01, 0.1)),))
  points = grid.expand_grid(config)
  shares = [grid.task_points(config, t, num_tasks) for t in range(num_tasks)]
  ids = [p.point_id for share in shares for group in share for p in group]
  assert sorted(ids) == sorted(p.point_id for p in points)        # every point exactly once
  assert shares == [grid.task_points(config, t, num_tasks) for t in range(num_tasks)]
  for share in shares:
    assert all(len({p.group_key for p in g}) == 1 for g in share)  # one compile per group
    assert len({g[0].group_key for g in share}) == len(share)
  if num_tasks <= len(points):
    assert all(shares)                                           # nobody idles
  if num_tasks == 1:
    assert shares[0] == grid.group_points(points)


def test_few_groups_are_cut_many_are_kept_whole():
  config = SweepConfig(depths=(10, 30))  # 4 groups of 2 points; depth 30 costs ~9x more
  units = grid.work_units(config, 4)
  assert [(u[0].depth, len(u)) for u in units] == [(10, 2), (10, 2), (30, 1), (30, 1), (30, 1),
                                                   (30, 1)]
  assert all(len(u) == 2 for u in grid.work_units(config, 1))


def _fake_result(config, point, rng):
  spec = group.train_spec(config, point.optimizer, "classification")
  eval_at, stats_at = group.training.eval_steps(spec), group.training.stats_steps(spec)
  n, t, k = config.num_seeds, len(stats_at), point.depth
  records = {"train_loss": rng.uniform(1, 3, (n, config.steps + 1)).astype(np.float32),
             "test_loss": rng.uniform(1, 3, (n, len(eval_at))).astype(np.float32),
             "test_accuracy": rng.uniform(0, 1, (n, len(eval_at))).astype(np.float32),
             "stats_loss": rng.uniform(1, 3, (n, t)).astype(np.float32),
             "var_h": rng.uniform(0, 1, (n, t, k)).astype(np.float32),
             "var_dl_dh": rng.uniform(0, 1, (n, t, k)).astype(np.float32),
             "var_dl_df": rng.uniform(0, 1, (n, t, k)).astype(np.float32),
             "diverged_step": np.array([-1] * (n - 1) + [7], np.int32)}
  records["train_loss"][-1, 7:] = np.nan
  per_seed = summary.seed_summaries(records, config.loss_threshold, "classification", 10)
  return group.PointResult(point, records, eval_at, stats_at,
                           group.point_rows(point, records, per_seed, eval_at, stats_at, config),
                           summary.point_summary(point, per_seed))


def test_point_files_round_trip_and_changed_settings(tmp_path):
  config = SweepConfig(depths=(3,), widths=(8,), num_seeds=3, steps=20, eval_every=10,
                       stats_every=10, log_every=5)
  point = grid.expand_grid(config)[0]
  result = _fake_result(config, point, np.random.default_rng(0))
  out = str(tmp_path)
  assert store.point_state(out, config, point) == ("missing", {})
  store.write_point(out, config, result)
  assert store.point_state(out, config, point) == ("done", {})
  loaded = store.load_point(out, config, point)
  same = lambda a, b: a == b and type(a) is type(b) or (a != a and b != b)  # NaN != NaN
  assert len(loaded.rows) == len(result.rows)
  assert all(r.keys() == s.keys() and all(same(r[k], s[k]) for k in r)
             for r, s in zip(loaded.rows, result.rows))
  assert json.dumps(loaded.summary) == json.dumps(result.summary)
  log_at = sorted(set(range(0, config.steps + 1, config.log_every)))
  np.testing.assert_array_equal(loaded.records["train_loss"][:, log_at],
                                result.records["train_loss"][:, log_at])
  for name in ("test_loss", "test_accuracy", "var_h", "var_dl_dh", "var_dl_df", "diverged_step"):
    np.testing.assert_array_equal(loaded.records[name], result.records[name])
  changed = dataclasses.replace(config, steps=30, num_seeds=4)
  state, diff = store.point_state(out, changed, point)
  assert state == "differs" and diff == {"num_seeds": (3, 4), "steps": (20, 30)}
  assert store.point_state(out, dataclasses.replace(config, depths=(3, 5)), point)[0] == "done"
  os.unlink(store.point_paths(out, point.point_id)[0])    # a JSON without its CSV: not done
  assert store.point_state(out, config, point) == ("missing", {})


def test_summary_helpers():
  loss = np.array([2.3] * 20 + [1.0] * 21)
  assert summary.steps_to_threshold(loss, 1.5, window=1) == 20
  assert summary.steps_to_threshold(loss, 1.5, window=10) == 26  # trailing mean crosses later
  assert summary.steps_to_threshold(loss, 0.5) is None
  assert summary.final_train_loss(loss) == pytest.approx(1.0)
  ref = summary.stall_reference("classification", 10, initial_loss=3.0)
  assert ref == pytest.approx(np.log(10))
  assert summary.is_stalled(2.30, ref, diverged=False)
  assert not summary.is_stalled(2.0, ref, diverged=False)
  assert not summary.is_stalled(np.nan, ref, diverged=True)
  assert summary.stall_reference("regression", None, initial_loss=3.0) == 3.0


def test_inits_take_registry_keyword_arguments():
  # NAME:KEY=VALUE is get_initializer(NAME, KEY=VALUE): the critical orthogonal init of tanh.
  from initjax.nn import initializers  # pylint: disable=import-outside-toplevel
  config = SweepConfig(inits=("orthogonal:gain=1.09", "delta_orthogonal:gain=2:column_axis=-2",
                              "sigma2_w=1.2"))
  assert group.registered_init(config.inits[0]) == ("orthogonal", {"gain": 1.09}, 1.0)
  assert group.registered_init(config.inits[1]) == (
      "delta_orthogonal", {"gain": 2, "column_axis": -2}, 1.0)
  assert group.registered_init("sigma2_w=1.2") == ("lecun_normal", {}, 1.2)
  key = jax.random.key(0)
  np.testing.assert_array_equal(group.weight_initializer(config.inits[0])(key, (8, 8)),
                                initializers.orthogonal(gain=1.09)(key, (8, 8)))
  for bad, needle in (("orthogonal:scale=2", "Unknown keyword 'scale'"),
                      ("orthogonal:gain", "expected NAME:KEY=VALUE"),
                      ("orthogonal:gain=-1", "gain must be a positive"),
                      ("haar:gain=1", "unknown value 'haar:gain=1'")):
    with pytest.raises(ConfigError, match=needle) as e:
      SweepConfig(inits=(bad,))
    assert e.value.field == "inits"
