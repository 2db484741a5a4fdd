"""Fault injection, part 2 (issue 23): what initjax reads back is verified before it is used.

* a checkpoint is used only if every file and the restored arrays match the checksums saved
  with it; anything else is one log line naming it (and the file), and the group restarts;
* the MNIST-1D cache is verified on load (shapes, dtypes, finiteness, labels, rows, the
  generator's settings and a sha256 of the arrays), and regenerated with a log line otherwise;
* an output directory keeps its kind: a command of another kind refuses it in one line;
* the theory refuses arguments it cannot answer for with a ValueError saying why;
* a run deletes the temporary files its own killed runs left, and says so;
* messages name the flags the user typed, and carry values exactly.

Every case ends in one clear line or in results equal to an undamaged run. The end-to-end
resume of a damaged mid-group checkpoint (SIGTERM, bits flipped, rerun) is in
tests/test_resume.py, with the other resumes (`python -m pytest -m slow`).
"""
import glob
import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import cli
from initjax.core import lock, output_kind
from initjax.core.errors import ConfigError
from initjax.studies.sweep import tasks
from initjax.studies.sweep.config import SweepConfig
from initjax.training import checkpoints
from initjax.training import data as data_lib
from tests.subprocess_env import one_error_line, subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  return subprocess_env(tmp_path_factory)


def _run(module, args, env, timeout=180):
  return subprocess.run([sys.executable, "-m", f"experiments.{module}", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout, check=False)


_one_error_line = one_error_line


# ------------------------------------------------------------------------------------------------
# Checkpoints.

def _state(seed=0):
  rng = np.random.RandomState(seed)
  return [[rng.randn(4, 50, 20).astype(np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)]]


def _save(directory, steps=5, seed=0):
  ckpt = checkpoints.GroupCheckpoint(str(directory), "fp", chunk_steps=1, every_steps=1)
  ckpt.save({"round": 0, "chunk": steps, "steps": steps, "state": _state(seed),
             "losses": np.ones((1, 2, steps), np.float32), "done": []}, steps)
  return ckpt


def _largest_data_file(directory, segment="segment_*"):
  files = [f for f in glob.glob(os.path.join(str(directory), segment, "**", "d", "*"),
                                recursive=True) if os.path.isfile(f)]
  return max(files, key=os.path.getsize)


def _flip_bits(path, count=4):
  """As the issue found it: four flipped bits in an Orbax data file, which Orbax decodes without
  an error (so only a checksum can tell)."""
  data = bytearray(open(path, "rb").read())
  for i in range(count):
    data[(i + 1) * len(data) // (count + 2)] ^= 0x10
  with open(path, "wb") as fh:
    fh.write(bytes(data))


def _warnings(caplog):
  return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_clean_checkpoint_restores_exactly_and_quietly(tmp_path, caplog):
  ckpt = _save(tmp_path / "g")
  caplog.set_level(logging.INFO)
  back = ckpt.restore()
  for got, want in zip(back["state"][0], _state()[0]):
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
  assert not _warnings(caplog)  # no Orbax "could not be restored" warnings
  assert [r.getMessage() for r in caplog.records if "orbax" in r.pathname] == []
  assert any(m.startswith("resuming from checkpoint ") for m in caplog.messages)


def _one_rejection(caplog, *needles):
  lines = _warnings(caplog)
  assert len(lines) == 1, lines
  assert all(n in lines[0] for n in needles), lines[0]
  assert "Traceback" not in caplog.text
  return lines[0]


def test_flipped_bits_in_an_orbax_data_file_are_caught(tmp_path, caplog):
  ckpt = _save(tmp_path / "g")
  path = _largest_data_file(tmp_path / "g")
  _flip_bits(path)
  caplog.set_level(logging.INFO)
  assert ckpt.restore() is None  # the group restarts
  _one_rejection(caplog, f"is damaged: {path} does not match the sha256 recorded",
                 "starting the group afresh")


@pytest.mark.parametrize("damage", ["cut", "deleted", "extra file", "no record", "bad record"])
def test_other_damage_to_a_checkpoint_is_named(tmp_path, caplog, damage):
  ckpt = _save(tmp_path / "g")
  path = _largest_data_file(tmp_path / "g")
  segment = glob.glob(str(tmp_path / "g" / "segment_*[0-9]"))[0]
  if damage == "cut":
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    needle = f"{path} is {len(data) // 2} bytes where {len(data)} were saved"
  elif damage == "deleted":
    os.unlink(path)
    needle = f"is missing {path}"
  elif damage == "extra file":
    open(os.path.join(segment, "stray"), "w").write("x")
    needle = f"holds a file its checksum record does not list: {segment}/stray"
  elif damage == "no record":
    os.unlink(segment + checkpoints.RECORD_SUFFIX)
    needle = "has no checksum record"
  else:
    open(segment + checkpoints.RECORD_SUFFIX, "w").write("{")
    needle = "has an unreadable checksum record"
  caplog.set_level(logging.INFO)
  assert ckpt.restore() is None
  _one_rejection(caplog, needle, segment)


def test_a_damaged_newest_save_falls_back_to_the_older_verified_one(tmp_path, caplog):
  """Between writing a new save and deleting the old one both exist: a damaged new one leaves
  the old one to resume from."""
  _save(tmp_path / "old", steps=5, seed=1)
  ckpt = _save(tmp_path / "g", steps=10)
  for name in os.listdir(tmp_path / "old"):
    os.rename(tmp_path / "old" / name, tmp_path / "g" / name)
  _flip_bits(_largest_data_file(tmp_path / "g", "segment_000000010"))
  caplog.set_level(logging.INFO)
  back = ckpt.restore()
  assert back is not None and back["chunk"] == 5
  np.testing.assert_array_equal(back["state"][0][0], _state(1)[0][0])
  _one_rejection(caplog, "segment_000000010 is damaged", "trying the next older save")


def test_what_a_killed_save_left_is_removed_with_a_line(tmp_path, caplog):
  ckpt = _save(tmp_path / "g")
  leftovers = ["segment_000000009.orbax-checkpoint-tmp",
               ".segment_000000009.sha256.json.abcd1234.tmp"]
  os.makedirs(tmp_path / "g" / leftovers[0] / "arrays")
  open(tmp_path / "g" / leftovers[1], "w").write("{")
  open(tmp_path / "g" / ".unrelated.abcd1234.tmp", "w").write("kept: not a checkpoint file")
  caplog.set_level(logging.INFO)
  assert ckpt.restore() is not None
  assert sorted(os.listdir(tmp_path / "g")) == sorted(
      [".unrelated.abcd1234.tmp", "segment_000000005", "segment_000000005.sha256.json"])
  lines = [m for m in caplog.messages if "earlier killed run" in m]
  assert len(lines) == 1 and all(n in lines[0] for n in leftovers), lines


# ------------------------------------------------------------------------------------------------
# The MNIST-1D cache.

@pytest.fixture(scope="module")
def mnist1d(tmp_path_factory):
  """(a verified cache file, its raw arrays), generated once for the module (about 2 s)."""
  directory = str(tmp_path_factory.mktemp("mnist1d"))
  data_lib.load_mnist1d(directory)
  path = data_lib.mnist1d_cache_path(directory)
  with np.load(path) as npz:
    return path, {k: npz[k] for k in npz.files}


def _cache_with(directory, raw, **changes):
  arrays = {**raw, **changes}
  path = data_lib.mnist1d_cache_path(str(directory))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
  return path


def _nan(x):
  x = x.copy()
  x[17, 3] = np.nan
  return x


def _nudged(x):
  x = x.copy()
  x[100, 7] = np.nextafter(x[100, 7], np.float32(np.inf))  # one ulp: only the sha256 sees it
  return x


# {kind: (changes to the arrays, words of the one line)}
CACHE_DAMAGE = {
    "a NaN in x_train": (lambda r: {"x_train": _nan(r["x_train"])},
                         "x_train holds 1 values that are not finite"),
    "labels shifted to 10..19": (lambda r: {"y_train": r["y_train"] + 10},
                                 "y_train holds labels from 10 to 19, outside 0..9"),
    "cut to 50 rows": (lambda r: {"x_train": r["x_train"][:50], "y_train": r["y_train"][:50]},
                       "x_train has shape (50, 40) where the generator makes (4000, 40)"),
    "39 columns": (lambda r: {"x_test": r["x_test"][:, :39]},
                   "x_test has shape (1000, 39) where the generator makes (1000, 40)"),
    "float64 inputs": (lambda r: {"x_train": r["x_train"].astype(np.float64)},
                       "x_train is float64, not float32"),
    "one value moved by one ulp": (lambda r: {"x_train": _nudged(r["x_train"])},
                                   "x_train does not match the sha256 recorded"),
    "other generator settings": (
        lambda r: {data_lib.CACHE_RECORD: np.array(str(r[data_lib.CACHE_RECORD]).replace(
            '"num_samples": 5000', '"num_samples": 5001'))},
        "was generated with other settings (num_samples differ"),
    "written by an older initjax": (lambda r: {data_lib.CACHE_RECORD: None},
                                    "has no record of its generator settings"),
    "y_test missing": (lambda r: {"y_test": None}, "lacks y_test"),
}


def test_every_damaged_cache_is_named_and_generated_again(tmp_path, mnist1d, monkeypatch, caplog):
  """Per kind: one warning naming the file and why, then the data are generated again (here
  a copy of the verified arrays, to keep the test fast; the real generator is the next test)
  and the loaded data equal the undamaged cache's."""
  path, raw = mnist1d
  good = data_lib.load_mnist1d(os.path.dirname(path))
  generated = []
  monkeypatch.setattr(data_lib, "_generate_mnist1d", lambda seed: generated.append(seed) or {
      k: raw[k].copy() for k in data_lib.ARRAY_KEYS})
  caplog.set_level(logging.WARNING)
  for kind, (changes, words) in CACHE_DAMAGE.items():
    directory = tmp_path / kind.replace(" ", "_")
    damaged = _cache_with(directory, raw, **changes(raw))
    assert data_lib.check_data_dir(str(directory)) == damaged   # it can be generated again
    caplog.clear()
    loaded = data_lib.load_mnist1d(str(directory))
    lines = _warnings(caplog)
    assert len(lines) == 1 and lines[0].startswith(f"the cached data set {damaged} "), (kind, lines)
    assert words in lines[0] and "generating it again" in lines[0], (kind, lines[0])
    for k in data_lib.ARRAY_KEYS:
      np.testing.assert_array_equal(np.asarray(loaded[k]), np.asarray(good[k]))
    caplog.clear()
    data_lib.load_mnist1d(str(directory))  # the new cache verifies: no line, no generation
    assert not _warnings(caplog), kind
  assert len(generated) == len(CACHE_DAMAGE)


def test_a_damaged_cache_is_generated_again_to_the_same_bytes(tmp_path, mnist1d, caplog):
  path, raw = mnist1d
  damaged = _cache_with(tmp_path, raw, y_train=raw["y_train"] + 10)
  caplog.set_level(logging.WARNING)
  data_lib.load_mnist1d(str(tmp_path))
  assert len(_warnings(caplog)) == 1
  with np.load(damaged) as npz:
    for k in raw:
      np.testing.assert_array_equal(npz[k], raw[k])


def test_a_damaged_cache_that_cannot_be_rewritten_is_one_line(tmp_path, mnist1d, monkeypatch):
  path, raw = mnist1d
  directory = tmp_path / "ro"
  damaged = _cache_with(directory, raw, x_train=_nan(raw["x_train"]))
  real_open = open

  def read_only(name, mode="r", *args, **kwargs):
    if "w" in mode and str(name).startswith(str(directory)):
      raise PermissionError(13, "Permission denied", name)
    return real_open(name, mode, *args, **kwargs)

  monkeypatch.setattr("builtins.open", read_only)
  with pytest.raises(ValueError) as e:
    data_lib.check_data_dir(str(directory))
  message = str(e.value)
  assert message.startswith(f"the cached data set {damaged} x_train holds 1 values that are not")
  assert "cannot be generated again" in message and "Permission denied" in message
  assert "\n" not in message


def test_batch_sizes_are_checked_against_the_data_loaded():
  config = SweepConfig(depths=(2,), widths=(8,), batch_size=100, stats_batch_size=64)
  loaded = {"x_train": np.zeros((80, 40), np.float32)}
  with pytest.raises(ConfigError) as e:
    tasks.check_data(config, loaded)
  assert e.value.field == "batch_size" and "must be <= 80 (the training examples" in e.value.message
  tasks.check_data(config, {"x_train": np.zeros((4000, 40), np.float32)})


# ------------------------------------------------------------------------------------------------
# Each output directory knows its kind; stale temporary files.

def _files(directory):
  return {n: open(os.path.join(directory, n), "rb").read() for n in sorted(os.listdir(directory))
          if os.path.isfile(os.path.join(directory, n)) and not n.startswith(".lock")}


def _phase_diagram_dir(path):
  """What a finished phase diagram leaves (its files' content does not matter here)."""
  os.makedirs(path)
  for name, text in (("results.csv", "sigma2_w,value\n1,0.5\n"), ("summary.json", "{}\n"),
                     ("phase_diagram.png", "png"),
                     ("sweep_config.json", json.dumps({"inits": ["sigma2_w=1"]}))):
    open(os.path.join(path, name), "w").write(text)
  return str(path)


def test_kinds_recorded_and_inferred(tmp_path):
  legacy = _phase_diagram_dir(tmp_path / "legacy")   # written before the record existed
  assert output_kind.kind_of(legacy) == "phase_diagram"
  unfinished = tmp_path / "unfinished"   # a phase diagram's grid before its figure: either
  os.makedirs(unfinished)
  open(unfinished / "sweep_config.json", "w").write(json.dumps({"inits": ["sigma2_w=1"]}))
  assert output_kind.kind_of(str(unfinished)) is None
  open(unfinished / "sweep_config.json", "w").write(json.dumps({"inits": ["he_normal"]}))
  assert output_kind.kind_of(str(unfinished)) == "sweep"
  fresh = str(tmp_path / "fresh")
  os.makedirs(fresh)
  output_kind.claim(fresh, "propagation_figure")
  output_kind.claim(fresh, "propagation_figure")   # again: fine
  assert output_kind.kind_of(fresh) == "propagation_figure"
  for kind in ("sweep", "phase_diagram"):
    with pytest.raises(output_kind.WrongKind, match="holds the results of a propagation figure"):
      output_kind.claim(fresh, kind)
  assert sorted(os.listdir(fresh)) == [output_kind.MARKER]


def test_report_refuses_a_phase_diagram_directory_in_one_line(tmp_path, env):
  out = _phase_diagram_dir(tmp_path / "pd")
  before = _files(out)
  line = _one_error_line(_run("report", [f"--output_dir={out}"], env, timeout=120),
                         "--output_dir: ")
  assert "holds the results of a phase diagram (experiments.phase_diagram), not of a training " \
         "sweep" in line
  assert _files(out) == before   # results.csv and summary.json not replaced


def _stale(directory, name, age=3600.0, tag="ab12cd34"):
  path = os.path.join(directory, f".{name}.{tag}.tmp")
  open(path, "w").write("half written")
  os.utime(path, (time.time() - age, time.time() - age))
  return os.path.basename(path)


def test_a_run_removes_its_killed_runs_temporary_files(tmp_path, caplog):
  out = str(tmp_path / "out")
  os.makedirs(out)
  files = ["sweep_config.json", "results.csv", "summary.json", "phase_diagram.png"]
  stale = [_stale(out, n) for n in files + [output_kind.MARKER]]
  kept = [_stale(out, "notes.txt"), "sweep_config.json.tmp", ".results.csv.tmp"]
  for name in kept[1:]:
    open(os.path.join(out, name), "w").write("not initjax's")
  caplog.set_level(logging.INFO)
  holder = lock.Holder(role="task-0", split="s", member=0)
  with lock.acquire(out, holder) as held:
    fresh = _stale(out, "results.csv", age=-5.0, tag="zz99yy88")   # newer than this run
    cli.claim_output_dir("output_dir", out, held, "phase_diagram", files)
  left = sorted(n for n in os.listdir(out) if not n.startswith(".lock"))
  assert left == sorted(kept + [fresh, output_kind.MARKER]), left
  lines = [m for m in caplog.messages if "earlier killed run" in m]
  assert len(lines) == 1 and all(n in lines[0] for n in stale), lines


def test_a_task_sharing_the_directory_leaves_shared_temporary_files(tmp_path):
  out = str(tmp_path / "out")
  os.makedirs(out)
  stale = _stale(out, "sweep_config.json")
  with lock.acquire(out, lock.Holder(role="task-0", split="s", member=0)):
    with lock.acquire(out, lock.Holder(role="task-1", split="s", member=1)) as second:
      assert not second.alone
      cli.claim_output_dir("output_dir", out, second, "sweep", ["sweep_config.json"])
  assert os.path.exists(os.path.join(out, stale))   # task 0 may be writing it


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_a_figure_run_cleans_up_and_keeps_its_kind(tmp_path, env):
  """One small figure run: its killed runs' temporary files go (one line), an unwritable
  compilation cache is one line (not JAX's warning at every compilation: /sys/kernel is a
  directory nobody may create files in), and the directory refuses a sweep afterwards."""
  out = str(tmp_path / "fig")
  os.makedirs(out)
  stale = [_stale(out, "results.csv"), _stale(out, "propagation.png")]
  proc = _run("propagation", ["--depth=3", "--width=8", "--num_seeds=2", "--inits=",
                              "--sigma2=1", "--compilation_cache_dir=/sys/kernel",
                              f"--output_dir={out}"], env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if "earlier killed run" in l]
  assert len(lines) == 1 and all(n in lines[0] for n in stale), proc.stderr[-3000:]
  cache = [l for l in proc.stderr.splitlines() if "cache" in l.lower()]
  assert len(cache) == 1 and "compilation cache off: cannot write to '/sys/kernel'" in cache[0], \
      proc.stderr[-3000:]
  assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
  assert output_kind.kind_of(out) == "propagation_figure"
  with pytest.raises(cli.UsageError, match="--output_dir: .* holds the results of a "
                     "propagation figure"):   # the CLI's one line: see the report test above
    cli.check_output_kind("output_dir", out, "sweep")


# ------------------------------------------------------------------------------------------------
# The theory's arguments; the phase diagram's messages.

from initjax import theory  # pylint: disable=wrong-import-position
from initjax.studies import phase_diagram  # pylint: disable=wrong-import-position


@pytest.mark.parametrize("args, words", [
    (("tanh", 1e30, 0.05), "is beyond q = 1e+10"),       # was a bare StopIteration
    (("sigmoid", 1e30, 0.0), "is beyond q = 1e+10"),
    (("tanh", 1e12, 1e12), "is beyond q = 1e+10"),
    (("tanh", float("inf"), 0.05), "sigma2_w must be finite and > 0; got inf"),
    (("tanh", float("nan"), 0.05), "sigma2_w must be finite and > 0; got nan"),
    (("tanh", 1.0, -1.0), "sigma2_b must be finite and >= 0"),
    (("tanh", 1e300, 1e300, 1e300), "not finite"),
])
def test_theory_refuses_what_it_cannot_answer_with_a_reason(args, words):
  kwargs = {"input_variance": args[3]} if len(args) > 3 else {}
  for fn in (theory.depth_scales, theory.chi_1, theory.fixed_point_q):
    with pytest.raises(ValueError) as e:
      fn(*args[:3], **kwargs)
    assert type(e.value) is ValueError and words in str(e.value), (fn.__name__, str(e.value))
  assert theory.depth_scales("relu", 1e30, 0.05).phase == "diverging"  # exact at any scale


@pytest.mark.parametrize("kwargs, field, words", [
    ({"width": 0}, "width", "must be an integer >= 1; got 0"),
    ({"optimizer": "nope"}, "optimizer", "unknown value 'nope'"),
    ({"learning_rate": 0.0}, "learning_rate", "must be a finite number > 0"),
    ({"sigma2_w": (1e30,)}, "sigma2_w", "1e+30: the mean-field theory has no depth scale"),
    ({"sigma2_w": (1.5, 1.5)}, "sigma2_w", "1.5 is listed twice"),
    ({"steps": 0}, "steps", "must be an integer >= 1"),
])
def test_phase_diagram_errors_name_its_own_settings(kwargs, field, words):
  with pytest.raises(ConfigError) as e:
    phase_diagram.PhaseConfig(**kwargs)
  assert e.value.field == field and words in e.value.message, (e.value.field, e.value.message)
  assert phase_diagram.setting_name("depths/widths") == "depths/width"
  assert phase_diagram.setting_name("bias_variance") == "sigma2_b"


def test_sigma2_w_is_carried_exactly():
  config = phase_diagram.PhaseConfig(sigma2_w=(1.23456789, 1.23456788), depths=(2,))
  assert config.sweep_config().inits == ("sigma2_w=1.23456789", "sigma2_w=1.23456788")
  # Values that %g writes exactly keep their names (the default grid's point files).
  default = phase_diagram.PhaseConfig().sweep_config().inits
  assert default == tuple(f"sigma2_w={v}" for v in ("0.5", "1", "1.25", "1.5", "1.75", "2",
                                                    "2.5", "3", "4"))


def test_a_phase_diagram_flag_error_is_one_line_naming_its_flag(tmp_path, env):
  out = tmp_path / "never"
  line = _one_error_line(_run("phase_diagram", ["--width=0", f"--output_dir={out}"], env),
                         "--width: must be an integer >= 1; got 0")
  assert "--widths" not in line
  assert not out.exists()


# ------------------------------------------------------------------------------------------------
# Long work says so.

from initjax.core import progress  # pylint: disable=wrong-import-position


def test_progress_lines_carry_an_eta_and_stay_quiet_for_short_work(caplog):
  caplog.set_level(logging.INFO)
  quiet = progress.Progress("short work", 10, "things")   # once a minute at most
  for i in range(10):
    quiet.update(i + 1)
  assert quiet.lines == 0 and not caplog.records
  loud = progress.Progress("long work", 200, "networks", every_seconds=0.0, start=100)
  loud.update(150)
  (line,) = caplog.messages
  assert line.startswith("long work: 150 of 200 networks (75.0%); ") and "left" in line
  assert [progress.duration(s) for s in (5, 200, 7500, 3 * 86400)] == [
      "5 s", "3 min 20 s", "2 h 05 min", "3.0 days"]


class _FakeCheckpoint:
  every_chunks = 2

  def __init__(self, saved=None):
    self.saved, self.segments = saved, 0

  def restore(self):
    return self.saved

  def segment_done(self, payload):
    self.segments += 1


def test_training_progress_counts_rounds_and_segments(monkeypatch, caplog):
  """5 networks in blocks of 1 on 2 workers: 3 rounds; 4 chunks in segments of 2: 2 per round.
  A save of round 1 after its first segment has done 3 of the 6 calls."""
  monkeypatch.setattr(progress.Progress.__init__, "__defaults__", ("", 0.0, 0.0))
  caplog.set_level(logging.INFO)
  tracked = tasks.TrainingProgress(_FakeCheckpoint(), "g", networks=5, steps=40, block=1,
                                   workers=2, chunks=4)
  assert tracked.calls == 6 and tracked.every_chunks == 2 and tracked.restore() is None
  for _ in range(6):
    tracked.segment_done(None)
  assert tracked.checkpoint.segments == 6
  assert caplog.messages[-1].startswith("g: 200 of 200 network-steps (100.0%)")
  resumed = tasks.TrainingProgress(_FakeCheckpoint({"done": [{}], "chunk": 2}), "g",
                                   networks=5, steps=40, block=1, workers=2, chunks=4)
  resumed.restore()
  resumed.segment_done(None)
  assert caplog.messages[-1].startswith("g: 133 of 200 network-steps (66.5%)")


@pytest.mark.slow
def test_training_progress_matches_run_networks(tmp_path, monkeypatch, caplog):
  """The count above against the real training loop (it compiles: slow): the last line of a
  group is 100%."""
  from initjax.studies.sweep import run_task  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(progress.Progress.__init__, "__defaults__", ("", 0.0, 0.0))
  caplog.set_level(logging.INFO)
  config = SweepConfig(num_seeds=3, depths=(1,), widths=(4,), optimizers=("sgd",), steps=20,
                       eval_every=10, stats_every=10, log_every=5, stats_batch_size=16)
  run_task(config, str(tmp_path / "out"), checkpoint_steps=5, seed_chunk=1)
  lines = [m for m in caplog.messages if "network-steps" in m]
  assert len(lines) > 1 and lines[-1].startswith(
      "group 1 of 1 (depth 1, width 4): training: 120 of 120 network-steps (100.0%)"), lines
