"""Shared plumbing for the absl entry points: one-line flag errors, list-flag parsing, logging,
the output directory's lock.

A bad flag ends the program with one line on stderr, `error: --flag: what is allowed`, exit
status 2, no traceback and nothing written. A value listed twice in a list flag is dropped (the
first is kept) with a one-line warning. Progress goes to absl logging (stderr); results (tables,
the files written) are printed to stdout.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from typing import Any, Callable, Sequence

from absl import app, flags
from absl import logging as absl_logging

from initjax.core.errors import ConfigError


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
    lines = str(e).splitlines()
    if "config file" in lines[0] and len(lines) > 1:   # ml_collections adds the traceback
      _exit_with(f"--config: {_last_line(e)}")
    _exit_with(lines[0])
  except (AttributeError, KeyError, OSError, TypeError, ValueError) as e:
    if any(a.startswith("--config") for a in argv[1:]):   # a --config.NAME the file lacks
      _exit_with(f"--config: {_last_line(e)}")
    raise
  except SystemExit:
    # absl prints the help and exits with status 1; asking for help is not an error.
    if any(a.split("=")[0] in _HELP_FLAGS for a in argv[1:]):
      raise SystemExit(0) from None
    raise
  return []  # unreachable


def define_compilation_cache_flag() -> None:
  """--compilation_cache_dir, for the entry points that compile: `run` then turns on JAX's
  persistent compilation cache before `main`, so that a rerun, a resumed run or another task of
  a split loads its programs instead of compiling them again."""
  flags.DEFINE_string(
      "compilation_cache_dir", "", "JAX's persistent compilation cache (default: "
      "$JAX_COMPILATION_CACHE_DIR, else jax_cache in the data cache: --data_dir, "
      "$INITJAX_DATA_DIR or ~/.cache/initjax); 'none': off.")


def compilation_cache_dir() -> str | None:
  """The directory --compilation_cache_dir names (None: off, or no such flag)."""
  if "compilation_cache_dir" not in flags.FLAGS:
    return None
  value = flags.FLAGS.compilation_cache_dir.strip()
  if value.lower() == "none":
    return None
  if not value:
    value = os.environ.get("JAX_COMPILATION_CACHE_DIR", "")
  if not value:
    from initjax.training import data  # pylint: disable=import-outside-toplevel
    data_dir = flags.FLAGS.data_dir if "data_dir" in flags.FLAGS else ""
    value = os.path.join(data_dir or data.default_data_dir(), "jax_cache")
  return os.path.abspath(os.path.expanduser(value))


def enable_compilation_cache() -> str | None:
  """Turns on the persistent cache in `compilation_cache_dir()` for every program (however
  quick to compile); a directory that cannot be made or written to turns it off with one
  warning (rather than JAX's warning at every compilation): the cache saves time, it never
  changes a result."""
  from initjax.core.results import ensure_writable_dir  # pylint: disable=import-outside-toplevel
  path = compilation_cache_dir()
  if path is None:
    return None
  try:
    ensure_writable_dir(path)
  except ValueError as e:
    absl_logging.warning("compilation cache off: %s (--compilation_cache_dir=none turns it off "
                         "without this line)", e)
    return None
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path


CONFIG_HELP = ("A named configuration: an ml_collections config file (experiments/configs/*.py, "
               "FILE.py:quick for its quick variant) whose settings are this command's flags. "
               "A flag given on the command line wins over the file; --config.NAME=VALUE "
               "changes one setting of the file.")


def _last_line(error: BaseException) -> str:
  """The last line of an error's message, quotes and the Python noise left out."""
  lines = [ln.strip() for ln in str(error).replace("\\n", "\n").splitlines() if ln.strip()]
  text = lines[-1] if lines else type(error).__name__
  if text.endswith(("'", '"')) and text.count(text[-1]) % 2:   # the end of a quoted message
    text = text[:-1]
  return text


def define_config_flag() -> None:
  """--config: the entry point's flags from an ml_collections config file (`apply_config`)."""
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  config_flags.DEFINE_config_file("config", None, CONFIG_HELP)


def _flag_text(value: Any) -> str:
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (list, tuple)):
    return ",".join(_flag_text(v) for v in value)
  return str(value)


def apply_config(fl: flags.FlagValues = flags.FLAGS) -> dict[str, Any] | None:
  """Sets every flag the --config file names to the file's value, unless the flag was given on
  the command line (that one wins). Returns the file's settings as applied ({} settings taken
  from the command line are left out), None without --config. UsageError (one line) for a
  setting that is not a flag of this command, or a value the flag does not take."""
  if "config" not in fl or fl["config"].value is None and not fl["config"].present:
    return None
  applied: dict[str, Any] = {}
  own = sorted(_entry_flags(fl))
  try:
    settings = list(fl.config.items())
  except Exception as e:  # pylint: disable=broad-except  (the file failed to load)
    raise UsageError("config", _last_line(e)) from None
  for key, value in settings:
    if key not in own:
      raise UsageError("config", f"setting {key!r} is not a flag of this command; its flags: "
                       f"{', '.join(own)}")
    if fl[key].present:
      continue      # given on the command line: it wins
    try:
      fl[key].parse(_flag_text(value))
    except flags.Error as e:
      raise UsageError("config", f"setting {key}={value!r}: {str(e).splitlines()[0]}") from None
    applied[key] = value
  return applied


def _entry_flags(fl: flags.FlagValues) -> set[str]:
  """The flags the running entry point and experiments/ define (not absl's, JAX's or the
  config flag's own)."""
  names = set()
  for module, defined in fl.flags_by_module_dict().items():
    if module.startswith(("absl", "jax", "ml_collections")):
      continue
    names.update(f.name for f in defined if f.name != "config")
  return names


def run(main: Callable[[list[str]], None], positional: bool = False) -> None:
  """`absl.app.run(main)` with one-line errors for bad flags (absl's own and `UsageError`), the
  --config file's settings applied where the entry point defines that flag (`apply_config`),
  and the persistent compilation cache on where it defines its flag. `positional`: main takes
  positional arguments (argv[1:]); otherwise they are an error."""

  def wrapped(argv):
    if len(argv) > 1 and not positional:
      _exit_with(f"unexpected positional arguments {argv[1:]}; all options are --flags")
    try:
      apply_config()
      enable_compilation_cache()
      return main(argv)
    except UsageError as e:
      _exit_with(str(e))
    except ConfigError as e:  # a field "a/b" names two flags: --a/--b
      _exit_with("/".join(f"--{f}" for f in e.field.split("/")) + f": {e.message}")

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


def unique(flag: str, values: Sequence) -> list:
  """`values` without repeats (the first occurrence kept), with a one-line warning naming the
  flag and what was dropped: a value listed twice would compute the same thing twice."""
  out, dropped = [], []
  for v in values:
    (dropped if v in out else out).append(v)
  if dropped:
    absl_logging.warning("--%s: ignoring the repeated value(s) %s (each is used once)", flag,
                         ", ".join(str(v) for v in dropped))
  return out


def parse_floats(flag: str, values: Sequence[str] | None, *, positive: bool = False,
                 allow_empty: bool = False) -> list[float]:
  """Finite numbers (> 0 when `positive`), repeats dropped (`unique`)."""
  ok = (lambda x: math.isfinite(x) and x > 0) if positive else math.isfinite
  return unique(flag, _parse_numbers(flag, values, float, "a number", ok,
                                     "finite numbers > 0" if positive else "finite numbers",
                                     allow_empty))


def parse_ints(flag: str, values: Sequence[str] | None, *, minimum: int = 1) -> list[int]:
  """Integers >= minimum, repeats dropped (`unique`)."""
  return unique(flag, _parse_numbers(flag, values, int, "an integer", lambda x: x >= minimum,
                                     f"integers >= {minimum}", False))


def parse_choices(flag: str, values: Sequence[str] | None, allowed: Sequence[str],
                  *, allow_empty: bool = False) -> list[str]:
  """Names from `allowed`, repeats dropped (`unique`)."""
  out = [v.strip() for v in (values or []) if v.strip()]
  for v in out:
    if v not in allowed:
      raise UsageError(flag, f"unknown value {v!r}; allowed: {', '.join(sorted(allowed))}")
  if not out and not allow_empty:
    raise UsageError(flag, f"needs at least one of: {', '.join(sorted(allowed))}")
  return unique(flag, out)


# The flags of one architecture that the recurrent ones do not take.
ARCH_FLAGS = {"kernel_size": "cnn", "padding": "cnn", "branch_scale": "resmlp"}


def check_arch_flags(archs: Sequence[str], recurrent_flag: str,
                     fl: flags.FlagValues = flags.FLAGS) -> None:
  """UsageError (one line) for a flag of another architecture given on the command line when
  every architecture is recurrent (--kernel_size with --arch=rnn, say)."""
  from initjax.theory import architectures  # pylint: disable=import-outside-toplevel
  if not archs or not all(architectures.is_recurrent(a) for a in archs):
    return
  for name, owner in ARCH_FLAGS.items():
    if name in fl and fl[name].present:
      raise UsageError(name, f"is an option of {owner}, not of {','.join(archs)}, which take "
                       f"--{recurrent_flag} (allowed: "
                       f"{', '.join(architectures.recurrent_init_names())})")


def check_min(flag: str, value: int | float, minimum: int | float) -> None:
  if value < minimum:
    raise UsageError(flag, f"must be >= {minimum}; got {value}")


def output_dir(flag: str, path: str) -> str:
  """Creates and checks the output directory, or fails with a UsageError."""
  from initjax.core.results import ensure_writable_dir  # pylint: disable=import-outside-toplevel
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
  repeated = []
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
      else:
        repeated.append(f"{name}:{lr:g}")
  if repeated:
    absl_logging.warning("--learning_rates: ignoring the repeated value(s) %s (each is used "
                         "once)", ", ".join(repeated))
  return tuple((o, tuple(per_opt[o])) for o in optimizers if o in per_opt)


def hold_output_dir(flag: str, directory: str, holder):
  """Registers this run as a holder of `directory` (`initjax.lock.acquire`); returns the lock
  (released when the process ends, or with `release()`). UsageError naming the flag and the
  other process when the directory is in use. Where the file system has no working locks, the
  run goes on unprotected, with a warning."""
  from initjax.core import lock  # pylint: disable=import-outside-toplevel
  try:
    return lock.acquire(directory, holder)
  except lock.LocksUnsupported as e:
    absl_logging.warning("%s: going on without a lock; two runs into this directory would "
                         "not be detected", e.strerror)
    return contextlib.nullcontext(None)
  except lock.DirectoryLocked as e:
    raise UsageError(flag, str(e)) from None
  except OSError as e:
    raise UsageError(flag, f"cannot lock {directory!r}: {e.strerror or e}") from None


def claim_output_dir(flag: str, directory: str, held, kind: str, files: Sequence[str]) -> None:
  """Records `kind` as what `directory` holds (`initjax.output_kind`; a directory of another
  kind is a UsageError naming it, before anything is written), then deletes the temporary
  files that killed runs left there for `files` (this command's outputs, named as
  `initjax.results` names them), with a log line. Only where this run holds the directory
  alone (`held`, the lock from `hold_output_dir`): tasks of a split share some of those
  names."""
  from initjax.core import output_kind, results  # pylint: disable=import-outside-toplevel
  try:
    output_kind.claim(directory, kind)
  except output_kind.WrongKind as e:
    raise UsageError(flag, str(e)) from None
  if held is None or not held.alone:
    return
  stale = results.remove_stale_temp_files(directory, [*files, output_kind.MARKER],
                                          older_than=held.registered)
  if stale:
    absl_logging.info("removed %d temporary file(s) that an earlier killed run left in %s: %s",
                      len(stale), directory, ", ".join(stale))


def check_output_kind(flag: str, directory: str, kind: str) -> None:
  """UsageError naming what `directory` holds unless it may hold `kind` (nothing written)."""
  from initjax.core import output_kind  # pylint: disable=import-outside-toplevel
  try:
    output_kind.check(directory, kind)
  except output_kind.WrongKind as e:
    raise UsageError(flag, str(e)) from None


def _stderr(line: str) -> None:
  sys.stderr.write(line + "\n")
  sys.stderr.flush()


def print_report(output_dir: str, config, allow_partial: bool = False) -> int:
  """`report.write_report`, then prints the summary table and the files written, or lists the
  missing points on stderr. Returns the exit status: 1 when points are missing (and not
  `allow_partial`), when no point is finished at all, or when the files cannot be written
  (then none of them is changed); else 0."""
  from initjax.studies.sweep import report  # pylint: disable=import-outside-toplevel
  from initjax.studies.sweep.summary import format_summary_table  # pylint: disable=import-outside-toplevel
  try:
    paths, table, missing = report.write_report(output_dir, config, allow_partial)
  except OSError as e:
    _stderr(f"error: cannot write the report into {output_dir}: "
            f"{e.strerror or e}{f' ({e.filename})' if e.filename else ''}; no file was changed")
    return 1
  if not paths and allow_partial:  # not one finished point
    why = {pid: w for pid, w in missing.items() if w != "not finished"}
    _stderr("\n".join([f"error: none of the {len(missing)} grid points has finished results "
                        f"under {output_dir}: nothing to report; no file was written"]
                       + [f"  {pid}: {w}" for pid, w in why.items()]))
    return 1
  if missing:
    message = report.describe_missing(missing, output_dir, config)
    _stderr(("warning: " if allow_partial else "error: ") + message)
    if not allow_partial:
      return 1
  print(format_summary_table(table), flush=True)
  print("wrote " + ", ".join(paths.values()), flush=True)
  return 0
