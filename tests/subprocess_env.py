"""The environment of the entry points run in subprocesses by the end-to-end tests: the
repository importable, JAX on the CPU, no cluster variables of the caller, and one persistent
compilation cache and data directory per test module (so each small program compiles once)."""
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(tmp_path_factory, **extra: str) -> dict[str, str]:
  e = {k: v for k, v in os.environ.items()
       if not k.startswith("SLURM_") and k not in ("XLA_FLAGS", "JAX_COORDINATOR_ADDRESS")}
  e.update(PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu",
           JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
           JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
           INITJAX_DATA_DIR=str(tmp_path_factory.mktemp("data")))
  e.update(extra)
  return e


def one_error_line(proc, needle, status=2):
  """The run failed with `status` and said why in one line (naming `needle`), no traceback;
  besides absl's log lines nothing else on stderr. Returns that line."""
  assert proc.returncode == status, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and needle in errors[0], proc.stderr[-3000:]
  others = [l for l in proc.stderr.splitlines()
            if not l.startswith("error: ") and not re.match(r"[IWE]\d{4} ", l)]
  assert not others, proc.stderr[-3000:]  # besides absl's log lines, only that one
  return errors[0]
