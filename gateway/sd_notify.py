"""systemd's notify protocol: READY=1, STOPPING=1, STATUS=… and the watchdog ping (WATCHDOG=1).

A datagram to the AF_UNIX socket named by $NOTIFY_SOCKET (an abstract socket when it starts with '@'), as
sd_notify(3) describes. Written here (a dozen lines) rather than taken from PyPI: `systemd-python` needs
libsystemd headers and a compiler on the Pi, and the small pure-Python packages are unmaintained. Without
$NOTIFY_SOCKET (not started by systemd) every call does nothing.

The watchdog is fed from the main thread only while the ingest thread keeps finishing loop iterations
(`Pipeline.loop_at`): a hung ingest thread stops the pings, and systemd restarts the service after
WatchdogSec.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

__all__ = ["JournalFormatter", "Notifier", "Watchdog", "under_journald"]

log = logging.getLogger("citygw.systemd")


class Notifier:
    """Sends notify messages to systemd; does nothing when not run by systemd with Type=notify."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process the watchdog is meant for; another process must not ping.
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and mine else 0.0

    @property
    def enabled(self) -> bool:
        """Whether a notify socket was given."""
        return self._sock is not None

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` lines in one datagram; False (logged once per kind of error) when it fails."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self.address.replace("\0", "@"), exc.strerror)
            return False
        return True

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Watchdog:
    """Pings WATCHDOG=1 at half the watchdog interval while `progress_at()` (monotonic) stays recent."""

    def __init__(self, notifier: Notifier, progress_at: Callable[[], float]) -> None:
        self.notifier = notifier
        self.progress_at = progress_at
        self.interval_s = notifier.watchdog_s / 2 if notifier.watchdog_s else 0.0
        self._last_ping = 0.0
        self._stalled_logged = False

    def tick(self) -> None:
        """Call often (every second): pings when due and the ingest loop moved within the interval."""
        if not self.interval_s:
            return
        now = time.monotonic()
        if now - self._last_ping < self.interval_s:
            return
        if now - self.progress_at() > self.interval_s:
            if not self._stalled_logged:
                log.error("ingest loop has not moved for %.0f s: not feeding the systemd watchdog (systemd "
                          "restarts the service after WatchdogSec=%.0f s)", now - self.progress_at(),
                          self.notifier.watchdog_s)
                self._stalled_logged = True
            return
        self._stalled_logged = False
        if self.notifier.send("WATCHDOG=1"):
            self._last_ping = now


class JournalFormatter(logging.Formatter):
    """Log lines for journald: a `<priority>` prefix (so `journalctl -p warning` works), no timestamp of our own.

    systemd reads the sd-daemon(3) prefix on a service's stderr; journald stamps every line itself.
    """

    PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Prefix every line of the record (a traceback too) with its syslog priority."""
        priority = next((p for level, p in self.PRIORITIES if record.levelno >= level), 7)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def under_journald(env: Mapping[str, str] | None = None) -> bool:
    """Whether stderr goes to journald (systemd sets JOURNAL_STREAM for a service's stdout/stderr)."""
    env = os.environ if env is None else env
    return bool(env.get("JOURNAL_STREAM"))
