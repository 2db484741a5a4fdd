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
import logging
import os

import numpy as np
import pytest

from initjax.training import checkpoints


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
