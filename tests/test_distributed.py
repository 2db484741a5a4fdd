"""initjax.distributed: task splits, Slurm defaults, jax.distributed start-up."""
import pytest

from initjax.core import distributed


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
