"""initjax.distributed: task splits, Slurm defaults, and seed sharding over (fake) devices."""
import os
import subprocess
import sys
import textwrap

import pytest

from initjax import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_on_four_fake_devices(code):
  """Runs `code` in a fresh Python whose CPU shows up as 4 XLA devices; it must print ok."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=180, env=env, cwd=REPO)
  assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.parametrize("num_tasks", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("weighted", [False, True])
def test_split_for_task_is_a_deterministic_partition(num_tasks, weighted):
  items = [f"p{i}" for i in range(11)]
  cost = (lambda s: 1.0 + int(s[1:]) % 3) if weighted else None
  shares = [distributed.split_for_task(items, t, num_tasks, cost) for t in range(num_tasks)]
  flat = [x for share in shares for x in share]
  assert sorted(flat) == sorted(items)                # every item exactly once
  assert shares == [distributed.split_for_task(items, t, num_tasks, cost)
                    for t in range(num_tasks)]        # deterministic
  if weighted and num_tasks > 1:
    loads = [sum(cost(x) for x in s) for s in shares]
    assert max(loads) - min(loads) <= 3.0             # greedy: within one largest item


def test_task_from_env_uses_flags_then_slurm(monkeypatch):
  for var in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"):
    monkeypatch.delenv(var, raising=False)
  assert distributed.task_from_env(None, None) == (0, 1)
  assert distributed.task_from_env(2, 4) == (2, 4)
  monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
  monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "3")
  monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
  assert distributed.task_from_env(None, None) == (2, 4)
  assert distributed.task_from_env(0, None) == (0, 4)   # a flag wins over the environment
  with pytest.raises(ValueError, match="task_index"):
    distributed.task_from_env(4, 4)
  with pytest.raises(ValueError, match="num_tasks"):
    distributed.task_from_env(0, 0)


def test_no_distributed_initialize_without_a_cluster(monkeypatch):
  monkeypatch.delenv("SLURM_NTASKS", raising=False)
  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
  assert distributed.maybe_initialize() is False


def test_available_memory_is_positive():
  assert distributed.available_memory_bytes() > 1e8


def test_shard_over_seeds_on_four_fake_devices_equals_one_device():
  code = textwrap.dedent("""
      import jax, jax.numpy as jnp, numpy as np
      from initjax import distributed
      assert jax.local_device_count() == 4, jax.devices()
      def fn(keys):
        return jax.vmap(lambda k: jnp.sum(jax.random.normal(k, (50, 50)) ** 2))(keys)
      keys = jax.random.split(jax.random.key(0), 8)
      one = jax.jit(fn)(keys)
      mesh = distributed.seed_mesh()
      four = jax.jit(distributed.shard_over_seeds(fn, mesh))(keys)
      assert len(four.sharding.device_set) == 4, four.sharding
      np.testing.assert_allclose(np.asarray(one), np.asarray(four), rtol=1e-6)
      two = jax.jit(distributed.shard_over_seeds(fn, distributed.seed_mesh(2)))(keys)
      np.testing.assert_allclose(np.asarray(one), np.asarray(two), rtol=1e-6)
      print("ok")
  """)
  _run_on_four_fake_devices(code)


def test_bad_num_devices():
  with pytest.raises(ValueError, match="num_devices"):
    distributed.local_devices(1000)


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
