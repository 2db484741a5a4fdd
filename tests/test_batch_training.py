"""initjax.batch_training and initjax.checkpoints: blocks of networks over devices, segments,
checkpoints, and results that depend neither on the device count nor on an interruption."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initjax import training
from initjax.core import distributed, parallel
from initjax.nn import models
from initjax.training import batch_training, checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUT_DIM, WIDTH, DEPTH, CLASSES, B = 6, 8, 3, 4, 5
MODEL = models.mlp("relu")
# Adam amplifies any difference in rounding, so equalities below are strict tests.
SPEC = training.TrainSpec(optimizer="adam", steps=12, batch_size=16, eval_every=4,
                          stats_every=6, stats_batch_size=32)


def _data():
  k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
  return {"x_train": jax.random.normal(k1, (64, INPUT_DIM)),
          "y_train": jax.random.randint(k2, (64,), 0, CLASSES),
          "x_test": jax.random.normal(k3, (32, INPUT_DIM)),
          "y_test": jax.random.randint(k4, (32,), 0, CLASSES)}


DATA = _data()
PARAMS = training.init_networks(jax.random.split(jax.random.PRNGKey(1), B), "he_normal",
                                input_dim=INPUT_DIM, width=WIDTH, depth=DEPTH, output_dim=CLASSES)
KEYS = jax.random.split(jax.random.PRNGKey(2), B)
LRS = jnp.array([1e-3, 3e-3, 1e-2, 3e-2, 1e-1])


class RecordingCheckpoint:
  """A checkpoint that keeps every payload in memory (and can stop after a number of saves)."""

  def __init__(self, every_chunks, stop_after=None, saved=None):
    self.every_chunks = every_chunks
    self.payloads = []
    self.stop_after = stop_after
    self.saved = saved

  def restore(self):
    return self.saved

  def segment_done(self, payload):
    self.payloads.append(payload())
    if self.stop_after is not None and len(self.payloads) >= self.stop_after:
      raise KeyboardInterrupt("stop")


def _assert_same(a, b):
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


@pytest.fixture(scope="module")
def reference():
  """Blocks of 2 networks (3 blocks, the last padded), segments of one chunk (2 steps)."""
  ckpt = RecordingCheckpoint(every_chunks=1)
  out = batch_training.run_networks(MODEL, PARAMS, KEYS, LRS, DATA, SPEC, block=2,
                                    checkpoint=ckpt)
  return out, ckpt.payloads


def test_blocks_and_segments_match_one_vmapped_call(reference):
  out, payloads = reference
  whole = jax.tree.map(np.asarray, training.train_networks(MODEL, PARAMS, KEYS, LRS, DATA, SPEC))
  assert set(out) == set(whole)
  for k in out:  # other batch shapes round differently: float tolerance, not bits
    np.testing.assert_allclose(np.asarray(out[k], np.float64), np.asarray(whole[k], np.float64),
                               rtol=2e-4, atol=1e-6, err_msg=k)
  chunks = SPEC.steps // training.record_chunk(SPEC)
  rounds = -(-3 // len(parallel.workers()))   # one block per worker at a time
  assert len(payloads) == rounds * chunks      # a save opportunity after every segment
  assert [p["round"] for p in payloads[::chunks]] == list(range(rounds))
  assert [p["steps"] for p in payloads[:chunks]] == list(range(2, SPEC.steps + 1, 2))
  assert len(payloads[-1]["done"]) == rounds - 1


@pytest.mark.parametrize("stop_after", [1, 5, 8])
def test_resuming_from_a_saved_segment_gives_identical_results(reference, stop_after):
  out, payloads = reference
  first = RecordingCheckpoint(every_chunks=1, stop_after=stop_after)
  with pytest.raises(KeyboardInterrupt):
    batch_training.run_networks(MODEL, PARAMS, KEYS, LRS, DATA, SPEC, block=2, checkpoint=first)
  saved = first.payloads[-1]
  resumed = batch_training.run_networks(MODEL, PARAMS, KEYS, LRS, DATA, SPEC, block=2,
                                        checkpoint=RecordingCheckpoint(1, saved=saved))
  _assert_same(out, resumed)


def test_orbax_checkpoint_round_trip_and_fingerprint(tmp_path, reference):
  _, payloads = reference
  payload, newer = payloads[-2], payloads[-1]  # the last round, the rounds before it done
  ckpt = checkpoints.GroupCheckpoint(str(tmp_path / "g"), "fp-1", chunk_steps=2, every_steps=2)
  assert ckpt.every_chunks == 1 and ckpt.restore() is None
  ckpt.save(payload, payload["steps"])
  ckpt.save(newer, newer["steps"])              # the newer one (and its checksums) replace it
  assert sorted(os.listdir(tmp_path / "g")) == [f"segment_{newer['steps']:09d}",
                                                f"segment_{newer['steps']:09d}.sha256.json"]
  back = ckpt.restore()
  assert back["round"] == newer["round"] and back["chunk"] == newer["chunk"]
  for got, want in zip(back["state"], newer["state"]):
    for a, b in zip(got, want):
      np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(back["losses"], newer["losses"])
  assert len(back["done"]) == len(newer["done"])
  for got, want in zip(back["done"], newer["done"]):
    _assert_same(got, want)
  other = checkpoints.GroupCheckpoint(str(tmp_path / "g"), "fp-2", chunk_steps=2, every_steps=2)
  assert other.restore() is None                # other settings: not used
  ckpt.remove()
  assert not (tmp_path / "g").exists()


def test_checkpoint_saves_on_a_pending_signal_then_stops(tmp_path, reference, monkeypatch):
  _, payloads = reference
  ckpt = checkpoints.GroupCheckpoint(str(tmp_path / "g"), "fp", chunk_steps=2, every_minutes=60)
  ckpt.segment_done(lambda: payloads[3])        # not due: nothing saved
  assert not (tmp_path / "g").exists()
  monkeypatch.setitem(distributed._SIGNAL, "signum", 15)  # pylint: disable=protected-access
  with pytest.raises(distributed.Interrupted):
    ckpt.segment_done(lambda: payloads[4])
  assert ckpt.restore()["chunk"] == payloads[4]["chunk"]


def test_parse_every():
  assert checkpoints.parse_every("500") == (500, None)
  assert checkpoints.parse_every("10m") == (None, 10.0)
  assert checkpoints.parse_every("2.5min") == (None, 2.5)
  assert checkpoints.parse_every("0") == (None, None)
  for bad in ("-1", "x", "1.5", "10h"):
    with pytest.raises(ValueError):
      checkpoints.parse_every(bad)


@pytest.mark.slow  # about 14 s: a subprocess with 1, 2 and 4 fake devices
def test_one_two_and_four_devices_give_identical_results():
  code = textwrap.dedent("""
      import jax, numpy as np
      import tests.test_batch_training as t
      from initjax.training import batch_training
      assert jax.local_device_count() == 4
      outs = [batch_training.run_networks(t.MODEL, t.PARAMS, t.KEYS, t.LRS, t.DATA, t.SPEC,
                                          devices=jax.devices()[:n], block=2) for n in (1, 2, 4)]
      for other in outs[1:]:
        for k in outs[0]:
          np.testing.assert_array_equal(outs[0][k], other[k], err_msg=k)
      print("ok")
  """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONPATH=REPO,
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=300, env=env, cwd=REPO)
  assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
