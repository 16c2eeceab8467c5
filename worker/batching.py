"""The worker's batching loop: forms batches continuously and runs them one at a time.

A batch closes when it is full, or when ``batch_timeout`` has passed since
its first request arrived and the predict thread is free; while a batch
runs, the next one fills. Work whose client left or whose deadline passed
is answered here and never reaches the model.

Scheduling is driven by events on the event loop (a request arrives, a
batch finishes, a batch's time is up), so an idle worker costs nothing and
a busy one takes no extra turns of the loop. The one predict thread takes
batches from a queue and hands back everything (streamed pieces, answers,
the end of a batch) through one outbox: one wake-up of the loop carries all
that came since the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from zeroserve.worker.framing import Out, error_out
from zeroserve.worker.pipeline import Job, Pipeline

log = logging.getLogger(__name__)

AnswerSink = Callable[[Job, list[Out]], None]
_STOP = object()


class BatchingLoop:
    def __init__(
        self,
        pipeline: Pipeline,
        max_batch_size: int,
        batch_timeout_s: float,
        on_answer: AnswerSink,
    ) -> None:
        self.pipeline = pipeline
        self.max_batch_size = max_batch_size
        self.batch_timeout_s = batch_timeout_s
        self.on_answer = on_answer
        pipeline.emit = self.emit
        self.pending: deque[Job] = deque()
        self.running: list[Job] = []
        self.batches = 0
        #: How many batches of each size ran, and for how long the predict thread was busy.
        self.batch_sizes: Counter[int] = Counter()
        self.busy_s = 0.0
        self._started_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        #: (job, messages) from the predict thread; (None, batch) marks a batch's end.
        self._outbox: deque[tuple[Job | None, Any]] = deque()
        self._wake_pending = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._predict_thread, name="predict", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._work.put(_STOP)

    def submit(self, job: Job) -> None:
        self.pending.append(job)
        self._schedule()

    def drop_pending(self) -> int:
        """Forget work that has not started (its broker session is gone)."""
        dropped = len(self.pending)
        self.pending.clear()
        return dropped

    @property
    def busy(self) -> bool:
        return bool(self.running)

    # -- deciding when a batch closes -------------------------------------------------

    def _schedule(self) -> None:
        if self.running or not self.pending:
            return
        if len(self.pending) < self.max_batch_size:
            due = self.pending[0].arrived + self.batch_timeout_s
            if time.monotonic() < due:
                if self._timer is None and self._loop is not None:
                    self._timer = self._loop.call_at(due, self._time_is_up)
                return
        self._start()

    def _time_is_up(self) -> None:
        self._timer = None
        self._schedule()

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch: list[Job] = []
        now = time.monotonic()
        while self.pending and len(batch) < self.max_batch_size:
            job = self.pending.popleft()
            if job.cancelled:
                self.on_answer(job, [error_out(499, "cancelled")])
            elif job.deadline <= now:
                self.on_answer(
                    job, [error_out(504, "the request's deadline passed before it started")]
                )
            else:
                batch.append(job)
        if not batch:
            self._schedule()
            return
        self.running = batch
        self.batches += 1
        self.batch_sizes[len(batch)] += 1
        self._started_at = now
        self._work.put(batch)

    # -- the predict thread -------------------------------------------------------------

    def _predict_thread(self) -> None:
        while True:
            batch = self._work.get()
            if batch is _STOP:
                return
            try:
                finished = self.pipeline.run(batch)
            except BaseException:
                log.exception("a batch failed outside user code")
                finished = [
                    (job, [error_out(500, "internal error in the worker")]) for job in batch
                ]
            self._outbox.extend(finished)
            self._outbox.append((None, batch))
            self._wake()

    def emit(self, job: Job, outs: list[Out]) -> None:
        """From the predict thread: messages for one job, such as a streamed piece."""
        self._outbox.append((job, outs))
        self._wake()

    def _wake(self) -> None:
        if not self._wake_pending and self._loop is not None:
            self._wake_pending = True
            with contextlib.suppress(RuntimeError):  # the loop has closed: the process is ending
                self._loop.call_soon_threadsafe(self._collect)

    def _collect(self) -> None:
        """On the loop: send what the predict thread handed back; start the next batch."""
        self._wake_pending = False
        while self._outbox:
            job, item = self._outbox.popleft()
            if job is not None:
                self.on_answer(job, item)
            else:
                self.running = []
                self.busy_s += time.monotonic() - self._started_at
        self._schedule()
