"""Health of a running gateway: a list of checks, each returning what is wrong (a sentence) or nothing.

`/healthz` answers 503 with the JSON list of every current reason, 200 when the list is empty. A check
takes the running `Gateway` and returns a reason (`str`), several reasons (`list[str]`) or None; add one
by appending it to `CHECKS` (or passing a longer tuple to `health_reasons`). A reason starts with the part
it is about ("journal: …", "thread citygw-ingest: …"), says what is wrong and where to look.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from gateway.health_checks import DATA_PATH_CHECKS

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["CAP_REASON_HOLD_S", "CHECKS", "HealthCheck", "health_reasons", "journal_at_cap",
           "journal_housekeeping", "journal_writable", "threads_running"]

HealthCheck = Callable[["Gateway"], "str | list[str] | None"]

CAP_REASON_HOLD_S = 60.0  # the cap is reported for this long after it last dropped entries


def journal_writable(gw: Gateway) -> str | None:
    """The ingest thread cannot commit to the journal (disk full): nothing is acknowledged meanwhile."""
    failure = gw.pipeline.write_failure
    if failure.reason is None:
        return None
    where = f"{failure.path.parent}"
    if failure.reason == "disk full":
        return (f"journal: disk full ({where}); nothing is acknowledged for {time.monotonic() - failure.since:.0f} s."
                " Free space there or lower journal.max_size")
    return f"journal: cannot write ({failure.reason}) for {time.monotonic() - failure.since:.0f} s; check {where}"


def journal_housekeeping(gw: Gateway) -> str | None:
    """Housekeeping (checkpoints, trimming, the cap) fails: the journal does not give space back."""
    failure = gw.pipeline.housekeeper.failure
    if failure.reason is None:
        return None
    return (f"journal: housekeeping failing ({failure.reason}) for {time.monotonic() - failure.since:.0f} s; "
            "delivered entries are not trimmed")


def journal_at_cap(gw: Gateway) -> str | None:
    """The disk cap dropped undelivered entries within the last minute."""
    at = gw.pipeline.housekeeper.cap_dropped_at
    if at is None or time.monotonic() - at > CAP_REASON_HOLD_S:
        return None
    dropped = gw.monitor.journal.dropped()  # the monitor's own connection: /healthz never waits on the writer
    return (f"journal: at its cap (journal.max_size = {gw.journal.max_bytes} bytes), dropping the oldest "
            f"undelivered entries ({dropped} so far); restore the uplink or raise journal.max_size")


def threads_running(gw: Gateway) -> list[str]:
    """Owning threads that keep crashing, or that ended while the gateway runs."""
    return gw.supervisor.problems()


# The data-path checks (ingest stalled, MQTT input down, sink lag) live in gateway/health_checks.py.
CHECKS: list[HealthCheck] = [journal_writable, journal_housekeeping, journal_at_cap, threads_running,
                             *DATA_PATH_CHECKS]


def health_reasons(gateway: Gateway, checks: Iterable[HealthCheck] | None = None) -> list[str]:
    """Every current problem of `gateway` (empty when healthy); a check that raises is itself a reason."""
    reasons: list[str] = []
    for check in CHECKS if checks is None else checks:
        try:
            found = check(gateway)
        except Exception as exc:  # a broken check must not take /healthz down with it
            found = f"health check {getattr(check, '__name__', check)} failed: {type(exc).__name__}: {exc}"
        if isinstance(found, str):
            reasons.append(found)
        elif found:
            reasons.extend(found)
    return reasons
