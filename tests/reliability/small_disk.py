"""A real small filesystem for disk-full tests: a tmpfs of a few megabytes mounted on a test directory.

Mounting needs root (CI runs as root). Where it is impossible the test fails under CI (`CI=true`) and is
skipped elsewhere, with the reason; the mount is always undone afterwards (lazily if a file is still open).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import in_ci

__all__ = ["fill", "free_bytes", "small_tmpfs"]


@contextlib.contextmanager
def small_tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of `size_bytes` on `path` (created), yield it, unmount it."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(path)],
                              capture_output=True, text=True, timeout=30)
        error = done.stderr.strip() if done.returncode else ""
    except (OSError, subprocess.TimeoutExpired) as exc:
        error = str(exc)
    if error:
        message = (f"cannot mount a {size_bytes}-byte tmpfs on {path}: {error} (these tests need root, "
                   "or CAP_SYS_ADMIN, for a real full disk)")
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def free_bytes(path: Path) -> int:
    """Bytes free on the filesystem of `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave_bytes: int) -> Path:
    """Allocate a ballast file at `path` so that only about `leave_bytes` stay free; return it."""
    size = max(0, free_bytes(path.parent) - leave_bytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if size:
            os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    return path
