"""What runs next: the batching decision of a worker, with no socket and no clock of its own.

Requests wait here in arrival order. A batch closes when ``max_batch_size`` requests wait,
or ``batch_timeout_s`` after its first request arrived; it takes the oldest requests, and
those whose client left or whose deadline passed are handed back to be answered instead of
reaching the model. A batch never mixes models: it takes the oldest request's model
(``X-Model-Id``), and requests of other models wait, in order, for a batch of their own.
Both loops that batch (sync and async) ask this one object, given the time, so the rule can
be tested on its own.
"""

from __future__ import annotations

import math
from collections import deque

from zeroserve.worker.job import Job


class Batcher:
    def __init__(self, max_batch_size: int, batch_timeout_s: float) -> None:
        self.max_batch_size = max_batch_size
        self.batch_timeout_s = batch_timeout_s
        self._waiting: deque[Job] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, job: Job) -> None:
        self._waiting.append(job)

    def remove(self, job: Job) -> bool:
        try:
            self._waiting.remove(job)
        except ValueError:
            return False
        return True

    def clear(self) -> None:
        self._waiting.clear()

    def keep(self, held: dict) -> None:
        """Drop what waits here but is no longer held (its broker's session ended)."""
        self._waiting = deque(job for job in self._waiting if held.get(job.key) is job)

    def full(self) -> bool:
        return len(self._waiting) >= self.max_batch_size

    def due_at(self) -> float | None:
        """When the oldest request's batch closes (None: nothing waits)."""
        return self._waiting[0].arrived + self.batch_timeout_s if self._waiting else None

    def wait_ms(self, now: float) -> int | None:
        """How long to wait for more before a batch is due: 0 now, None when nothing waits."""
        due = self.due_at()
        if due is None:
            return None
        if self.full() or due <= now:
            return 0
        return max(1, math.ceil((due - now) * 1000))

    def take(self, now: float, *, due_only: bool = True) -> tuple[list[Job], list[Job]]:
        """The next batch, and the requests skipped on the way (cancelled or past their
        deadline), when a batch is due (or whenever anything waits, with ``due_only=False``)."""
        if due_only and self.wait_ms(now) != 0:
            return [], []
        batch: list[Job] = []
        ended: list[Job] = []
        other: list[Job] = []
        waiting = self._waiting
        model = None
        while waiting and len(batch) < self.max_batch_size:
            job = waiting.popleft()
            if job.cancelled or job.deadline <= now:
                ended.append(job)
            elif not batch:
                model = job.meta.get("model")
                batch.append(job)
            elif job.meta.get("model") == model:
                batch.append(job)
            else:
                other.append(job)
        waiting.extendleft(reversed(other))
        return batch, ended
