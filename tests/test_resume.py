"""Resuming a group in the middle of its training, and the device count, through the real entry
point (`python -m experiments.sweep` in subprocesses), compared byte for byte.

* SIGTERM mid-group: the run saves a checkpoint and stops (128 + 15, one line telling to rerun);
  SIGKILL mid-group, while Orbax is writing a save: the last complete periodic save stays, next
  to the half-written one. Rerunning the same command resumes from that save (step S > 0),
  trains only the segments after it, removes the checkpoint and writes results.csv and
  points/* byte-identical to an uninterrupted run.
* A damaged mid-group checkpoint (the issue-23 case: SIGTERM, then four bits flipped in an
  Orbax data file): the rerun names the file in one line, trains the group afresh and writes
  the uninterrupted run's bytes; nothing damaged is resumed.
* --num_devices=1, 2 and 4 (of 4 fake CPU devices, a fixed --seed_chunk) write byte-identical
  results.

Why byte equality is a strict test here: adam amplifies any difference in rounding, and every
value is written with all the digits of its float32 (see `_assert_meaningful`); the seeds of the
point differ from each other, so a changed key or lost state would show in the bytes. (Checked
when this was written: moving the saved state by one float32 ulp fails both resume tests, and
moving the learning rate by one ulp on 4 workers fails the device test.)

Every subprocess shares one persistent JAX compilation cache (a temporary directory), and all of
them see 4 fake devices, so each program compiles once for the module.
"""
import csv
import glob
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from initjax.training import checkpoints
from tests.subprocess_env import subprocess_env

# End-to-end sweeps in subprocesses (about 55 s): `python -m pytest -m slow` runs them.
pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One grid point (one group) of 4 seeds, one network per worker and call: on a CPU with 2 cores
# (2 workers) that is 2 rounds of 2 blocks; 4 checkpointed segments of 50 steps per round.
FLAGS = ["--depths=2", "--widths=4", "--steps=200", "--num_seeds=4", "--inits=he_normal",
         "--optimizers=adam", "--eval_every=50", "--stats_every=50", "--log_every=25",
         "--stats_batch_size=16", "--seed_chunk=1", "--checkpoint_every=50"]
POINT = "he_normal-d2-w4-relu-adam-lr0.001"
SAVED = re.compile(r"saved checkpoint \S+ \(round (\d+), step (\d+)\)")
RESUMED = re.compile(r"resuming from checkpoint (\S+) \(round (\d+), step (\d+)\)")
SEGMENT = re.compile(r"^segment_\d+$")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  return subprocess_env(tmp_path_factory,
                        XLA_FLAGS="--xla_force_host_platform_device_count=4")


def _args(out, num_devices=1):
  return [sys.executable, "-m", "experiments.sweep", *FLAGS, f"--num_devices={num_devices}",
          f"--output_dir={out}"]


def _sweep(out, env, num_devices=1):
  proc = subprocess.run(_args(out, num_devices), cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  return proc.stderr


def checkpoints_dir(out):
  return os.path.join(out, "checkpoints")


def _saves(log):
  return [(int(r), int(s)) for r, s in SAVED.findall(log)]


def _files(out):
  """{name: bytes} of results.csv and every file under points/."""
  names = ["results.csv"] + [os.path.join("points", n)
                             for n in sorted(os.listdir(os.path.join(out, "points")))]
  out_files = {}
  for name in names:
    with open(os.path.join(out, name), "rb") as fh:
      out_files[name] = fh.read()
  return out_files


def _assert_same_bytes(out, reference_out):
  got, want = _files(out), _files(reference_out)
  assert sorted(got) == sorted(want)
  assert not [n for n in want if got[n] != want[n]], "these files differ from the reference"


def _assert_meaningful(out):
  """The compared files can tell runs apart: finite losses with all their float32 digits, and
  different values for different seeds (a changed --seed or a lost state would change them)."""
  with open(os.path.join(out, "points", POINT + ".csv"), newline="", encoding="utf-8") as fh:
    rows = list(csv.DictReader(fh))
  final = {r["seed"]: r["value"] for r in rows
           if r["metric"] == "train_loss" and r["step"] == "200"}
  assert sorted(final) == ["0", "1", "2", "3"]
  assert len(set(final.values())) == 4, final
  assert all(np.isfinite(float(v)) and len(v) > 10 for v in final.values()), final


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
  """An uninterrupted run on one device: (its output directory, the (round, step) of every
  checkpoint it saved)."""
  out = str(tmp_path_factory.mktemp("reference"))
  log = _sweep(out, env)
  assert "task 0 of 1: 1 of 1 grid points in 1 compiled groups" in log
  assert "resuming" not in log
  saves = _saves(log)
  rounds = saves[-1][0] + 1
  assert saves == [(r, s) for r in range(rounds) for s in (50, 100, 150, 200)], saves
  assert not glob.glob(os.path.join(checkpoints_dir(out), "*"))  # removed once the group is done
  _assert_meaningful(out)
  return out, saves


def _complete_and_partial(out):
  """(complete saves, half-written saves) of the one group under out/checkpoints."""
  complete, partial = [], []
  for path in glob.glob(os.path.join(checkpoints_dir(out), "*", "*")):
    name = os.path.basename(path)
    if SEGMENT.match(name):
      complete.append(path)
    elif name.endswith(".orbax-checkpoint-tmp"):
      partial.append(path)
  return sorted(complete), sorted(partial)


def _interrupt(out, env, log_path, signum):
  """Starts the sweep, waits for a complete checkpoint, then: SIGTERM, or SIGKILL while the next
  save is half-written (the process is stopped first, so that the save cannot complete between
  looking and killing). Returns (exit status, stderr, what the checkpoint directory held)."""
  with open(log_path, "w", encoding="utf-8") as log:
    proc = subprocess.Popen(_args(out), cwd=REPO, env=env, stdout=log, stderr=log, text=True)
  try:
    deadline = time.time() + 240
    while time.time() < deadline:
      complete, partial = _complete_and_partial(out)
      if complete and (signum != signal.SIGKILL or partial):
        if signum == signal.SIGKILL:
          proc.send_signal(signal.SIGSTOP)
          assert os.WIFSTOPPED(os.waitpid(proc.pid, os.WUNTRACED)[1])  # it is stopped now
          if _complete_and_partial(out)[1] != partial:  # the save finished meanwhile
            proc.send_signal(signal.SIGCONT)
            continue
        proc.send_signal(signum)
        break
      assert proc.poll() is None, "the run ended before it could be interrupted"
      time.sleep(0.005)
    else:
      pytest.fail("no checkpoint was saved in time")
    proc.wait(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  with open(log_path, encoding="utf-8") as fh:
    return proc.returncode, fh.read(), _complete_and_partial(out)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_interrupted_group_resumes_to_identical_bytes(tmp_path, env, reference, signum):
  ref_out, ref_saves = reference
  out = str(tmp_path / "run")
  status, log, (complete, partial) = _interrupt(out, env, str(tmp_path / "first.log"), signum)
  assert not os.path.exists(os.path.join(out, "results.csv"))
  assert not [n for n in os.listdir(os.path.join(out, "points")) if n.endswith(".csv")]
  assert len(complete) == 1, complete  # older saves are deleted once a newer one is complete
  if signum == signal.SIGTERM:
    assert status == 128 + signum, log[-3000:]
    assert "rerun the same command" in log and "Traceback" not in log, log[-3000:]
    # The signal's save is the last one logged, and the one on disk.
    assert complete[0].endswith(f"segment_{_saves(log)[-1][1]:09d}"), (complete, log[-3000:])
    assert not partial, partial
  else:
    assert status == -signal.SIGKILL, log[-3000:]
    assert len(partial) == 1, partial  # Orbax's temporary directory of the interrupted save

  log = _sweep(out, env)  # the same command again
  resumed = RESUMED.findall(log)
  assert len(resumed) == 1, log[-3000:]
  path, round_index, step = resumed[0][0], int(resumed[0][1]), int(resumed[0][2])
  assert os.path.abspath(path) == os.path.abspath(complete[0]) and step > 0
  # It trained only the segments after the save it resumed from.
  assert (round_index, step) in ref_saves
  assert _saves(log) == ref_saves[ref_saves.index((round_index, step)) + 1:], log[-3000:]
  assert not glob.glob(os.path.join(checkpoints_dir(out), "*"))  # the group is done
  _assert_same_bytes(out, ref_out)


def test_a_damaged_checkpoint_is_not_resumed(tmp_path, env, reference):
  ref_out, ref_saves = reference
  out = str(tmp_path / "run")
  status, log, (complete, _) = _interrupt(out, env, str(tmp_path / "first.log"), signal.SIGTERM)
  assert status == 128 + signal.SIGTERM and len(complete) == 1, log[-3000:]
  data = [f for f in glob.glob(os.path.join(complete[0], "**", "d", "*"), recursive=True)
          if os.path.isfile(f)]
  damaged = max(data, key=os.path.getsize)
  raw = bytearray(open(damaged, "rb").read())
  for i in range(4):
    raw[(i + 1) * len(raw) // 6] ^= 0x10
  with open(damaged, "wb") as fh:
    fh.write(bytes(raw))

  log = _sweep(out, env)  # the same command again
  named = [l for l in log.splitlines() if damaged in l]
  assert len(named) == 1 and "does not match the sha256" in named[0], log[-3000:]
  assert "starting the group afresh" in named[0]
  assert not RESUMED.findall(log) and "Traceback" not in log
  assert "could not be restored" not in log and "Event loop is closed" not in log
  assert _saves(log) == ref_saves  # the whole group again, from step 0
  _assert_same_bytes(out, ref_out)


def test_one_two_and_four_devices_write_identical_bytes(tmp_path, env, reference):
  ref_out, _ = reference
  for n in (2, 4):
    out = str(tmp_path / f"devices{n}")
    log = _sweep(out, env, num_devices=n)
    assert f"on {n} cpu device(s) ({n} workers)" in log, log[-3000:]
    assert "blocks of 1 networks" in log
    _assert_same_bytes(out, ref_out)


def test_a_checkpoint_with_arrays_of_size_zero_round_trips(tmp_path):
  """A depth-1 MLP has no stacked hidden layers: arrays of size 0, which Orbax cannot save."""
  ckpt = checkpoints.GroupCheckpoint(str(tmp_path / "g"), "fp", chunk_steps=1, every_steps=1)
  state = [[np.zeros((0, 2, 4, 4), np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)]]
  done = [{"var_h": np.zeros((2, 3, 0), np.float32), "train_loss": np.ones((2, 4), np.float32)}]
  ckpt.save({"round": 1, "chunk": 1, "steps": 1, "state": state,
             "losses": np.ones((1, 2, 1), np.float32), "done": done}, 1)
  back = ckpt.restore()
  assert sorted(back["done"][0]) == sorted(done[0])
  for got, want in zip(back["state"][0] + [back["done"][0][k] for k in done[0]],
                       state[0] + list(done[0].values())):
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
