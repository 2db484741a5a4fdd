"""Sweeps past one device, end to end with the real entry points in subprocesses: a 4-task split
merged by the report equals a one-task run; a run killed by SIGTERM/SIGINT resumes to the same
results; --overwrite and changed settings; 4 fake CPU devices (and seed chunks) equal 1 device;
a report with a missing point fails naming it.

Every subprocess shares one persistent JAX compilation cache (a temporary directory), so each
small program compiles once for the whole module.
"""
import csv
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from initjax.studies.sweep.group import CSV_COLUMNS
from initjax.studies.sweep.summary import format_summary_table
from tests.subprocess_env import subprocess_env

# End-to-end sweeps in subprocesses (about 80 s): `python -m pytest -m slow` runs them.
pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 6 grid points (2 inits x 3 depths) in 3 compiled groups, 4 seeds each.
FLAGS = ["--depths=1,2,3", "--widths=8", "--steps=10", "--num_seeds=4",
         "--inits=he_normal,xavier_normal", "--optimizers=sgd", "--eval_every=10",
         "--stats_every=10", "--log_every=5", "--stats_batch_size=32"]
NUM_POINTS = 6


def _flags(**changes):
  """FLAGS with some flags replaced (name=value) or added."""
  out = [f for f in FLAGS if f.split("=")[0][2:] not in changes]
  return out + [f"--{k}={v}" for k, v in changes.items()]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  return subprocess_env(tmp_path_factory, PYTHON=sys.executable)


def _sweep(args, out, env, timeout=240):
  return subprocess.run([sys.executable, "-m", "experiments.sweep", *args, f"--output_dir={out}"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                        check=False)


def _report(out, env, *args):
  return subprocess.run([sys.executable, "-m", "experiments.report", f"--output_dir={out}",
                         *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
                        check=False)


def _read_rows(path):
  with open(path, newline="", encoding="utf-8") as fh:
    return list(csv.DictReader(fh))


def _assert_same_rows(rows_a, rows_b):
  """Same rows in the same order; values equal to float tolerance (empty = NaN)."""
  assert len(rows_a) == len(rows_b)
  key = lambda r: tuple(v for k, v in r.items() if k != "value")
  assert [key(r) for r in rows_a] == [key(r) for r in rows_b]
  value = lambda rows: np.array([float(r["value"]) if r["value"] else np.nan for r in rows])
  np.testing.assert_allclose(value(rows_a), value(rows_b), rtol=1e-4, atol=1e-7)


def _summary_table(out):
  with open(os.path.join(out, "summary.json"), encoding="utf-8") as fh:
    table = json.load(fh)["summary"]
  for row in table:  # NaN is null in JSON
    for k in ("median_final_train_loss", "test_accuracy_mean", "test_accuracy_std"):
      row[k] = float("nan") if row[k] is None else row[k]
  return format_summary_table(table)


def _assert_same_results(out_a, out_b):
  _assert_same_rows(_read_rows(os.path.join(out_a, "results.csv")),
                    _read_rows(os.path.join(out_b, "results.csv")))
  assert _summary_table(out_a) == _summary_table(out_b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
  """An uninterrupted one-task run on one device."""
  out = str(tmp_path_factory.mktemp("reference"))
  proc = _sweep(_flags(num_devices=1), out, env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "task 0 of 1: 6 of 6 grid points in 3 compiled groups" in proc.stderr  # absl log
  for name in ("results.csv", "summary.json", "loss_curves.png", "gradient_variance.png",
               "sweep_config.json"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  assert len(glob.glob(os.path.join(out, "points", "*.json"))) == NUM_POINTS
  return out


def test_four_task_split_equals_one_task(tmp_path, env, reference):
  out = str(tmp_path / "split")
  proc = subprocess.run(["bash", "scripts/run_local.sh", "4", *FLAGS, f"--output_dir={out}"],
                        cwd=REPO, env=dict(env, MAX_PARALLEL="2"), capture_output=True,
                        text=True, timeout=240, check=False)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  shares = []
  for i in range(4):
    with open(os.path.join(out, "logs", f"task-{i}.log"), encoding="utf-8") as fh:
      log = fh.read()
    assert f"task {i} of 4: " in log, log
    shares.append(int(log.split(f"task {i} of 4: ")[1].split()[0]))
  assert sum(shares) == NUM_POINTS and min(shares) >= 1  # a partition; no task idle
  _assert_same_results(reference, out)
  assert "final loss" in proc.stdout  # the report's summary table


def _wait_for_points(out, proc, timeout=180):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if glob.glob(os.path.join(out, "points", "*.json")):
      return
    assert proc.poll() is None, "the run ended before it could be interrupted"
    time.sleep(0.02)
  pytest.fail("no grid point finished in time")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupted_run_resumes_to_the_same_results(tmp_path, env, reference, signum):
  out = str(tmp_path / "run")
  args = [sys.executable, "-m", "experiments.sweep", *_flags(num_devices=1), f"--output_dir={out}"]
  proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    _wait_for_points(out, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 128 + signum, stderr[-3000:]
  assert "rerun the same command" in stderr and "Traceback" not in stderr
  names = os.listdir(os.path.join(out, "points"))
  assert not [n for n in names if n.endswith(".tmp")], names
  assert not os.path.exists(os.path.join(out, "results.csv"))
  finished = sorted(n[:-5] for n in names if n.endswith(".json"))
  assert 0 < len(finished) < NUM_POINTS, names
  for name in names:  # every file under a final name is complete
    path = os.path.join(out, "points", name)
    if name.endswith(".json"):
      with open(path, encoding="utf-8") as fh:
        stored = json.load(fh)
      assert stored["point_id"] == name[:-5] and stored["summary"]["num_seeds"] == 4
    else:
      rows = _read_rows(path)
      assert list(rows[0]) == list(CSV_COLUMNS)
      assert {r["point_id"] for r in rows} == {name[:-4]}
      assert rows[-1]["metric"] == "final_test_accuracy" and rows[-1]["seed"] == "3"
  proc = _sweep(_flags(num_devices=1), out, env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"skipping {len(finished)} finished points" in proc.stderr
  _assert_same_results(reference, out)


def test_changed_settings_fail_and_overwrite_recomputes(tmp_path, env, reference):
  out = str(tmp_path / "run")
  shutil.copytree(reference, out)
  mtimes = lambda: {n: os.stat(os.path.join(out, "points", n)).st_mtime_ns
                    for n in os.listdir(os.path.join(out, "points"))}
  before = mtimes()
  proc = _sweep(_flags(num_devices=1, steps=20), out, env, timeout=120)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: --steps: "), proc.stderr
  assert "steps 10 (now 20)" in lines[0] and "--overwrite" in lines[0]
  assert mtimes() == before
  proc = _sweep(_flags(num_devices=1, depths=1, overwrite="true"), out, env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "skipping" not in proc.stderr
  after = mtimes()
  redone = sorted(n for n in after if after[n] != before[n])
  assert redone == sorted(f"{i}-d1-w8-relu-sgd-lr0.01.{e}" for i in ("he_normal", "xavier_normal")
                          for e in ("csv", "json"))
  for name in redone:
    if name.endswith(".csv"):
      _assert_same_rows(_read_rows(os.path.join(reference, "points", name)),
                        _read_rows(os.path.join(out, "points", name)))


def test_four_fake_devices_and_seed_chunks_equal_one_device(tmp_path, env, reference):
  out = str(tmp_path / "four")
  env4 = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  proc = _sweep(_flags(depths=1, seed_chunk=4), out, env4)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "on 4 cpu device(s)" in proc.stderr
  assert "blocks of 4 networks" in proc.stderr  # 2 points x 4 seeds, 4 per device and call
  for init in ("he_normal", "xavier_normal"):
    name = f"{init}-d1-w8-relu-sgd-lr0.01.csv"
    _assert_same_rows(_read_rows(os.path.join(reference, "points", name)),
                      _read_rows(os.path.join(out, "points", name)))


def test_report_fails_naming_missing_points(tmp_path, env, reference):
  out = str(tmp_path / "partial")
  shutil.copytree(reference, out)
  gone = "xavier_normal-d2-w8-relu-sgd-lr0.01"
  os.unlink(os.path.join(out, "points", gone + ".json"))
  before = os.stat(os.path.join(out, "results.csv")).st_mtime_ns
  proc = _report(out, env)
  assert proc.returncode == 1, proc.stderr
  assert "Traceback" not in proc.stderr
  assert f"1 of {NUM_POINTS} grid points" in proc.stderr and f"{gone}: not finished" in proc.stderr
  assert os.stat(os.path.join(out, "results.csv")).st_mtime_ns == before  # nothing written
  proc = _report(out, env, "--allow_partial")
  assert proc.returncode == 0, proc.stderr
  with open(os.path.join(out, "summary.json"), encoding="utf-8") as fh:
    summary = json.load(fh)
  assert summary["missing_points"] == [gone] and len(summary["summary"]) == NUM_POINTS - 1
  assert gone not in {r["point_id"] for r in _read_rows(os.path.join(out, "results.csv"))}


def test_run_local_fails_when_a_task_fails(tmp_path, env):
  proc = subprocess.run(["bash", "scripts/run_local.sh", "2", "--optimizers=nope",
                         f"--output_dir={tmp_path / 'bad'}"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode != 0
  assert "task 0 of 2 FAILED" in proc.stderr and "--optimizers" in proc.stderr
