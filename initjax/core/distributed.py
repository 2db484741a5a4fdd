"""Work past one process: multi-host start-up, batch-job task splits, preemption signals.

Nothing here schedules anything: `jax.distributed.initialize` joins hosts, a batch system
(Slurm array jobs, or `scripts/run_local.sh`) runs one process per task, and each process takes
its deterministic share of the work (`split_for_task`). `raise_on_signals`/`check_interrupted`
turn SIGINT/SIGTERM into a stop between units of work. Spreading work over the devices of one
process is `initjax.parallel`'s job.
"""
from __future__ import annotations

import os
import signal
from typing import Callable, Sequence, TypeVar

import jax
from absl import logging

T = TypeVar("T")


# ------------------------------------------------------------------------------------------------
# Hosts.

def maybe_initialize(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> bool:
  """Calls `jax.distributed.initialize` when asked to, or when a cluster is detected.

  With explicit arguments they are passed through. Without, JAX's own cluster detection (Slurm
  with more than one task, Cloud TPU pods, MPI) is used when the environment shows a multi-process
  job: `SLURM_NTASKS` > 1 or `JAX_COORDINATOR_ADDRESS` set. Returns True when initialized.
  Call it before anything that starts JAX's backends (computations, `jax.devices()`).
  """
  explicit = coordinator_address or (num_processes and num_processes > 1)
  detected = (int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1
              or bool(os.environ.get("JAX_COORDINATOR_ADDRESS")))
  if not explicit and not detected:
    return False
  kwargs = {}
  if coordinator_address:
    kwargs["coordinator_address"] = coordinator_address
  if num_processes:
    kwargs["num_processes"] = num_processes
  if process_id is not None and process_id >= 0:
    kwargs["process_id"] = process_id
  jax.distributed.initialize(**kwargs)
  # Logged without asking for devices: that would start the backends.
  logging.info("jax.distributed initialized (%s)", ", ".join(f"{k}={v}" for k, v in kwargs.items())
           or "detected from the cluster environment")
  return True


# ------------------------------------------------------------------------------------------------
# Batch jobs.

def task_from_env(task_index: int | None, num_tasks: int | None) -> tuple[int, int]:
  """(task_index, num_tasks): the flags when given, else Slurm array variables, else (0, 1).

  `SLURM_ARRAY_TASK_ID` counts from `SLURM_ARRAY_TASK_MIN` (usually 0); `SLURM_ARRAY_TASK_COUNT`
  is the number of tasks. Inside a multi-process JAX job (no array), each process is a task.
  """
  env = os.environ
  if num_tasks is None:
    if "SLURM_ARRAY_TASK_COUNT" in env:
      num_tasks = int(env["SLURM_ARRAY_TASK_COUNT"])
    else:
      num_tasks = jax.process_count()
  if task_index is None:
    if "SLURM_ARRAY_TASK_ID" in env:
      task_index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
    else:
      task_index = jax.process_index() if num_tasks == jax.process_count() else 0
  if num_tasks < 1:
    raise ValueError(f"num_tasks must be >= 1; got {num_tasks}")
  if not 0 <= task_index < num_tasks:
    raise ValueError(f"task_index must be in [0, {num_tasks - 1}]; got {task_index}")
  return task_index, num_tasks


def split_for_task(items: Sequence[T], task_index: int, num_tasks: int,
                   cost: Callable[[T], float] | None = None) -> list[T]:
  """The deterministic share of `items` for one task.

  Without `cost`, items are dealt round-robin (item i goes to task i mod num_tasks). With
  `cost`, items are assigned greedily, most expensive first, to the least-loaded task (ties to
  the lowest task index), which balances wall time; the assignment depends only on the items.
  Every item goes to exactly one task.
  """
  if cost is None:
    return [item for i, item in enumerate(items) if i % num_tasks == task_index]
  order = sorted(range(len(items)), key=lambda i: (-cost(items[i]), i))
  load = [0.0] * num_tasks
  owner = {}
  for i in order:
    t = min(range(num_tasks), key=lambda j: (load[j], j))
    owner[i] = t
    load[t] += cost(items[i])
  return [items[i] for i in range(len(items)) if owner[i] == task_index]


class Interrupted(KeyboardInterrupt):
  """Raised by `check_interrupted` after SIGINT or SIGTERM (see `raise_on_signals`)."""

  def __init__(self, signum: int):
    super().__init__(f"interrupted by {signal.Signals(signum).name}")
    self.signum = signum


_SIGNAL = {"signum": None}  # the first SIGINT/SIGTERM received, once `raise_on_signals` is on


def _note_signal(signum, frame):
  del frame
  if _SIGNAL["signum"] is not None:  # a second signal: stop at once
    raise Interrupted(signum)
  _SIGNAL["signum"] = signum
  # os.write, not print: the main thread may be inside a write to sys.stderr.
  os.write(2, f"{signal.Signals(signum).name}: stopping once the work in progress is saved "
              "(send it again to stop at once)\n".encode())


def raise_on_signals(signums: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
  """SIGINT (Ctrl-C) and SIGTERM (a batch system's time limit, `scancel`, `kill`) stop the
  program at the next `check_interrupted()`, which raises `Interrupted` (a KeyboardInterrupt);
  a second signal raises at once.

  Noting the signal rather than raising in the handler keeps the exception where the program
  can act on it: Python runs a handler between any two bytecodes of the main thread, also
  inside garbage-collection callbacks and __del__ methods, which swallow exceptions; and a
  computation running in XLA finishes first anyway. Callers check between units of work, never
  in the middle of writing a file.
  """
  for signum in signums:
    signal.signal(signum, _note_signal)


def interrupt_requested() -> bool:
  """Whether a signal installed by `raise_on_signals` has arrived (without raising)."""
  return _SIGNAL["signum"] is not None


def check_interrupted() -> None:
  """Raises `Interrupted` if a signal installed by `raise_on_signals` has arrived."""
  if _SIGNAL["signum"] is not None:
    raise Interrupted(_SIGNAL["signum"])
