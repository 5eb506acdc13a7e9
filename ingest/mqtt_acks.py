"""The bulk MQTT input's acknowledgements and flow control, shared by its socket thread and the ingest thread.

The pipeline calls an emitter call's `ack` (from the ingest thread) once its readings are journaled; the PUBACKs
it owes go into an outbox that only the socket's thread writes out (OpenSSL does not allow one SSL object to be
used by two threads at once), woken through a socketpair. Messages handed over and not yet acknowledged are
counted: above `max_unacked` the socket thread stops reading, so TCP holds the broker back (MQTT 3.1.1 has no
Receive Maximum) and the ingest queue's memory stays bounded.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable

from ingest.mqtt_codec import puback_packets

__all__ = ["AckFlow"]


class AckFlow:
    """PUBACKs owed to the broker, the count of messages not yet journaled, and the connection they belong to."""

    def __init__(self, max_unacked: int) -> None:
        self.max_unacked = max(1, max_unacked)
        self.lock = threading.Lock()  # guards generation/connected changes and the outbox
        # Counts connections: an ack owed to a message of an earlier connection is not sent on a later one,
        # where its packet id may already name another message (the broker redelivers the first anyway).
        self.generation = 0
        self.connected = False
        self.outbox = bytearray()  # bounded by max_unacked: PUBACKs of journaled messages, not yet written
        self.unacked = 0  # readings/messages handed to the emitter on this connection, ack not run yet
        # The socket thread is in (or about to enter) select(): only then does an ack need the wake-up. Each
        # wake-up is a send(), which releases the GIL; under load the socket thread grabbed it at once and the
        # ingest thread waited a switch interval (5 ms) to get it back, once per ack: 10 % of its time.
        self.selecting = False
        self.last_ack = 0.0
        self.pauses = 0
        self.acks_skipped = 0  # acks owed to a closed connection (the broker redelivers those messages)
        self.wake_r, self._wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def make_ack(self, pids: list[int], count: int, generation: int) -> Callable[[], None]:
        """The callback for one emitter call (`count` toward max_unacked); PUBACKs for `pids` (the QoS 1 ones)."""
        def ack() -> None:
            with self.lock:
                if generation != self.generation:
                    self.acks_skipped += len(pids)
                    return
                self.unacked -= count
                self.last_ack = time.monotonic()
                if pids:
                    if self.connected:
                        self.outbox += puback_packets(pids)
                    else:
                        self.acks_skipped += len(pids)
                wake, self.selecting = self.selecting, False  # one wake-up per select()
            if wake:
                self.wake()
        return ack

    def handed(self, count: int) -> None:
        """Count messages/readings about to be handed over (before the call: the pipeline may ack first)."""
        with self.lock:
            self.unacked += count

    def queue(self, pids: list[int]) -> None:
        """PUBACKs owed without a journal commit (a PUBLISH skipped unread), written with the next flush."""
        with self.lock:
            self.outbox += puback_packets(pids)

    def take(self) -> bytes:
        """The PUBACKs due (emptied); b"" when none are."""
        with self.lock:
            if not self.outbox:
                return b""
            data = bytes(self.outbox)
            self.outbox.clear()
        return data

    def opened(self) -> None:
        """A new connection: acks owed to the old one no longer count and are not sent on this one."""
        with self.lock:
            self.generation += 1
            self.connected = True
            self.outbox.clear()
            self.unacked = 0
            self.selecting = False

    def closed(self) -> bool:
        """The connection ended; return whether it was up."""
        with self.lock:
            was_up = self.connected
            self.connected = False
            self.outbox.clear()
        return was_up

    def begin_select(self, paused: bool) -> bool:
        """Whether the socket thread may block in select(): False when acks arrived since it last looked.

        From here until end_select() an ack wakes it; before, it saw the ack's effect itself (an outbox to
        flush, or, while `paused`, room again below max_unacked).
        """
        with self.lock:
            if self.outbox or (paused and self.unacked < self.max_unacked):
                return False
            self.selecting = True
            return True

    def end_select(self) -> None:
        """The socket thread is back from select(): acks no longer need to wake it."""
        with self.lock:
            self.selecting = False

    def select(self, sockets: list[socket.socket], timeout: float, paused: bool) -> list[socket.socket]:
        """The socket thread's select() on `sockets` and the wake-up: those ready to read ([] when acks came in)."""
        if not self.begin_select(paused):
            return []
        try:
            ready, _, _ = select.select([*sockets, self.wake_r], [], [], timeout)
        finally:
            self.end_select()
        if self.wake_r in ready:
            self.drain_wake()
        return [s for s in ready if s is not self.wake_r]

    def full(self) -> bool:
        """Whether the socket thread must wait for acks before reading more."""
        return self.unacked >= self.max_unacked

    def release(self) -> None:
        """Forget the acks outstanding (the pipeline dropped them) and read on."""
        with self.lock:
            self.unacked = 0

    def wake(self) -> None:
        """Wake the socket thread from its select()."""
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed (stopping)
            self._wake_w.send(b"\x00")

    def drain_wake(self) -> None:
        """Read the pending wake-ups (socket thread)."""
        with contextlib.suppress(OSError):
            while self.wake_r.recv(4096):
                pass

    def close(self) -> None:
        """Close the wake-up socketpair."""
        self.wake_r.close()
        self._wake_w.close()
