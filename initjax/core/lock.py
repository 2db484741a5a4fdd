"""An advisory lock on an output directory, so that two runs never write into one directory at
once, while the tasks of one batch split share it.

A run that writes into a directory registers as a *holder* of it: a file
`<dir>/.lock.<role>` (e.g. `.lock.task-3`, `.lock.report`) that it keeps locked with
`fcntl.flock` for as long as it runs, holding its pid, host, command line, role and split (for
the message another run prints). The kernel releases a flock when its process ends, however it
ends (SIGKILL, a crash, a node reboot), so a holder file that nobody has locked is stale and is
taken over; a clean exit also removes it. Registering happens under `<dir>/.lock` (held only
for the moment of the check), so two runs starting at once cannot both see a free directory.

Two holders may share the directory only when both belong to the same `split` (the same sweep
settings and number of tasks) and have different `member`s (task indices): the tasks of one
split write disjoint point files. Anything else (another split, the same task twice, a report
while tasks run, a second figure run) is refused with `DirectoryLocked`, whose one-line message
names the other process.

flock works on local file systems and on NFSv4 (Linux emulates it with POSIX byte-range locks
there); on a file system without working locks `acquire` raises `LocksUnsupported`, and the
caller decides whether to go on unprotected.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import socket
import sys
import time
from typing import Any

DOOR = ".lock"
HOLDER_PREFIX = ".lock."


class DirectoryLocked(Exception):
  """Another live process holds the directory (or its door) in a way that excludes this run."""


class LocksUnsupported(OSError):
  """The file system of the directory does not support flock (e.g. NFS without a lock daemon)."""


_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a directory: written to its holder file as JSON."""
  role: str                  # "task-0", "report", "figure", ...
  split: str | None = None   # holders of the same split with different members may share
  member: int | None = None
  what: str = ""             # a few words for the message, e.g. "task 0 of 4 of a sweep"
  pid: int = dataclasses.field(default_factory=os.getpid)
  host: str = dataclasses.field(default_factory=socket.gethostname)
  command: str = dataclasses.field(default_factory=lambda: " ".join(sys.argv))
  started: str = dataclasses.field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))

  def compatible(self, other: "Holder") -> bool:
    return (self.split is not None and self.split == other.split
            and self.member is not None and self.member != other.member)

  def describe(self) -> str:
    command = self.command if len(self.command) <= 160 else self.command[:157] + "..."
    return (f"pid {self.pid} on {self.host} ({self.what or self.role}, since {self.started}: "
            f"{command})")


def _holder_from(data: bytes) -> Holder:
  try:
    fields = json.loads(data.decode("utf-8"))
    known = {f.name for f in dataclasses.fields(Holder)}
    return Holder(**{k: v for k, v in fields.items() if k in known})
  except (ValueError, TypeError, AttributeError):
    return Holder(role="unknown", what="a process whose lock file cannot be read", pid=-1,
                  host="?", command="?", started="?")


def _try_flock(fd: int, kind: int) -> bool:
  try:
    fcntl.flock(fd, kind | fcntl.LOCK_NB)
    return True
  except OSError as e:
    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      return False
    raise


def _open_door(directory: str, timeout: float) -> int:
  """The door lock, held exclusively while a run checks the holders and registers."""
  fd = os.open(os.path.join(directory, DOOR), os.O_RDWR | os.O_CREAT, 0o666)
  deadline = time.monotonic() + timeout
  while not _try_flock(fd, fcntl.LOCK_EX):
    if time.monotonic() > deadline:
      os.close(fd)
      raise DirectoryLocked(f"{directory} stays locked by another process that is registering "
                            f"(waited {timeout:.0f} s for {os.path.join(directory, DOOR)})")
    time.sleep(0.05)
  return fd


def live_holders(directory: str) -> dict[str, Holder]:
  """{holder file: Holder} of the processes holding `directory` now; stale holder files (their
  process is gone) are removed. Call it under the door (`acquire` does)."""
  out = {}
  try:
    names = sorted(n for n in os.listdir(directory) if n.startswith(HOLDER_PREFIX))
  except FileNotFoundError:
    return out
  for name in names:
    path = os.path.join(directory, name)
    try:
      fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # released meanwhile
      continue
    try:
      if _try_flock(fd, fcntl.LOCK_SH):  # nobody holds it: its process is gone (or just released)
        try:
          os.unlink(path)
        except FileNotFoundError:
          pass
        continue
      with os.fdopen(os.dup(fd), "rb") as fh:
        out[path] = _holder_from(fh.read())
    finally:
      os.close(fd)
  return out


class DirectoryLock:
  """A held registration (see the module docstring); `release()` or use it as a context."""

  def __init__(self, directory: str, holder: Holder, fd: int, path: str,
               others: tuple[Holder, ...] = ()):
    self.directory, self.holder, self._fd, self.path = directory, holder, fd, path
    self.others = others   # the live holders it shares the directory with, when it registered
    self.registered = time.time()

  @property
  def alone(self) -> bool:
    """No other live holder when it registered: a temporary file written in the directory
    before `registered` was then left by a process that is gone (only tasks of its own split
    may join later, and what they write is newer)."""
    return not self.others

  def release(self) -> None:
    if self._fd is None:
      return
    try:
      os.unlink(self.path)
    except OSError:
      pass
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> "DirectoryLock":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.release()


def acquire(directory: str, holder: Holder, timeout: float = 10.0) -> DirectoryLock:
  """Registers `holder` in `directory` (which must exist) and returns the held lock.

  Raises:
    DirectoryLocked: a live holder excludes this one (the message names it), or the door stays
      locked for `timeout` seconds.
    LocksUnsupported: the file system has no working flock.
    OSError: the lock files cannot be created (a read-only directory).
  """
  try:
    return _acquire(directory, holder, timeout)
  except OSError as e:
    if e.errno in _UNSUPPORTED and not isinstance(e, LocksUnsupported):
      raise LocksUnsupported(e.errno, f"file locks do not work in {directory} ({e.strerror})"
                             ) from None
    raise


def _acquire(directory: str, holder: Holder, timeout: float) -> DirectoryLock:
  door = _open_door(directory, timeout)
  try:
    others = tuple(live_holders(directory).values())
    for other in others:
      if not holder.compatible(other):
        raise DirectoryLocked(f"{directory} is in use by {other.describe()}; wait for it to "
                              "finish, stop it, or use another directory")
    path = os.path.join(directory, HOLDER_PREFIX + holder.role)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    if not _try_flock(fd, fcntl.LOCK_EX):  # cannot happen under the door; never steal a lock
      os.close(fd)
      raise DirectoryLocked(f"{path} is locked by another process")
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(dataclasses.asdict(holder)) + "\n").encode("utf-8"))
    return DirectoryLock(directory, holder, fd, path, others)
  finally:
    os.close(door)
