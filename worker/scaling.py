"""When a worker launcher adds or removes a process: the decision alone, given the time.

The brokers tell each launcher, in their answers to its heartbeats, how much of its service's
work waits in their queues and how much is in flight. Work that waits means the service needs
more processes: one is added (up to the maximum), then the new one is given a grace to become
ready before the next. A service with nothing queued and nothing in flight for
``scale_down_after_s`` has one process too many: one is removed (down to the minimum), and the
idle clock starts again, so that processes leave one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

#: How long a service must be idle before a process leaves, unless told otherwise.
SCALE_DOWN_AFTER_S = 60.0


@dataclass(frozen=True)
class Load:
    """What the brokers said of the service, summed over them."""

    queued: int = 0
    in_flight: int = 0


class Scaler:
    def __init__(
        self, minimum: int, maximum: int, scale_down_after_s: float, grow_grace_s: float
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.scale_down_after_s = scale_down_after_s
        #: After adding a process, how long to let it start before adding another.
        self.grow_grace_s = grow_grace_s
        self._grown_at = float("-inf")
        self._idle_since: float | None = None

    def decide(self, now: float, processes: int, load: Load) -> int:
        """+1 to add a process, -1 to remove one, 0 to leave them be."""
        if processes < self.minimum:
            return self._grow(now)
        if load.queued or load.in_flight:
            self._idle_since = None
            if (
                load.queued
                and processes < self.maximum
                and now - self._grown_at >= self.grow_grace_s
            ):
                return self._grow(now)
            return 0
        if self._idle_since is None:
            self._idle_since = now
        if processes > self.minimum and now - self._idle_since >= self.scale_down_after_s:
            self._idle_since = now
            return -1
        return 0

    def _grow(self, now: float) -> int:
        self._grown_at = now
        self._idle_since = None
        return 1
