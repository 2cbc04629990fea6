"""One writer per folder or file: an exclusive `flock` on a lock file that names its holder.

The lock file holds the holder's pid on its first line and, when given, the command it runs on the
second. The kernel drops a `flock` when its process dies, so the lock of a killed holder (even one
killed with SIGKILL) is taken over by the next process; a live holder makes the next one stop with an
error naming the holder's pid, never wait silently.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xlang.errors import XlangError


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its lock file says (`pid` is "unknown" when the file was still empty)."""

    pid: str
    command: str

    def describe(self) -> str:
        return f"pid {self.pid}" + (f": {self.command}" if self.command else "")


class ExclusiveLock:
    """An exclusive, non-blocking `flock` on `path`; `busy(holder)` is the error message when it is held.

    The lock file is removed on release. A process that opened the file just before the holder removed it
    would lock a file no longer on disk, so acquiring checks that the locked file is the one at `path`.
    """

    def __init__(self, path: Path, busy: Callable[[Holder], str], command: str | None = None) -> None:
        self.path = Path(path)
        self.busy = busy
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise XlangError(self.busy(holder)) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        text = f"{os.getpid()}\n" + (f"{self.command}\n" if self.command else "")
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode("utf-8"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            os.close(fd)

    def __enter__(self) -> ExclusiveLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> Holder:
    lines = os.pread(fd, 4096, 0).decode("utf-8", "replace").splitlines()
    pid = lines[0].strip() if lines and lines[0].strip() else "unknown"
    return Holder(pid=pid, command=" ".join(line.strip() for line in lines[1:] if line.strip()))
