"""How old each sink's oldest undelivered journal entry is, without storing an append time per entry.

Once a second (from `Gateway.tick`) the journal's last sequence number is noted with the time. An entry with a
sequence number at or below a mark was appended no later than that mark's time, so a sink whose cursor sits
before a mark has been owing that entry at least since then: the age of the first mark past the cursor is the
age of the oldest undelivered entry, to within a tick. Marks every sink has passed are dropped; the list is
bounded by thinning its older half (which can only make ages read lower, never raise a false alarm).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["BacklogAges"]

MAX_MARKS = 4096


class BacklogAges:
    """Sequence-number marks over time; the age of the first mark past a cursor."""

    def __init__(self, mono: Callable[[], float] = time.monotonic, max_marks: int = MAX_MARKS) -> None:
        self.mono = mono
        self.max_marks = max_marks
        self._marks: deque[tuple[int, float]] = deque()

    def note(self, last_seq: int, cursors: list[int]) -> None:
        """Record the journal's last sequence number now; forget marks every cursor has passed."""
        if not self._marks or last_seq > self._marks[-1][0]:
            self._marks.append((last_seq, self.mono()))
        low = min(cursors, default=last_seq)
        while self._marks and self._marks[0][0] <= low:
            self._marks.popleft()
        if len(self._marks) > self.max_marks:
            marks = list(self._marks)
            half = len(marks) // 2
            # Dropping a mark attributes its entries to the next, later mark: ages can only come out lower.
            self._marks = deque(marks[1:half:2] + marks[half:])

    def age(self, cursor: int) -> float:
        """Seconds the oldest entry after `cursor` has been waiting (0 when the sink has delivered everything)."""
        for seq, at in self._marks:
            if seq > cursor:
                return max(0.0, self.mono() - at)
        return 0.0
