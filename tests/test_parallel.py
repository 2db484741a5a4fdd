"""initjax.parallel: the leading axis spread over (fake) devices gives the same results as one
device; memory, device selection."""
import os
import subprocess
import sys
import textwrap

import pytest

from initjax import parallel

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


def test_sharded_on_four_fake_devices_equals_one_device():
  code = textwrap.dedent("""
      import jax, jax.numpy as jnp, numpy as np
      from initjax import parallel
      assert jax.local_device_count() == 4, jax.devices()
      def fn(keys):
        return jax.vmap(lambda k: jnp.sum(jax.random.normal(k, (50, 50)) ** 2))(keys)
      keys = jax.random.split(jax.random.key(0), 8)
      one = jax.jit(fn)(keys)
      mesh = parallel.make_mesh()
      four = parallel.sharded(fn, mesh)(keys)
      assert len(four.sharding.device_set) == 4, four.sharding
      np.testing.assert_allclose(np.asarray(one), np.asarray(four), rtol=1e-6)
      two = parallel.sharded(fn, parallel.make_mesh(jax.devices()[:2]))(keys)
      np.testing.assert_allclose(np.asarray(one), np.asarray(two), rtol=1e-6)
      # In rounds of 1 or 3 items per device (padded), with a replicated argument.
      add = parallel.sharded(lambda k, c: fn(k) + c, mesh, replicated=(1,))
      for block in (1, 3):
        out = parallel.run_in_rounds(add, keys, (jnp.float32(1.0),), block=block, mesh=mesh)
        assert out.shape == (8,)
        np.testing.assert_allclose(out, np.asarray(one) + 1.0, rtol=1e-6)
      print("ok")
  """)
  _run_on_four_fake_devices(code)


def test_bad_num_devices():
  with pytest.raises(ValueError, match="num_devices"):
    parallel.local_devices(1000)


def test_propagation_on_four_fake_devices_equals_one_device():
  code = textwrap.dedent("""
      import jax, numpy as np
      from initjax import propagation
      assert jax.local_device_count() == 4
      spec = propagation.NetworkSpec(input_dim=8, width=12, depth=5, batch_size=6)
      kw = dict(weight_init="normal", scales=(0.02, 1.0), num_seeds=5)
      one = propagation.measure(jax.random.key(0), spec, num_devices=1, **kw)
      four = propagation.measure(jax.random.key(0), spec, **kw)
      for q in propagation.QUANTITIES:
        np.testing.assert_allclose(one[q], four[q], rtol=1e-5, atol=1e-5, err_msg=q)
      print("ok")
  """)
  _run_on_four_fake_devices(code)


def test_chunk_size_fits_memory_and_devices():
  cpu = [type("Device", (), {"platform": "cpu"})()] * 4
  assert parallel.chunk_size(100, 1e6, cpu, available_bytes=1e12) == 100
  assert parallel.chunk_size(10, 1e6, cpu, available_bytes=1e12) == 12   # padded to 4s
  assert parallel.chunk_size(100, 1e6, cpu, available_bytes=2.2e7) == 8  # 11 fit -> 8
  assert parallel.chunk_size(100, 1e9, cpu, available_bytes=1e6) == 4    # >= 1 per device
