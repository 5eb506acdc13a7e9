"""A simulated serial device on a pseudo-terminal: the gateway opens `port` with pyserial as if it were a UART."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import tty
from collections.abc import Callable

__all__ = ["PtyDevice"]


class PtyDevice:
    """Owns the master side of a pty. `port` is the slave path (e.g. /dev/pts/7) to give to the gateway.

    Subclasses or callers write frames with `write()`, and may answer requests: `on_request(data)` is called
    from the reader thread with bytes the gateway sent, and returns the reply (or b"" for none).
    `unplug()` closes the pty (the gateway sees an I/O error); `plug()` opens a new one under a new path.
    With `link`, that path is also kept as a symlink to the current slave (like /dev/serial/by-id/…): it
    disappears on `unplug()` and points at the new pty after `plug()`, so the gateway can be given `link`.
    """

    def __init__(self, on_request: Callable[[bytes], bytes] | None = None,
                 link: str | os.PathLike[str] | None = None) -> None:
        self._on_request = on_request
        self.link = os.fspath(link) if link is not None else None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._master = -1
        self._slave = -1
        self.port = ""
        self.received = bytearray()
        self._reader: threading.Thread | None = None
        self.plug()

    def plug(self) -> None:
        """Open a fresh pty pair in raw mode and start answering requests on it."""
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        with self._lock:
            self._master, self._slave = master, slave
            self.port = os.ttyname(slave)
        if self.link is not None:
            tmp = f"{self.link}.new"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(self.port, tmp)
            os.replace(tmp, self.link)  # atomic: the link never dangles half-made
        self._closed.clear()
        if self._on_request is not None:
            self._reader = threading.Thread(target=self._read_loop, name=f"pty-reader {self.port}", daemon=True)
            self._reader.start()

    def write(self, data: bytes) -> None:
        """Send bytes to the gateway side (silently ignored while unplugged)."""
        with self._lock:
            if self._master < 0:
                return
            with contextlib.suppress(OSError):
                os.write(self._master, data)

    def _read_loop(self) -> None:
        import select

        while not self._closed.is_set():
            with self._lock:
                fd = self._master
            if fd < 0:
                return
            try:
                ready, _, _ = select.select([fd], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(fd, 4096)
            except OSError:
                return
            if not data:
                continue
            self.received += data
            assert self._on_request is not None
            reply = self._on_request(data)
            if reply:
                self.write(reply)

    def unplug(self) -> None:
        """Close both ends, as if the USB adapter were pulled out (the `link`, if any, goes away too)."""
        self._closed.set()
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link)
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=2)
        with self._lock:
            for fd in (self._master, self._slave):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._master = self._slave = -1

    close = unplug

    def __enter__(self) -> PtyDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unplug()


class StreamingPtyDevice(PtyDevice):
    """A device that emits a frame every `period_s` from `make_frame(now_s)` on its own thread (active mode)."""

    def __init__(
        self,
        make_frame: Callable[[float], bytes],
        period_s: float = 1.0,
        on_request: Callable[[bytes], bytes] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(on_request)
        self._make_frame = make_frame
        self._period_s = period_s
        self._clock = clock
        self._stop = threading.Event()
        self.frames_sent = 0
        self._thread = threading.Thread(target=self._run, name="pty-stream", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            self.write(self._make_frame(self._clock()))
            self.frames_sent += 1
            next_t += self._period_s
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def unplug(self) -> None:
        """Stop streaming and close the pty."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        super().unplug()

    close = unplug
