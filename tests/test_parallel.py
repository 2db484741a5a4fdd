"""initjax.parallel: blocks of items spread over (fake) devices or CPU threads give the same
results as one device; memory, device selection."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initjax.core import parallel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_on_four_fake_devices(code):
  """Runs `code` in a fresh Python whose CPU shows up as 4 XLA devices; it must print ok."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=180, env=env, cwd=REPO)
  assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_available_memory_is_positive():
  assert parallel.available_memory_bytes() > 1e8


def test_workers_are_devices_or_cpu_cores():
  devices = jax.local_devices()
  work = parallel.workers()
  if len(devices) == 1 and devices[0].platform == "cpu":
    assert work == devices * parallel.cpu_cores()
    assert parallel.workers(threads=3) == devices * 3
  else:
    assert work == devices


def test_programs_with_lapack_get_one_cpu_worker():
  # Two threads running QR/SVD programs on the CPU deadlocked (parallel.workers' docstring):
  # such programs run on one worker there, whatever the cores or CPU devices.
  cpu = jax.devices("cpu")[0]
  assert parallel.workers([cpu], threads=4, uses_lapack=True) == [cpu]
  assert parallel.workers([cpu, cpu], uses_lapack=True) == [cpu]
  assert parallel.workers([cpu], threads=4) == [cpu] * 4


def test_calls_lapack_reads_the_program_inside_scans_and_gradients():
  key = jax.random.key(0)
  orthogonal = jax.nn.initializers.orthogonal()
  in_scan = lambda k: jax.lax.scan(lambda c, _: (c, orthogonal(k, (4, 4))), 0.0, None, length=2)
  assert parallel.calls_lapack(in_scan, key)
  svd_grad = jax.grad(lambda a: jnp.linalg.svd(a, compute_uv=False).sum())
  assert parallel.calls_lapack(svd_grad, jnp.eye(3))
  assert not parallel.calls_lapack(lambda k: jax.random.normal(k, (3, 3)) @ jnp.eye(3), key)


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_probe_runs_a_model_that_draws_orthogonal_kernels_on_one_cpu_worker(monkeypatch):
  # nn.LSTMCell draws its recurrent kernels orthogonally itself: the probe sees the QR in the
  # seed's program and asks for one worker, although no initializer argument names it.
  from flax import linen as nn  # pylint: disable=import-outside-toplevel
  from initjax import probe  # pylint: disable=import-outside-toplevel
  asked = []
  real = parallel.workers
  monkeypatch.setattr(parallel, "workers",
                      lambda *a, **k: asked.append(k.get("uses_lapack")) or real(*a, **k))
  x = jax.random.normal(jax.random.key(1), (4, 3, 2))
  probe.measure(nn.RNN(nn.LSTMCell(4)), x, key=jax.random.key(2), num_seeds=2)
  probe.measure(nn.Dense(3), x[:, 0], key=jax.random.key(2), num_seeds=2, weight_init="he_normal")
  assert asked == [True, False]


def test_run_blocks_in_threads_equals_one_call():
  f = jax.jit(lambda x, c: jnp.tanh(x @ x.T).sum(axis=1) + c)
  x = jax.random.normal(jax.random.key(0), (12, 16))
  blocks = parallel.split_leading(x, 3)
  assert [b.shape[0] for b in blocks] == [3, 3, 3, 3]
  for threads in (1, 2, 3):
    work = parallel.workers(jax.local_devices()[:1], threads=threads)
    outs = parallel.run_blocks(f, [(b,) for b in blocks], work, shared=jnp.float32(1.0))
    np.testing.assert_array_equal(np.concatenate(outs), np.concatenate(
        [np.asarray(f(b, jnp.float32(1.0))) for b in blocks]))


def test_pad_leading_and_split():
  tree = {"a": jnp.arange(5), "b": jnp.arange(10).reshape(5, 2)}
  padded, n = parallel.pad_leading(tree, 4)
  assert n == 5 and padded["a"].tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
  parts = parallel.split_leading(padded, 4)
  assert len(parts) == 2 and parts[1]["b"].shape == (4, 2)


def test_blocks_on_four_fake_devices_equal_one_device():
  code = textwrap.dedent("""
      import jax, jax.numpy as jnp, numpy as np
      from initjax.core import parallel
      assert jax.local_device_count() == 4, jax.devices()
      f = jax.jit(jax.vmap(lambda k: jnp.sum(jax.random.normal(k, (50, 50)) ** 2)))
      blocks = [(b,) for b in parallel.split_leading(jax.random.split(jax.random.key(0), 8), 2)]
      one = parallel.run_blocks(f, blocks, parallel.workers(jax.devices()[:1], threads=1))
      for n in (2, 4):
        outs = parallel.run_blocks(f, blocks, parallel.workers(jax.devices()[:n]))
        devices = {next(iter(o.devices())) for o in outs}
        assert len(devices) == n, devices
        np.testing.assert_array_equal(np.concatenate(one), np.concatenate(outs))
      print("ok")
  """)
  _run_on_four_fake_devices(code)


def test_bad_num_devices():
  with pytest.raises(ValueError, match="num_devices"):
    parallel.local_devices(1000)


@pytest.mark.slow  # about 12 s: a subprocess with 4 fake devices
def test_propagation_on_four_fake_devices_equals_one_device():
  code = textwrap.dedent("""
      import jax, numpy as np
      from initjax.measurement import propagation
      assert jax.local_device_count() == 4
      spec = propagation.NetworkSpec(input_dim=8, width=12, depth=5, batch_size=6)
      kw = dict(weight_init="normal", scales=(0.02, 1.0), num_seeds=5)
      one = propagation.measure(jax.random.key(0), spec, num_devices=1, **kw)
      four = propagation.measure(jax.random.key(0), spec, **kw)
      for q in propagation.QUANTITIES:
        np.testing.assert_array_equal(one[q], four[q], err_msg=q)
      print("ok")
  """)
  _run_on_four_fake_devices(code)


def test_chunk_size_fits_memory_and_devices():
  cpu = [type("Device", (), {"platform": "cpu"})()] * 4
  assert parallel.chunk_size(100, 1e6, cpu, available_bytes=1e12) == 100
  assert parallel.chunk_size(10, 1e6, cpu, available_bytes=1e12) == 12   # padded to 4s
  assert parallel.chunk_size(100, 1e6, cpu, available_bytes=2.2e7) == 8  # 11 fit -> 8
  assert parallel.chunk_size(100, 1e9, cpu, available_bytes=1e6) == 4    # >= 1 per device


def test_block_vmap_equals_vmap_and_runs_a_block_of_one_unbatched():
  # Nested in_axes with None (unmapped) and axis 1 (the stacked layers' layout), a tuple of
  # out_axes: the same values as jax.vmap for blocks of 1 and 3; for the block of one the
  # function sees the item itself, not a batch (called eagerly here: a concrete array).
  seen = []

  def fn(tree, scale, b):
    seen.append((tree["w"].shape, isinstance(tree["w"], jax.core.Tracer)))
    return {"w": tree["w"] * scale + b, "u": tree["u"].sum()}, b * 2

  in_axes = ({"w": 1, "u": 0}, None, 0)
  out_axes = ({"w": 1, "u": 0}, 0)
  for block in (1, 3):
    tree = {"w": jnp.arange(2.0 * block * 4).reshape(2, block, 4),
            "u": jnp.arange(block * 5.0).reshape(block, 5)}
    b = jnp.arange(block * 4.0).reshape(block, 4)
    seen.clear()
    got = parallel.block_vmap(fn, in_axes, out_axes)(tree, 3.0, b)
    assert seen == [((2, 4), block > 1)], seen
    want = jax.vmap(fn, in_axes, out_axes)(tree, 3.0, b)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(g, w)
