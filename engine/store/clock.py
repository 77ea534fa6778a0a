"""A clock that never goes backwards, for feeding ``now`` to the ledger.

The ledger is deterministic in ``now``: the embedded store journals the ``now``
of every mutation and replays it on recovery. If the wall clock steps back (NTP,
a VM migration), a hold could be created "before" an operation that already
happened, and expiry order on replay would differ from what clients saw. So the
store never hands the ledger a time earlier than one it already used, across
restarts too (recovery advances the clock to the last journaled ``now``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["MonotonicClock"]


class MonotonicClock:
    """``max(last, source())``: the source clock, clamped so it never decreases."""

    __slots__ = ("_last", "_source")

    def __init__(self, source: Callable[[], float] = time.time) -> None:
        self._source = source
        self._last = float("-inf")

    def __call__(self) -> float:
        now = float(self._source())
        if now < self._last:
            return self._last
        self._last = now
        return now

    @property
    def last(self) -> float:
        """The latest time handed out (or advanced to); -inf before the first."""
        return self._last

    def advance(self, at_least: float) -> None:
        """Never hand out a time before ``at_least`` again (used by recovery)."""
        if at_least > self._last:
            self._last = float(at_least)
