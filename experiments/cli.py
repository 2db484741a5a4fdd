"""Shared plumbing for the absl entry points: one-line flag errors and list-flag parsing.

A bad flag ends the program with one line on stderr, `error: --flag: what is allowed`, exit
status 2, no traceback and nothing written.
"""
from __future__ import annotations

import logging
import sys
from typing import Callable, Sequence

from absl import app, flags


class UsageError(Exception):
  """A flag value is not allowed; the message names the flag and what is allowed."""

  def __init__(self, flag: str, message: str):
    super().__init__(f"--{flag}: {message}")
    self.flag = flag


def _exit_with(message: str) -> None:
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  raise SystemExit(2)


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _exit_with(str(e).splitlines()[0])
  return []  # unreachable


def run(main: Callable[[list[str]], None]) -> None:
  """`absl.app.run(main)` with one-line errors for bad flags (absl's own and `UsageError`)."""

  def wrapped(argv):
    if len(argv) > 1:
      _exit_with(f"unexpected positional arguments {argv[1:]}; all options are --flags")
    try:
      return main(argv)
    except UsageError as e:
      _exit_with(str(e))

  # JAX logs at INFO that it found no TPU; that is noise on CPU and GPU machines.
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  app.run(wrapped, flags_parser=_parse_flags)


def parse_floats(flag: str, values: Sequence[str] | None, *, positive: bool = False,
                 allow_empty: bool = False) -> list[float]:
  out = []
  for v in values or []:
    try:
      x = float(v)
    except ValueError:
      raise UsageError(flag, f"{v!r} is not a number") from None
    if positive and not x > 0:
      raise UsageError(flag, f"values must be > 0; got {v}")
    out.append(x)
  if not out and not allow_empty:
    raise UsageError(flag, "needs at least one value")
  return out


def parse_ints(flag: str, values: Sequence[str] | None, *, minimum: int = 1) -> list[int]:
  out = []
  for v in values or []:
    try:
      x = int(v)
    except ValueError:
      raise UsageError(flag, f"{v!r} is not an integer") from None
    if x < minimum:
      raise UsageError(flag, f"values must be integers >= {minimum}; got {v}")
    out.append(x)
  if not out:
    raise UsageError(flag, "needs at least one value")
  return out


def parse_choices(flag: str, values: Sequence[str] | None, allowed: Sequence[str],
                  *, allow_empty: bool = False) -> list[str]:
  out = [v.strip() for v in (values or []) if v.strip()]
  for v in out:
    if v not in allowed:
      raise UsageError(flag, f"unknown value {v!r}; allowed: {', '.join(sorted(allowed))}")
  if not out and not allow_empty:
    raise UsageError(flag, f"needs at least one of: {', '.join(sorted(allowed))}")
  return out


def check_min(flag: str, value: int | float, minimum: int | float) -> None:
  if value < minimum:
    raise UsageError(flag, f"must be >= {minimum}; got {value}")


def output_dir(flag: str, path: str) -> str:
  """Creates and checks the output directory, or fails with a UsageError."""
  from initjax.results import ensure_writable_dir  # pylint: disable=import-outside-toplevel
  try:
    return ensure_writable_dir(path)
  except ValueError as e:
    raise UsageError(flag, str(e)) from None
