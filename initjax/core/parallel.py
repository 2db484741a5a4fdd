"""Spreading independent items (networks, random seeds) over the local devices: the one place.

Training (`initjax.batch_training`), measurement (`initjax.propagation`, `initjax.probe`) and
anything else that maps a function over a batch of independent items hand this module a jitted
function of one *block* of items and get it run over the local devices:

  * `workers(devices)`: who runs the blocks: one thread per device, and on a CPU that JAX shows
    as one device (its default) one thread per core (`cpu_cores`, the one place that counts
    them): XLA runs a program on about one core, so several calls of one program from several
    threads keep every core busy.
  * `run_blocks(fn, blocks, workers)`: block i runs on worker i mod W, W blocks at a time, every
    device running the same program compiled once for it (`compiled_for`). A block's results
    therefore never depend on how many devices there are: 1, 2 or N devices give identical
    numbers (a program partitioned across devices does not: XLA rounds differently there).
  * `chunk_size`: the one place that turns available memory into a number of items per call;
    each kernel says how many bytes one item needs.

Hosts are separate processes, each with its own share of the work (`initjax.distributed`).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import math
import os
import threading
from typing import Any, Callable, ContextManager, Sequence

import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import numpy as np

# ------------------------------------------------------------------------------------------------
# Cores, devices and workers.

def cpu_cores() -> int:
  """The CPU cores this process may run on (Slurm's --cpus-per-task, taskset, cgroups)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def local_devices(num_devices: int | None = None) -> list:
  """The first `num_devices` local devices (all when None or 0)."""
  devices = jax.local_devices()
  if num_devices:
    if num_devices < 0 or num_devices > len(devices):
      raise ValueError(f"num_devices must be between 0 (all) and {len(devices)} (the local "
                       f"devices); got {num_devices}")
    devices = devices[:num_devices]
  return devices


def workers(devices: Sequence[Any] | None = None, threads: int | None = None, *,
            uses_lapack: bool = False) -> list:
  """The device of every worker thread: one per device, or `threads` (default: one per core)
  on a lone CPU device.

  uses_lapack: the program calls LAPACK (the QR of an orthogonal initializer, an SVD). Then CPU
  devices get one worker in all: with jaxlib 0.10.2, two threads running such programs on the
  CPU were seen to deadlock (every thread waiting, no CPU in use), on one CPU device
  (`propagation.measure(weight_init="orthogonal")` at depth 8, width 32, 16 seeds, 2 cores:
  every time) and on two (`jax_num_cpu_devices=2`; the Jacobian spectra of 16 ReLU networks of
  width 256 with orthogonal weights). One program still uses the cores for its large products
  (XLA's intra-op threads). Set OPENBLAS_NUM_THREADS=1 before Python starts for such programs:
  LAPACK's own threads made a 160 x 160 SVD 90x slower on a loaded 2-core machine (measured).
  """
  devices = list(devices or jax.local_devices())
  if uses_lapack and all(d.platform == "cpu" for d in devices):
    return devices[:1]
  if len(devices) == 1 and devices[0].platform == "cpu":
    return devices * max(1, int(threads or cpu_cores()))
  return devices


_LAPACK_PRIMITIVES = ("qr", "svd", "eig", "eigh", "lu", "cholesky", "householder_product",
                      "triangular_solve", "schur", "hessenberg", "tridiagonal",
                      "tridiagonal_solve", "geqrf", "geqp3", "orgqr")


def _jaxpr_calls_lapack(jaxpr) -> bool:
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in _LAPACK_PRIMITIVES:
      return True
    for sub in jax_core.jaxprs_in_params(eqn.params):
      if _jaxpr_calls_lapack(getattr(sub, "jaxpr", sub)):
        return True
  return False


def calls_lapack(fn: Callable, *args: Any) -> bool:
  """Whether `fn(*args)` runs a linear-algebra decomposition (QR, SVD, eigh, ...): on a CPU that
  is LAPACK, and the program needs `workers(uses_lapack=True)`. Read from its jaxpr (traced,
  nothing runs), sub-jaxprs of scans, conditionals and custom derivatives included."""
  return _jaxpr_calls_lapack(jax.make_jaxpr(fn)(*args).jaxpr)


def default_block(num_items: int, work: Sequence[Any]) -> int:
  """Networks per worker and call when the caller does not choose: on CPU workers one, on
  accelerators the items spread evenly over the workers (vmapped).

  A CPU core runs one network's matmuls at least as fast as a vmapped block of them, so a CPU
  gains from its cores (one worker each), not from batching. Measured with
  `batch_training.run_networks` (8 networks, 2-core CPU, momentum SGD) against the block of 4:
  +20% at width 100 (depth 30), +58% for the 6-layer CNN, -1% at width 32.
  """
  if work and all(d.platform == "cpu" for d in work):
    return 1
  return max(1, -(-int(num_items) // max(1, len(work))))


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

def pad_leading(tree: Any, multiple: int) -> tuple[Any, int]:
  """Pads the leading axis of every leaf to a multiple of `multiple` by repeating the last item;
  returns (padded tree, original length)."""
  b = jax.tree.leaves(tree)[0].shape[0]
  pad = (-b) % multiple
  if pad:
    tree = jax.tree.map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)], axis=0), tree)
  return tree, b


def split_leading(tree: Any, size: int) -> list[Any]:
  """The leading axis of every leaf cut into consecutive blocks of `size` (the last may be
  shorter: pad first with `pad_leading` for equal blocks)."""
  b = jax.tree.leaves(tree)[0].shape[0]
  return [jax.tree.map(lambda a, s=s: a[s:s + size], tree) for s in range(0, b, size)]


# ------------------------------------------------------------------------------------------------
# Running blocks on the workers.

_COMPILED: dict[Any, Any] = {}
_COMPILE_LOCKS: dict[Any, threading.Lock] = {}
_LOCK = threading.Lock()


def _signature(args: tuple) -> tuple:
  leaves, treedef = jax.tree.flatten(args)
  return treedef, tuple((tuple(jnp.shape(a)), str(getattr(a, "dtype", type(a).__name__)))
                        for a in leaves)


def compiled_for(fn: Callable, device: Any, args: tuple,
                 lower_context: Callable[[], ContextManager] | None = None) -> Callable:
  """`fn` (a jitted function) compiled for `device` and the shapes of `args`, once per process
  (threads asking at the same time wait for one compilation)."""
  key = (fn, device, _signature(args))
  with _LOCK:
    lock = _COMPILE_LOCKS.setdefault(key, threading.Lock())
  with lock:
    if key not in _COMPILED:
      with (lower_context() if lower_context else contextlib.nullcontext()):
        lowered = fn.lower(*args)
      _COMPILED[key] = lowered.compile()
    return _COMPILED[key]


def run_blocks(fn: Callable, blocks: Sequence[tuple], worker_devices: Sequence[Any],
               shared: Any = None,
               lower_context: Callable[[], ContextManager] | None = None) -> list[Any]:
  """`fn(*block, shared)` (or `fn(*block)` without `shared`) for every block, block i on worker
  i mod W (W = len(worker_devices)), W at a time, one thread per worker. Every block is placed on
  its worker's device first (a no-op where it already is), so a block's outputs stay on that
  device for a next call. Returns the outputs in block order."""
  shared_on = {}
  for device in dict.fromkeys(worker_devices):
    shared_on[device] = None if shared is None else jax.device_put(shared, device)

  def run(i):
    device = worker_devices[i % len(worker_devices)]
    args = jax.device_put(tuple(blocks[i]), device)
    if shared is not None:
      args = args + (shared_on[device],)
    return jax.block_until_ready(compiled_for(fn, device, args, lower_context)(*args))

  if len(worker_devices) == 1 or len(blocks) == 1:
    return [run(i) for i in range(len(blocks))]
  with concurrent.futures.ThreadPoolExecutor(len(worker_devices)) as pool:
    return list(pool.map(run, range(len(blocks))))


def block_vmap(fn: Callable, in_axes: Any = 0, out_axes: Any = 0) -> Callable:
  """`jax.vmap(fn, in_axes, out_axes)`, except that a block of one item runs `fn` unbatched:
  the mapped axes are squeezed going in and put back coming out (the same values; no vmap
  axis of size 1 in the program).

  XLA's CPU code for a vmapped block of one is slower than for the one item alone: training 8
  LSTMs (width 64, 40 steps, batch 100, Adam; two worker threads on a 2-core CPU) ran 1.45x
  faster unbatched than vmapped with a block of one (measured, jaxlib 0.10.2). A CPU trains one
  network per worker (`default_block`), so this is the common case.
  """
  batched = jax.vmap(fn, in_axes=in_axes, out_axes=out_axes)
  mapped = lambda x: x is None   # noqa: E731  (None: an unmapped argument, not an empty tree)

  def per_leaf(axes, tree, op):
    if not isinstance(axes, (tuple, list)):      # one axis for the whole argument list
      axes = (axes,) * len(tree)
    return tuple(jax.tree.map(lambda ax, sub: sub if ax is None else jax.tree.map(
        lambda leaf: op(leaf, ax), sub), a, t, is_leaf=mapped) for a, t in zip(axes, tree))

  def sizes(axes, args):
    out = []
    per_leaf(axes, args, lambda leaf, ax: out.append(jnp.shape(leaf)[ax]) or leaf)
    return out

  def run(*args):
    if set(sizes(in_axes, args)) != {1}:
      return batched(*args)
    out = fn(*per_leaf(in_axes, args, lambda leaf, ax: jnp.squeeze(leaf, ax)))
    return per_leaf((out_axes,), (out,), lambda leaf, ax: jnp.expand_dims(leaf, ax))[0]

  return run


@functools.lru_cache(maxsize=64)
def _items_program(one: Callable, chunk: int, shared: bool) -> Callable:
  @jax.jit
  def run(items, *rest):
    fn = (lambda item: one(item, *rest)) if shared else one
    if chunk == 1:                      # a plain loop: no vmap axis of size 1
      return jax.lax.map(fn, items)
    return jax.lax.map(fn, items, batch_size=chunk)
  return run


def map_items(one: Callable, items: Any, *, chunk: int, worker_devices: Sequence[Any],
              shared: Any = None,
              lower_context: Callable[[], ContextManager] | None = None) -> Any:
  """`one(item)` (or `one(item, shared)`) for every item of `items` (a pytree, leading axis =
  items), as NumPy arrays with the same leading axis.

  Each worker maps `one` over its block of the items with `lax.map`, in vmapped chunks of
  `chunk` items (memory stays bounded for any number of items); every block is a whole number
  of chunks (the padding repeats the last item). An item's result depends on `chunk`, never on
  the number of workers. `one` should be a stable object (a module-level function, or one cached
  by its configuration): it keys the compiled program.
  """
  n = jax.tree.leaves(items)[0].shape[0]
  chunk = int(max(1, min(chunk, n)))
  per_block = -(-n // len(worker_devices))
  per_block += -per_block % chunk
  padded, _ = pad_leading(items, per_block)
  program = _items_program(one, chunk, shared is not None)
  outs = run_blocks(program, [(block,) for block in split_leading(padded, per_block)],
                    worker_devices, shared, lower_context)
  return jax.tree.map(lambda *parts: np.concatenate([np.asarray(p) for p in parts])[:n], *outs)
