"""One process per data directory: an exclusive `flock` on `<dir>/citygw.lock`, held for the process's life.

Two gateways on one journal would both ingest and both close windows: each would see part of the readings
and publish KPIs from it, and their MQTT inputs would take each other's session over. The lock is an
advisory `fcntl.flock` on a file that is never deleted (deleting a lock file lets a third process lock a
new inode while the first still holds the old one); the kernel releases it when the process dies, however
it dies, so a SIGKILLed gateway never leaves a stale lock behind. The file holds the owner's pid, so the
refusal can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["LOCK_NAME", "DataDirInUseError", "DataDirLock"]

LOCK_NAME = "citygw.lock"


class DataDirInUseError(RuntimeError):
    """Another process holds the data directory's lock."""

    def __init__(self, directory: Path, pid: int | None) -> None:
        self.directory = directory
        self.pid = pid
        who = f"pid {pid}" if pid is not None else "a process whose pid is not written yet"
        super().__init__(
            f"{directory}: this data directory is in use by another citygw ({who}, lock file "
            f"{directory / LOCK_NAME}). Stop that gateway first, or give this one its own gateway.data_dir "
            "(two gateways on one journal would each publish KPIs of half the readings).")


class DataDirLock:
    """An exclusive lock on one directory; `acquire` raises DataDirInUseError naming the holder's pid."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock without waiting and write our pid into the lock file."""
        if self._fd is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataDirInUseError(self.directory, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (the file stays; the next owner overwrites the pid)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
