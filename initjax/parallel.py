"""Spreading a leading axis (networks, seeds) over the local devices: the one place for it.

Training (`initjax.training`) and measurement (`initjax.propagation`) both hand this module a
function whose leading axis is a batch of independent items (networks, or random seeds) and
get it back run over every local device:

  * a 1-D `Mesh` over the local devices with one axis, `BATCH_AXIS`;
  * `sharded(fn, mesh)`: `jax.jit(jax.shard_map(fn))`, each device running `fn` on its own
    contiguous block of the leading axis (arguments named in `replicated` go to every device
    whole);
  * `run_in_rounds`: pads the leading axis to whole rounds of `block` items per device, calls
    the sharded function round by round (so memory is bounded by one round), and returns NumPy
    arrays with the padding dropped.

A CPU is one XLA device unless told otherwise, and XLA runs one program on about one core, so
the entry points call `use_cpu_cores()` first: one CPU device per core (`cpu_cores`, the one
place that counts them). `chunk_size` is the one place that turns available memory into a
number of items per call; each kernel says how many bytes one item needs.

Hosts are separate processes, each with its own share of the work (`initjax.distributed`).
"""
from __future__ import annotations

import functools
import math
import os
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

BATCH_AXIS = "batch"


# ------------------------------------------------------------------------------------------------
# Cores and devices.

def cpu_cores() -> int:
  """The CPU cores this process may run on (Slurm's --cpus-per-task, taskset, cgroups)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def forced_cpu_device_count() -> int | None:
  """The CPU device count that XLA_FLAGS forces (--xla_force_host_platform_device_count=N)."""
  found = re.findall(r"--xla_force_host_platform_device_count=(\d+)",
                     os.environ.get("XLA_FLAGS", ""))
  return int(found[-1]) if found else None


def use_cpu_cores(num_devices: int | None = None) -> int:
  """Exposes the host CPU as `num_devices` XLA devices (default: one per core, `cpu_cores`).

  XLA runs one program on about one CPU core; with one device per core, the sharded functions
  of this module keep every core busy. Must be called before any JAX computation (JAX fixes the
  device count when its backend starts); afterwards it changes nothing. When XLA_FLAGS already
  forces a device count (`--xla_force_host_platform_device_count=N`, as the tests do), that count
  is kept: pick among those devices with `local_devices`. Only the CPU backend is affected; GPUs
  and TPUs stay as they are.

  Returns:
    The number of local devices JAX will use.
  """
  if forced_cpu_device_count() is None:
    try:
      jax.config.update("jax_num_cpu_devices", int(num_devices or cpu_cores()))
    except RuntimeError:  # backend already initialized: keep what it has
      pass
  return len(jax.local_devices())


def local_devices(num_devices: int | None = None) -> list:
  """The first `num_devices` local devices (all when None or 0)."""
  devices = jax.local_devices()
  if num_devices:
    if num_devices < 1 or num_devices > len(devices):
      raise ValueError(f"num_devices must be between 1 and {len(devices)} (the local devices); "
                       f"got {num_devices}")
    devices = devices[:num_devices]
  return devices


def make_mesh(devices: Sequence[Any] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: all local devices) whose one axis is `BATCH_AXIS`."""
  return Mesh(np.array(list(devices or jax.local_devices())), (BATCH_AXIS,))


# ------------------------------------------------------------------------------------------------
# Memory.

def available_memory_bytes(device=None) -> float:
  """Memory one call may use: the accelerator's free memory, or the host's available RAM.

  GPU/TPU: bytes_limit - bytes_in_use from `device.memory_stats()`. CPU: MemAvailable from
  /proc/meminfo (Linux), else physical pages; falls back to 4 GB when nothing is known.
  """
  device = device or jax.local_devices()[0]
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    stats = None
  if stats and stats.get("bytes_limit"):
    return float(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  try:
    with open("/proc/meminfo", encoding="ascii") as fh:
      for line in fh:
        if line.startswith("MemAvailable:"):
          return float(line.split()[1]) * 1024.0
  except OSError:
    pass
  try:
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
  except (ValueError, OSError, AttributeError):
    return 4.0e9


def chunk_size(num_items: int, bytes_per_item: float, devices: Sequence[Any],
               available_bytes: float | None = None, fraction: float = 0.5) -> int:
  """Items per call so that they fit in `fraction` of the available memory.

  Accelerators each hold their share of a call (available = per-device free memory x devices);
  CPU devices share the host's RAM (available = MemAvailable). The result is a multiple of the
  device count, at least one item per device, and at most `num_items` rounded up to it.
  """
  n = len(devices)
  if available_bytes is None:
    available_bytes = available_memory_bytes(devices[0])
    if devices[0].platform != "cpu":
      available_bytes *= n
  fits = max(1, int(available_bytes * fraction // max(bytes_per_item, 1.0)))
  size = min(fits, num_items)
  return max(n, n * math.floor(size / n)) if size < num_items else size + (-size % n)


# ------------------------------------------------------------------------------------------------
# Running a leading axis over the devices.

def sharded(fn: Callable, mesh: Mesh, replicated: Sequence[int] = ()) -> Callable:
  """`jax.jit(jax.shard_map(fn))`: each device runs `fn` on its contiguous block of the leading
  axis of every argument and output; the positional arguments in `replicated` go whole to every
  device. Results equal `fn` on the whole batch (items never interact)."""
  def spec(i):
    return PartitionSpec() if i in replicated else PartitionSpec(BATCH_AXIS)

  @functools.wraps(fn)
  def run(*args):
    in_specs = tuple(spec(i) for i in range(len(args)))
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=PartitionSpec(BATCH_AXIS),
                         check_vma=False)(*args)

  return jax.jit(run)


def pad_leading(tree: Any, multiple: int) -> tuple[Any, int]:
  """Pads the leading axis of every leaf to a multiple of `multiple` by repeating the last item;
  returns (padded tree, original length)."""
  b = jax.tree.leaves(tree)[0].shape[0]
  pad = (-b) % multiple
  if pad:
    tree = jax.tree.map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)], axis=0), tree)
  return tree, b


def run_in_rounds(fn: Callable, batched: Any, replicated: Any = (), *, block: int,
                  mesh: Mesh) -> Any:
  """Runs `fn(batched_round, *replicated)` over the leading axis of `batched` in rounds of
  `block` items per device, returning the outputs as NumPy arrays with leading axis B.

  `fn` is a `sharded(...)` function over `mesh` whose first argument is the batched pytree and
  whose other arguments (`replicated`, a tuple) are the same for every round. B is padded to
  whole rounds by repeating the last item; the padding is dropped from the outputs.
  """
  per_round = block * mesh.size
  padded, b = pad_leading(batched, per_round)
  total = jax.tree.leaves(padded)[0].shape[0]
  outs = []
  for start in range(0, total, per_round):
    part = jax.tree.map(lambda a, s=start: a[s:s + per_round], padded)
    outs.append(jax.tree.map(np.asarray, fn(part, *replicated)))
  return jax.tree.map(lambda *parts: np.concatenate(parts)[:b], *outs)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every array of `tree` on every device of `mesh` once (the sharded functions then
  find it there instead of copying it at every call)."""
  return jax.device_put(tree, jax.sharding.NamedSharding(mesh, PartitionSpec()))
