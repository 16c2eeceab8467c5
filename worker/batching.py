"""The worker's batching loop: forms batches continuously and runs them one at a time.

A batch closes when it is full, or when ``batch_timeout`` has passed since
its first request arrived and the executor is free; while a batch runs, the
next one fills. Work whose client left or whose deadline passed is answered
here and never reaches the model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from zeroserve.worker.framing import Out, error_out
from zeroserve.worker.pipeline import Job, Pipeline

log = logging.getLogger(__name__)

AnswerSink = Callable[[Job, list[Out]], None]


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
        self.pending: deque[Job] = deque()
        self.running: list[Job] = []
        self.batches = 0
        #: How many batches of each size ran, and for how long the executor was busy.
        self.batch_sizes: Counter[int] = Counter()
        self.busy_s = 0.0
        self._started_at = 0.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._busy = False
        self._wake: asyncio.Future | None = None

    def submit(self, job: Job) -> None:
        self.pending.append(job)
        self._poke()

    def drop_pending(self) -> int:
        """Forget work that has not started (its broker session is gone)."""
        dropped = len(self.pending)
        self.pending.clear()
        return dropped

    @property
    def idle(self) -> bool:
        return not self.pending and not self._busy

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _sleep(self, timeout_s: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._wake = loop.create_future()
        timer = loop.call_later(timeout_s, self._poke) if timeout_s is not None else None
        try:
            await self._wake
        finally:
            self._wake = None
            if timer is not None:
                timer.cancel()

    async def run(self) -> None:
        try:
            while True:
                await self._next_batch_ready()
                batch = self._take_batch()
                if batch:
                    self._start(batch)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _next_batch_ready(self) -> None:
        while not self.pending:
            await self._sleep(None)
        first_arrived = self.pending[0].arrived
        while len(self.pending) < self.max_batch_size:
            remaining = first_arrived + self.batch_timeout_s - time.monotonic()
            if not self._busy and remaining <= 0:
                break
            await self._sleep(None if self._busy else remaining)
            if not self.pending:
                return
        while self._busy:
            await self._sleep(None)

    def _take_batch(self) -> list[Job]:
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
        return batch

    def _start(self, batch: list[Job]) -> None:
        self._busy = True
        self.running = batch
        self.batches += 1
        self.batch_sizes[len(batch)] += 1
        self._started_at = time.monotonic()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self.pipeline.run, batch)
        future.add_done_callback(lambda f: self._finished(batch, f))

    def _finished(self, batch: list[Job], future: asyncio.Future) -> None:
        self._busy = False
        self.running = []
        self.busy_s += time.monotonic() - self._started_at
        if future.cancelled():
            finished = [(job, [error_out(503, "the worker is shutting down")]) for job in batch]
        elif future.exception() is not None:
            log.error("a batch failed outside user code", exc_info=future.exception())
            finished = [(job, [error_out(500, "internal error in the worker")]) for job in batch]
        else:
            finished = future.result()
        for job, outs in finished:
            self.on_answer(job, outs)
        self._poke()
