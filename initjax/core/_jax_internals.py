"""PRIVATE JAX INTERNALS: the only module of initjax that touches `jax._src`.

`unrolled_threefry_on_cpu` lowers jax.random's Threefry-2x32 hash with its unrolled rule on the
CPU while a program is lowered. JAX lowers it on the CPU as a rolled loop of 5 steps (smaller
programs, but every step is a pass over memory); on accelerators it uses the unrolled form, one
fused kernel. Both compute the same bits; the unrolled one draws the propagation experiment's
weights with about 25% less RNG time (scripts/benchmark.py).

If the internals are not where we expect, the block runs with JAX's default lowering (same
results, a little slower) and `internals_available()` is False; tests/test_jax_internals.py
fails loudly in that case, so a JAX upgrade that moves them is noticed.
"""
from __future__ import annotations

import contextlib
import threading

_LOCK = threading.Lock()


def _threefry_rules():
  """(primitive, rolled CPU rule, unrolled rule, mlir module), or None if JAX moved them."""
  try:
    from jax._src.interpreters import mlir  # pylint: disable=import-outside-toplevel
    from jax._src.random import threefry2x32 as tf  # pylint: disable=import-outside-toplevel
    return (tf.threefry2x32_p, tf._threefry2x32_cpu_lowering_rule,  # pylint: disable=protected-access
            tf._threefry2x32_lowering_rule, mlir)  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return None


def internals_available() -> bool:
  """Whether the private Threefry lowering rules are where this module expects them."""
  return _threefry_rules() is not None


@contextlib.contextmanager
def unrolled_threefry_on_cpu():
  """Programs lowered inside the block use the unrolled Threefry rule on the CPU."""
  rules = _threefry_rules()
  if rules is None:
    yield
    return
  prim, rolled, unrolled, mlir = rules
  with _LOCK:
    mlir.register_lowering(prim, unrolled, platform="cpu")
    try:
      yield
    finally:
      mlir.register_lowering(prim, rolled, platform="cpu")
