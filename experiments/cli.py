"""Shared plumbing for the absl entry points: one-line flag errors, list-flag parsing, logging.

A bad flag ends the program with one line on stderr, `error: --flag: what is allowed`, exit
status 2, no traceback and nothing written. Progress goes to absl logging (stderr); results
(tables, the files written) are printed to stdout.
"""
from __future__ import annotations

import logging
import sys
import math
from typing import Callable, Sequence

from absl import app, flags
from absl import logging as absl_logging

from initjax.errors import ConfigError


class UsageError(Exception):
  """A flag value is not allowed; the message names the flag and what is allowed."""

  def __init__(self, flag: str, message: str):
    super().__init__(f"--{flag}: {message}")
    self.flag = flag


def _exit_with(message: str) -> None:
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  raise SystemExit(2)


_HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def _parse_flags(argv: list[str]) -> list[str]:
  argv = [argv[0]] + ["--help" if a == "-h" else a for a in argv[1:]]
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _exit_with(str(e).splitlines()[0])
  except SystemExit:
    # absl prints the help and exits with status 1; asking for help is not an error.
    if any(a.split("=")[0] in _HELP_FLAGS for a in argv[1:]):
      raise SystemExit(0) from None
    raise
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
    except ConfigError as e:
      _exit_with(f"--{e.field}: {e.message}")

  # JAX logs at INFO that it found no TPU; that is noise on CPU and GPU machines.
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  absl_logging.set_verbosity(absl_logging.INFO)
  app.run(wrapped, flags_parser=_parse_flags)


def _parse_numbers(flag: str, values: Sequence[str] | None, convert: Callable, what: str,
                   ok: Callable[[float], bool], requirement: str, allow_empty: bool) -> list:
  out = []
  for v in values or []:
    try:
      x = convert(v)
    except ValueError:
      raise UsageError(flag, f"{v!r} is not {what}") from None
    if not ok(x):
      raise UsageError(flag, f"values must be {requirement}; got {v}")
    out.append(x)
  if not out and not allow_empty:
    raise UsageError(flag, "needs at least one value")
  return out


def parse_floats(flag: str, values: Sequence[str] | None, *, positive: bool = False,
                 allow_empty: bool = False) -> list[float]:
  return _parse_numbers(flag, values, float, "a number", (lambda x: x > 0) if positive else
                        (lambda x: True), "> 0", allow_empty)


def parse_ints(flag: str, values: Sequence[str] | None, *, minimum: int = 1) -> list[int]:
  return _parse_numbers(flag, values, int, "an integer", lambda x: x >= minimum,
                        f"integers >= {minimum}", False)


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


def parse_learning_rates(entries: Sequence[str], optimizers: Sequence[str],
                         known: Sequence[str]) -> tuple[tuple[str, tuple[float, ...]], ...]:
  """Parses --learning_rates entries: "OPT:LR" (for optimizer OPT) or "LR" (for every optimizer).

  Several entries may name the same optimizer (a learning-rate sweep). Optimizers without an
  entry are left out (they get their default). `known` are all optimizer names.
  """
  per_opt: dict[str, list[float]] = {}
  for entry in entries:
    entry = entry.strip()
    if not entry:
      continue
    names = list(optimizers)
    value = entry
    if ":" in entry:
      name, value = (s.strip() for s in entry.split(":", 1))
      if name not in known:
        raise UsageError("learning_rates", f"unknown optimizer {name!r} in {entry!r}; allowed: "
                         f"{', '.join(known)}")
      if name not in optimizers:
        raise UsageError("learning_rates", f"optimizer {name!r} is not in --optimizers "
                         f"({', '.join(optimizers)})")
      names = [name]
    try:
      lr = float(value)
    except ValueError:
      raise UsageError("learning_rates", f"{entry!r} is not LR or OPTIMIZER:LR with LR a "
                       "number") from None
    if not (math.isfinite(lr) and lr > 0):
      raise UsageError("learning_rates", f"learning rates must be finite numbers > 0; got {value}")
    for name in names:
      if lr not in per_opt.setdefault(name, []):
        per_opt[name].append(lr)
  return tuple((o, tuple(per_opt[o])) for o in optimizers if o in per_opt)


def print_report(output_dir: str, config, allow_partial: bool = False) -> int:
  """`report.write_report`, then prints the summary table and the files written, or lists the
  missing points on stderr. Returns the exit status: 1 when points are missing (and not
  `allow_partial`), else 0."""
  from initjax.sweep import report  # pylint: disable=import-outside-toplevel
  from initjax.sweep.summary import format_summary_table  # pylint: disable=import-outside-toplevel
  paths, table, missing = report.write_report(output_dir, config, allow_partial)
  if missing:
    message = report.describe_missing(missing, output_dir, config)
    sys.stderr.write(("warning: " if allow_partial else "error: ") + message + "\n")
    sys.stderr.flush()
    if not allow_partial:
      return 1
  print(format_summary_table(table), flush=True)
  print("wrote " + ", ".join(paths.values()), flush=True)
  return 0
