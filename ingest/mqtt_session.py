"""What our persistent MQTT session holds on the broker, and who else might be using it.

Both MQTT inputs (paho's `MqttSource` and `BulkMqttSource`) keep a persistent session, so the broker keeps
every subscription the session ever made. Two things follow, handled here once for both:

- `SubscriptionMemory`: a route removed from the config would stay subscribed for ever (its messages queued
  for us, then refused as "no route matches"). We remember the filters the session may hold in a small JSON
  file in data_dir and unsubscribe those no longer configured on the next connection.
- `TakeoverWatch`: a second client with our client id (a copied config, a second gateway with the same id)
  makes the broker close our connection each time it connects, and us close it in turn. MQTT 5 says so
  (DISCONNECT reason 0x8E); MQTT 3.1.1 only closes the socket, so a run of closes right after connecting is
  read as a takeover. Reported once per episode: one error log line naming the client id and the fix, and a
  callback for the metric.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["SESSION_TAKEN_OVER", "SubscriptionMemory", "TakeoverWatch"]

log = logging.getLogger("citygw.mqtt")

SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason code "Session taken over"


class SubscriptionMemory:
    """The topic filters our session on one broker may hold, kept in a JSON file across restarts.

    File layout: {"<host>:<port> <client id>": [filters]}. A filter is recorded *before* it is subscribed and
    dropped only after the broker confirmed its UNSUBSCRIBE, so a crash at any point leaves the file listing
    at least everything the session holds.
    """

    def __init__(self, path: Path | None, host: str, port: int, client_id: str) -> None:
        # Without a client id the session is clean (nothing outlives the connection): nothing to remember.
        self.path = path if client_id else None
        self.key = f"{host}:{port} {client_id}"
        self._write_failed = False

    def _load(self) -> dict[str, list[str]]:
        if self.path is None:
            return {}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("cannot read the MQTT subscription record %s (%s); filters removed from the config "
                        "before now stay subscribed until the broker's session expires", self.path, exc)
            return {}
        if not isinstance(doc, dict):
            return {}
        return {k: [f for f in v if isinstance(f, str)] for k, v in doc.items() if isinstance(v, list)}

    def _save(self, filters: Sequence[str]) -> None:
        if self.path is None:
            return
        doc = self._load()
        doc[self.key] = sorted(set(filters))
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)  # atomic: a crash leaves the old or the new record, never half of one
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not self._write_failed:
                self._write_failed = True
                log.warning("cannot write the MQTT subscription record %s (%s); a route removed later may stay "
                            "subscribed", self.path, exc.strerror or exc)

    def recorded(self) -> list[str]:
        """The filters recorded for this broker and client id."""
        return self._load().get(self.key, [])

    def before_subscribe(self, current: Sequence[str]) -> list[str]:
        """Record `current` with what was recorded before; return the recorded filters no longer configured."""
        old = self.recorded()
        stale = sorted(set(old) - set(current))
        if set(current) - set(old):
            self._save([*old, *current])
        return stale

    def unsubscribed(self, filters: Sequence[str]) -> None:
        """The broker confirmed the UNSUBSCRIBE of `filters`: forget them."""
        gone = set(filters)
        self._save([f for f in self.recorded() if f not in gone])


class TakeoverWatch:
    """Spots another client using our client id, and reports it once per episode.

    `closes` broker-initiated closes within `window_s`, each of a connection younger than `window_s` that was
    opened at the first attempt, make an episode under MQTT 3.1.1: a twin is reachable the moment it throws us
    off, whereas a restarting broker closes a connection once and usually refuses the next attempt. An MQTT 5
    DISCONNECT with reason 0x8E is one on its own. A connection that lasts `window_s` ends the episode.
    """

    def __init__(self, role: str, client_id: str, host: str, port: int,
                 on_takeover: Callable[[], None] = lambda: None, closes: int = 3, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.role = role
        self.client_id = client_id
        self.where = f"{host}:{port}"
        self.on_takeover = on_takeover
        self.window_s = window_s
        self.clock = clock
        self.takeovers = 0  # episodes reported
        self.reported = False
        self._closes: collections.deque[float] = collections.deque(maxlen=max(1, closes))
        self._up_since: float | None = None

    def connected(self, failures: int = 0) -> None:
        """A connection was accepted (CONNACK 0) after `failures` failed attempts."""
        self._up_since = self.clock()
        if failures:
            self._closes.clear()  # the broker was unreachable in between: a restart, not a twin

    def closed_by_broker(self, definite: bool = False) -> bool:
        """The broker ended an accepted connection; True when this reports a takeover (logged, counted)."""
        now = self.clock()
        up_for = now - self._up_since if self._up_since is not None else 0.0
        self._up_since = None
        if up_for >= self.window_s:
            self._closes.clear()
            self.reported = False  # a connection that lasted: whatever happened before is over
        self._closes.append(now)
        full = len(self._closes) == self._closes.maxlen and now - self._closes[0] <= self.window_s
        if not (definite or full) or self.reported:
            return False
        self.reported = True
        self.takeovers += 1
        how = ("the broker says the session was taken over (MQTT 5 reason 0x8E)" if definite else
               f"the broker closed our connection {len(self._closes)} times within "
               f"{now - self._closes[0]:.0f} s, each soon after accepting it")
        log.error("%s: another client is using our MQTT client id %r on %s: %s. Each connection with the same id "
                  "throws the other off, and the two share one session's messages. Fix: give each gateway its own "
                  "mqtt.client_id (or gateway.id), and run one citygw per data_dir. Reported once; the input keeps "
                  "reconnecting", self.role, self.client_id, self.where, how)
        self.on_takeover()
        return True
