"""Fault injection, as a batch job meets them: damaged point files, two runs into one directory,
sizes that cannot fit, and bad inputs. Every fault must end in one clear line (no traceback),
and results that are either complete and verified or absent: a damaged point is named, never
merged, and recomputed to the same numbers as an undamaged run.

The entry points run in subprocesses (as a user runs them) with one shared persistent JAX
compilation cache, so each small program compiles once for the module. [SIGTERM/SIGKILL in the
middle of a group, and 1 vs N devices, are tested in tests/test_resume.py.]
"""
import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import cli
from initjax.core import lock
from initjax.core.errors import ConfigError
from initjax.core.parallel import available_memory_bytes
from initjax.studies.sweep import store, tasks
from initjax.studies.sweep.config import SweepConfig
from initjax.studies.sweep.grid import expand_grid
from initjax.studies.sweep.summary import format_summary_table
from tests.subprocess_env import one_error_line, subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 12 grid points (12 learning rates, one init) in one compiled group, so that the module compiles
# two small programs (training, and the signal at initialization); the repeated values are
# dropped with a note.
LRS = tuple(f"0.{i:02d}" for i in range(1, 13))
FLAGS = ["--depths=2,2", "--widths=8", "--steps=10", "--num_seeds=2",
         "--inits=he_normal,he_normal", "--optimizers=sgd",
         "--learning_rates=" + ",".join(f"sgd:{float(lr):g}" for lr in LRS + ("0.01",)),
         "--eval_every=10", "--stats_every=10", "--log_every=5", "--stats_batch_size=32",
         "--num_devices=1", "--seed_chunk=2"]  # one compiled shape, also for the reruns
POINTS = [f"he_normal-d2-w8-relu-sgd-lr{float(lr):g}" for lr in LRS]
IMPOSSIBLE = 10 ** 7  # depth, at width 1000: about 100 TB of weights, on any machine


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  return subprocess_env(tmp_path_factory)


def _run(module, args, env, timeout=240, prefix=()):
  return subprocess.run([*prefix, sys.executable, "-m", f"experiments.{module}", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _sweep(out, env, *extra):
  return _run("sweep", [*FLAGS, *extra, f"--output_dir={out}"], env)


def _report(out, env, *extra, prefix=()):
  return _run("report", [f"--output_dir={out}", *extra], env, timeout=120, prefix=prefix)


_one_error_line = one_error_line


def _results(out):
  with open(os.path.join(out, "results.csv"), newline="", encoding="utf-8") as fh:
    rows = list(csv.DictReader(fh))
  with open(os.path.join(out, "summary.json"), encoding="utf-8") as fh:
    table = json.load(fh)["summary"]
  return rows, table


def _assert_same_results(out_a, out_b):
  (rows_a, table_a), (rows_b, table_b) = _results(out_a), _results(out_b)
  key = lambda r: tuple(v for k, v in r.items() if k != "value")
  assert [key(r) for r in rows_a] == [key(r) for r in rows_b]
  value = lambda rows: np.array([float(r["value"]) if r["value"] else np.nan for r in rows])
  np.testing.assert_allclose(value(rows_a), value(rows_b), rtol=1e-4, atol=1e-7)
  nan = lambda table: [{k: float("nan") if v is None else v for k, v in row.items()}
                       for row in table]  # JSON keeps NaN as null
  assert format_summary_table(nan(table_a)) == format_summary_table(nan(table_b))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
  """An undamaged one-task run (its repeated flag values dropped with a note)."""
  out = str(tmp_path_factory.mktemp("reference"))
  proc = _sweep(out, env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "--depths: ignoring the repeated value(s) 2 (each is used once)" in proc.stderr
  assert "--inits: ignoring the repeated value(s) he_normal" in proc.stderr
  assert "--learning_rates: ignoring the repeated value(s) sgd:0.01" in proc.stderr
  assert "task 0 of 1: 12 of 12 grid points in 1 compiled groups" in proc.stderr
  assert sorted(os.listdir(os.path.join(out, "points"))) == sorted(
      f"{p}.{e}" for p in POINTS for e in ("csv", "json"))
  assert not [n for n in os.listdir(out) if n.startswith(".lock.")]  # released on exit
  return out


# ------------------------------------------------------------------------------------------------
# Damaged point files.

def _csv(out, point):
  return os.path.join(out, "points", point + ".csv")


def _json(out, point):
  return os.path.join(out, "points", point + ".json")


def _cut_at_line(path, keep=10):
  with open(path, "rb") as fh:
    lines = fh.read().split(b"\n")
  with open(path, "wb") as fh:
    fh.write(b"\n".join(lines[:keep]) + b"\n")


def _cut_mid(path):
  with open(path, "rb") as fh:
    data = fh.read()
  with open(path, "wb") as fh:
    fh.write(data[:len(data) // 2 + 7])


def _garble(path):
  with open(path, "rb") as fh:
    data = bytearray(fh.read())
  data[len(data) // 2:len(data) // 2 + 4] = b"\xff\xfe\x00\x81"
  with open(path, "wb") as fh:
    fh.write(bytes(data))


def _write(path, text):
  with open(path, "w", encoding="utf-8") as fh:
    fh.write(text)


def _old_json(path):  # as initjax wrote it before the checksums
  with open(path, encoding="utf-8") as fh:
    record = json.load(fh)
  for k in ("csv_rows", "csv_sha256", "record_sha256"):
    del record[k]
  _write(path, json.dumps(record))


# {kind: (damage(out, point), file it names (csv/json), words of the reason)}
DAMAGE = {
    "csv cut at a line": (lambda o, p: _cut_at_line(_csv(o, p)), "csv", "(truncated)"),
    "csv cut mid-row": (lambda o, p: _cut_mid(_csv(o, p)), "csv", "truncated, cut mid-row"),
    "csv emptied": (lambda o, p: _write(_csv(o, p), ""), "csv", "is empty (0 bytes)"),
    "csv garbled": (lambda o, p: _garble(_csv(o, p)), "csv", "not UTF-8"),
    "csv of another point": (lambda o, p: shutil.copy(_csv(o, POINTS[0]), _csv(o, p)), "csv",
                             f"holds rows of point '{POINTS[0]}'"),
    "json cut": (lambda o, p: _cut_mid(_json(o, p)), "json", "is not valid JSON"),
    "json garbled": (lambda o, p: _garble(_json(o, p)), "json", "not UTF-8"),
    "json not an object": (lambda o, p: _write(_json(o, p), "[1, 2]\n"), "json",
                           "holds a JSON list"),
    "csv missing": (lambda o, p: os.unlink(_csv(o, p)), "csv", "is missing (its JSON is present)"),
    "json of an older initjax": (lambda o, p: _old_json(_json(o, p)), "json",
                                 "cannot be verified"),
}
KINDS = list(DAMAGE)


def test_every_damage_is_named_and_never_merged(tmp_path, reference):
  """In-process, per kind: the point is not finished, the reason names the file and why, and
  loading the results leaves it out (it is listed as missing)."""
  config = store.load_sweep_config(reference)
  point = expand_grid(config)[3]
  for kind, (damage, ext, words) in DAMAGE.items():
    out = str(tmp_path / kind.replace(" ", "_"))
    shutil.copytree(reference, out)
    damage(out, point.point_id)
    state, detail, _, _ = store.inspect_point(out, config, point)
    assert state == "damaged", kind
    assert str(detail).startswith(os.path.join(out, "points", f"{point.point_id}.{ext}: "))
    assert words in str(detail) and "\n" not in str(detail), (kind, str(detail))
    assert store.point_state(out, config, point) == ("missing", {})
    results, missing = store.load_results(out, config)
    assert point.point_id not in results and len(results) == len(POINTS) - 1
    assert missing == {point.point_id: f"damaged: {detail}"}
    with pytest.raises(store.DamagedPoint):
      store.load_point(out, config, point)


def test_a_changed_value_in_either_file_is_caught(tmp_path, reference):
  """One changed digit keeps both files parseable: the hashes catch it."""
  config = store.load_sweep_config(reference)
  point = expand_grid(config)[0]
  for path, why in ((_csv, "does not match the sha256"), (_json, "does not match its recorded")):
    out = str(tmp_path / path.__name__)
    shutil.copytree(reference, out)
    with open(path(out, point.point_id), "rb") as fh:
      data = bytearray(fh.read())
    i = data.index(b"0.", len(data) // 2) + 2
    data[i] = ord("1") if data[i] != ord("1") else ord("2")
    with open(path(out, point.point_id), "wb") as fh:
      fh.write(bytes(data))
    state, detail, _, _ = store.inspect_point(out, config, point)
    assert state == "damaged" and why in str(detail), str(detail)


@pytest.mark.slow  # end to end, several seconds: runs in the slow pass
def test_report_lists_damaged_points_and_rerun_recomputes_them(tmp_path, env, reference):
  """Ten points damaged ten ways, two left intact: the report refuses naming each (exit 1,
  nothing written); the rerun names each file in one line, recomputes exactly those points and
  ends with the undamaged run's results."""
  out = str(tmp_path / "run")
  shutil.copytree(reference, out)
  os.unlink(os.path.join(out, "results.csv"))
  damaged = dict(zip(POINTS[2:], KINDS))  # "csv of another point" copies POINTS[0]: intact
  assert len(damaged) == len(KINDS)
  for point, kind in damaged.items():
    DAMAGE[kind][0](out, point)
  proc = _report(out, env)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert f"10 of {len(POINTS)} grid points have no finished results" in proc.stderr
  for point, kind in damaged.items():
    _, ext, words = DAMAGE[kind]
    line = next(l for l in proc.stderr.splitlines() if l.startswith(f"  {point}: "))
    assert f"damaged: {os.path.join(out, 'points', point)}.{ext}: " in line, (kind, line)
    assert words in line, (kind, line)
  assert not os.path.exists(os.path.join(out, "results.csv"))  # nothing merged

  proc = _sweep(out, env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "skipping 2 finished points" in proc.stderr and "Traceback" not in proc.stderr
  for point, kind in damaged.items():
    _, ext, words = DAMAGE[kind]
    named = [l for l in proc.stderr.splitlines()
             if f"{os.path.join(out, 'points', point)}.{ext}: " in l]
    assert len(named) == 1 and words in named[0] and "recomputing" in named[0], (kind, named)
  _assert_same_results(reference, out)
  config = store.load_sweep_config(out)
  assert all(store.inspect_point(out, config, p)[0] == "done" for p in expand_grid(config))


def test_unreadable_sweep_config_is_one_line(tmp_path, env, reference):
  out = str(tmp_path / "run")
  shutil.copytree(reference, out)
  path = os.path.join(out, store.SWEEP_CONFIG_FILE)
  for text, needle in (('{"depths": 5}', "depths: must be a list; got 5"),
                       ("\xff{", "Expecting value"), ("[" * 100000, "recursion"),
                       ('{"learning_rates": {"sgd": 5}}', "learning_rates: must be an object")):
    _write(path, text)
    with pytest.raises(ValueError, match=f"cannot read {path}: .*{needle}"):
      store.load_sweep_config(out)
  _write(path, "[1, 2]\n")
  line = _one_error_line(_report(out, env), "--output_dir: cannot read")
  assert "must be a JSON object; got list" in line


def _can_mount_tmpfs():
  if os.geteuid() != 0 or not shutil.which("unshare"):
    return False
  return subprocess.run(["unshare", "--mount", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
                        capture_output=True, check=False).returncode == 0


@pytest.mark.slow  # end to end, several seconds: runs in the slow pass
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs root and mount namespaces (a tmpfs)")
def test_full_disk_keeps_finished_points_and_old_files(tmp_path, env, reference):
  """A sweep and a report on a full file system (a tiny tmpfs in a private mount namespace): one
  line, exit 1, no temporary file left, every finished point still verifies, no report file."""
  mnt = tmp_path / "mnt"
  mnt.mkdir()
  out = str(mnt / "out")
  lost = POINTS[-2:]
  script = f"""
    mount -t tmpfs -o size=1m tmpfs '{mnt}' || exit 90
    mkdir '{out}' && cp -r '{reference}/points' '{reference}/sweep_config.json' '{out}/'
    rm '{out}/points/{lost[0]}.json' '{out}/points/{lost[1]}.json'
    # Fill it up but for 2 pages: room for sweep_config.json and one CSV, not its JSON.
    dd if=/dev/zero of='{mnt}/filler' bs=4096 count=$(( $(stat -f -c %a '{mnt}') - 2 )) 2>/dev/null
    "$@" -m experiments.sweep {' '.join(FLAGS)} --output_dir='{out}' 2>&1; echo "sweep rc=$?"
    "$@" -m experiments.report --output_dir='{out}' --allow_partial 2>&1; echo "report rc=$?"
    ls -A '{out}' '{out}/points'
    cp -r '{out}' '{tmp_path}/after'  # the tmpfs goes with the namespace
  """
  proc = subprocess.run(["unshare", "--mount", "bash", "-c", script, "bash", sys.executable],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                        check=False)
  text = proc.stdout
  assert proc.returncode == 0 and "Traceback" not in text, text[-3000:] + proc.stderr[-2000:]
  errors = [l for l in text.splitlines() if l.startswith("error: ")]
  assert "sweep rc=1" in text and "report rc=1" in text, text[-3000:]
  assert len(errors) == 2, text[-3000:]
  assert errors[0].startswith("error: No space left on device") and "rerun" in errors[0]
  assert errors[1].startswith(f"error: cannot write the report into {out}: No space left")
  assert ".tmp" not in text and ".lock." not in text  # no temporary file, no lock left
  assert "results.csv" not in text and "summary.json" not in text
  after = str(tmp_path / "after")
  config = store.load_sweep_config(after)
  states = [store.inspect_point(after, config, p)[0] for p in expand_grid(config)]
  assert set(states) <= {"done", "missing"} and states.count("done") >= len(POINTS) - 2, states


# ------------------------------------------------------------------------------------------------
# Two runs into one directory.

@pytest.mark.slow  # end to end, several seconds: runs in the slow pass
def test_second_run_of_a_task_into_a_locked_directory_is_refused(tmp_path, env, reference):
  out = str(tmp_path / "run")
  shutil.copytree(reference, out)
  before = {n: os.stat(os.path.join(out, "points", n)).st_mtime_ns
            for n in os.listdir(os.path.join(out, "points"))}
  config = store.load_sweep_config(out)
  with lock.acquire(out, tasks.task_holder(config, 0, 2)):
    # The same task of the same split: refused, naming this process.
    line = _one_error_line(_sweep(out, env, "--task_index=0", "--num_tasks=2"), "--output_dir")
    assert f"pid {os.getpid()} on " in line and "task 0 of 2 of a sweep" in line
    # The report while a task holds the directory: refused.
    _one_error_line(_report(out, env), f"pid {os.getpid()}")
    # Another task of the same split shares the directory (its points are finished: skipped).
    proc = _sweep(out, env, "--task_index=1", "--num_tasks=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "task 1 of 2 done" in proc.stdout
    # What the entry points would register otherwise: another split (other settings, another
    # number of tasks, a one-task run) or a figure run is refused.
    for holder in (tasks.task_holder(dataclasses.replace(config, steps=20), 1, 2),
                   tasks.task_holder(config, 1, 3), tasks.task_holder(config, 0, 1),
                   lock.Holder(role="figure")):
      with pytest.raises(lock.DirectoryLocked, match=f"is in use by pid {os.getpid()} "):
        lock.acquire(out, holder, timeout=1)
  after = {n: os.stat(os.path.join(out, "points", n)).st_mtime_ns
           for n in os.listdir(os.path.join(out, "points"))}
  assert after == before  # nobody wrote a point
  assert not [n for n in os.listdir(out) if n.startswith(".lock.")]  # all released


def test_lock_dies_with_its_process_and_one_of_many_wins(tmp_path, env):
  out = str(tmp_path / "dir")
  os.makedirs(out)
  code = ("import importlib.util, sys, time; "  # initjax/lock.py alone: starts in milliseconds
          "spec = importlib.util.spec_from_file_location('lock', sys.argv[3]); "
          "lock = sys.modules['lock'] = importlib.util.module_from_spec(spec); "
          "spec.loader.exec_module(lock); "
          "h = lock.acquire(sys.argv[1], lock.Holder(role='figure', what='a test holder')); "
          "print('held', flush=True); time.sleep(float(sys.argv[2]))")
  procs = [subprocess.Popen([sys.executable, "-c", code, out, "60", lock.__file__], env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for _ in range(3)]
  try:
    deadline = time.time() + 60
    while time.time() < deadline and sum(p.poll() is not None for p in procs) < 2:
      time.sleep(0.05)
    exited = [p for p in procs if p.poll() is not None]
    assert len(exited) == 2, "exactly one of three runs starting at once may hold the directory"
    for p in exited:
      err = p.stderr.read()
      assert p.returncode == 1 and "is in use by pid" in err, err[-2000:]
    winner = next(p for p in procs if p.poll() is None)
    assert winner.stdout.readline().strip() == "held"
    with pytest.raises(lock.DirectoryLocked, match=f"pid {winner.pid} on .*a test holder"):
      lock.acquire(out, lock.Holder(role="report"))
    winner.send_signal(signal.SIGKILL)  # no clean-up runs: the kernel drops the flock
    winner.wait(timeout=30)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert os.path.exists(os.path.join(out, ".lock.figure"))  # stale, and taken over:
  with lock.acquire(out, lock.Holder(role="report")) as held:
    assert not os.path.exists(os.path.join(out, ".lock.figure"))
    assert held.path == os.path.join(out, ".lock.report")
  assert not os.path.exists(os.path.join(out, ".lock.report"))


def test_without_working_locks_the_run_goes_on_with_a_warning(tmp_path, monkeypatch, caplog):
  import errno  # pylint: disable=import-outside-toplevel
  import fcntl  # pylint: disable=import-outside-toplevel

  def no_locks(fd, operation):
    raise OSError(errno.ENOLCK, "No locks available")

  monkeypatch.setattr(fcntl, "flock", no_locks)  # as on NFS without a lock daemon
  with pytest.raises(lock.LocksUnsupported, match="file locks do not work in"):
    lock.acquire(str(tmp_path), lock.Holder(role="report"))
  caplog.set_level("WARNING")
  with cli.hold_output_dir("output_dir", str(tmp_path), lock.Holder(role="report")):
    pass
  assert any("going on without a lock" in r.getMessage() for r in caplog.records)


def test_a_second_figure_run_is_refused(tmp_path, env):
  out = str(tmp_path / "fig")
  os.makedirs(out)
  with lock.acquire(out, lock.Holder(role="figure", what="another figure run")):
    proc = _run("propagation", ["--depth=3", "--width=8", "--num_seeds=2", "--inits=",
                                "--sigma2=1", f"--output_dir={out}"], env, timeout=120)
  line = _one_error_line(proc, "--output_dir: ")
  assert "another figure run" in line
  assert not os.path.exists(os.path.join(out, "results.csv"))


# ------------------------------------------------------------------------------------------------
# Sizes that cannot fit.

@pytest.mark.slow  # end to end, several seconds: runs in the slow pass
def test_impossible_sizes_are_refused_before_anything_runs(tmp_path, env):
  out = tmp_path / "never"
  proc = _run("sweep", [f"--depths={IMPOSSIBLE}", "--widths=1000", f"--output_dir={out}"], env)
  line = _one_error_line(proc, "--depths/--widths: one network of depth 10000000, width 1000 "
                         "needs about ")
  assert "GiB available" in line
  proc = _run("propagation", [f"--depth={IMPOSSIBLE}", "--width=1000", f"--output_dir={out}"],
              env)
  _one_error_line(proc, "--depth/--width: one network of depth 10000000, width 1000")
  assert not out.exists()  # refused before anything was written


def test_groups_and_chunks_that_cannot_fit_are_refused():
  import jax  # pylint: disable=import-outside-toplevel
  devices = jax.local_devices()[:1]
  small = SweepConfig(depths=(2,), widths=(8,), steps=10, num_seeds=2, optimizers=("sgd",))
  assert 0 < tasks.check_fits(small, devices) < 2 ** 20
  with pytest.raises(ConfigError, match="the 2000000000 networks of depth 2, width 8") as e:
    tasks.check_fits(dataclasses.replace(small, num_seeds=10 ** 9), devices)
  assert e.value.field == "num_seeds"
  one = tasks.check_fits(small, devices)
  assert tasks.check_fits(small, devices, seed_chunk=10 ** 12) == one  # capped at the group's 2
  # Twice the networks that fit, all in one call: the group's parameters fit, the call does not.
  many = dataclasses.replace(small, num_seeds=int(2 * available_memory_bytes(devices[0]) / one))
  tasks.check_fits(many, devices)
  with pytest.raises(ConfigError, match="networks per worker and call") as e:
    tasks.check_fits(many, devices, seed_chunk=many.num_seeds)
  assert e.value.field == "seed_chunk"
  with pytest.raises(ConfigError) as e:
    tasks.check_fits(dataclasses.replace(small, depths=(IMPOSSIBLE,), widths=(1000,)), devices)
  assert e.value.field == "depths/widths" and "depth 10000000, width 1000" in e.value.message


def test_absurd_run_time_is_announced(caplog):
  config = SweepConfig(depths=(1000,), widths=(1000,), steps=10 ** 6, num_seeds=100)

  class _Device:
    platform, id = "cpu", 0

  caplog.set_level("WARNING")
  tasks._warn_if_absurd(config, [expand_grid(config)], [_Device()])
  assert any("days on 1 cpu device(s)" in r.getMessage() for r in caplog.records)
  caplog.clear()
  small = SweepConfig(depths=(2,), widths=(8,), steps=10, num_seeds=2)
  tasks._warn_if_absurd(small, [expand_grid(small)], [_Device()])
  assert not caplog.records


# ------------------------------------------------------------------------------------------------
# Inputs.

def _read_only_prefix(path):
  """A command prefix under which `path` is read-only (root ignores permission bits, so root
  gets a read-only bind mount in a private mount namespace), or None when that is impossible."""
  if os.geteuid() != 0:
    os.chmod(path, 0o555)
    return ()
  if not shutil.which("unshare"):
    return None
  probe = subprocess.run(["unshare", "--mount", "sh", "-c",
                          f"mount --bind '{path}' '{path}' && "
                          f"mount -o remount,bind,ro '{path}' && ! touch '{path}/.probe'"],
                         capture_output=True, check=False)
  if probe.returncode != 0:
    return None
  return ("unshare", "--mount", "sh", "-c",
          f"mount --bind '{path}' '{path}' && mount -o remount,bind,ro '{path}' && exec \"$@\"",
          "sh")


def test_report_into_a_read_only_directory(tmp_path, env, reference):
  out = str(tmp_path / "ro")
  shutil.copytree(reference, out)
  os.unlink(os.path.join(out, "results.csv"))
  before = sorted(os.listdir(out))
  prefix = _read_only_prefix(out)
  if prefix is None:
    pytest.skip("cannot make a directory read-only here")
  try:
    line = _one_error_line(_report(out, env, prefix=prefix), "--output_dir: cannot write to")
  finally:
    os.chmod(out, 0o755)
  assert "Read-only" in line or "Permission denied" in line, line
  assert sorted(os.listdir(out)) == before


def test_partial_report_with_no_points_writes_nothing(tmp_path, env, reference):
  out = str(tmp_path / "empty")
  os.makedirs(os.path.join(out, "points"))
  shutil.copy(os.path.join(reference, store.SWEEP_CONFIG_FILE), out)
  proc = _report(out, env, "--allow_partial")
  line = _one_error_line(proc, "none of the 12 grid points has finished results", status=1)
  assert "nothing to report" in line and len(proc.stderr.strip().splitlines()) == 1
  assert "wrote" not in proc.stdout
  assert sorted(os.listdir(out)) == sorted(["points", store.SWEEP_CONFIG_FILE, ".lock"])


def test_help_exits_0(env):
  # The three entry points share `cli.run`'s flag parsing: one of them shows it.
  proc = _run("sweep", ["--help"], env, timeout=60)
  assert proc.returncode == 0 and "--output_dir" in proc.stdout + proc.stderr


def test_sweep_input_gaps(tmp_path, env):
  out = tmp_path / "never"
  _one_error_line(_run("sweep", ["--data_dir=/proc/initjax_no", "--depths=1",
                                 f"--output_dir={out}"], env), "--data_dir: cannot cache the data set")
  assert not out.exists()
  for field, value, needle in (("stats_batch_size", 5000, "must be <= 4000 (training examples"),
                               ("seed", 2 ** 32, "must be <= 4294967295"),
                               ("depths", (2, 3, 2), "2 is listed twice"),
                               ("inits", ("he_normal", "he_normal"), "listed twice")):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")) as e:
      SweepConfig(**{field: value})
    assert e.value.field == field
  with pytest.raises(cli.UsageError, match="--learning_rates: "):
    cli.parse_learning_rates(["inf"], ("sgd",), ("sgd",))


def test_repeated_values_are_dropped_with_a_note(caplog):
  caplog.set_level("WARNING")
  assert cli.parse_ints("depths", ["10", "30", "010"]) == [10, 30]
  assert cli.parse_floats("sigma2", ["0.1", "1e-1", "1"], positive=True) == [0.1, 1.0]
  assert cli.parse_choices("inits", ["he_normal", " he_normal"], ["he_normal"]) == ["he_normal"]
  notes = [r.getMessage() for r in caplog.records]
  assert notes == ["--depths: ignoring the repeated value(s) 10 (each is used once)",
                   "--sigma2: ignoring the repeated value(s) 0.1 (each is used once)",
                   "--inits: ignoring the repeated value(s) he_normal (each is used once)"]


def test_unreadable_data_cache_is_named_and_generated_again(tmp_path, caplog):
  from initjax.training import data  # pylint: disable=import-outside-toplevel
  (tmp_path / "mnist1d_seed42.npz").write_bytes(b"PK\x03\x04 not a zip")
  assert data.check_data_dir(str(tmp_path)) == str(tmp_path / "mnist1d_seed42.npz")
  caplog.set_level("WARNING")
  assert data.load_mnist1d(str(tmp_path))["x_train"].shape == (4000, 40)
  lines = [r.getMessage() for r in caplog.records]
  assert len(lines) == 1 and "mnist1d_seed42.npz cannot be read (" in lines[0], lines
  assert "generating it again" in lines[0]
