"""The async loop: many requests of an ``async def`` API in flight at once on one event loop.

The serving thread runs an asyncio event loop of its own (the heartbeats
stay on the process's loop, in the main thread, so a coroutine that blocks
cannot silence the worker). The data socket is read when its descriptor
says so; every request (or, with ``max_batch_size`` above 1, every batch)
becomes a task that awaits the pipeline's stages, and the broker's credit
bounds how many there are. Batches form continuously: one closes when it is
full or ``batch_timeout`` after its first request, whatever else runs, so
several may be in flight at once.

A client that leaves, or a deadline that passes, answers its request at
once and cancels its task (``CancelledError`` inside user code), or, for a
batch, once none of its requests is waited for any more. A pulse on the
loop tells when something holds it; the process's event loop then logs
which stage, where, and for how long.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import time
from typing import Any

import zmq

from zeroserve.common import protocol as p
from zeroserve.common.frames import EdgeReader
from zeroserve.common.logs import LogThrottle
from zeroserve.worker.job import Job
from zeroserve.worker.loops.batcher import Batcher
from zeroserve.worker.loops.serving import ServingLoop, cancelled_out
from zeroserve.worker.pipeline import Pipeline

log = logging.getLogger(__name__)

#: How often the loop shows it is alive, and how late a pulse must be to count as blocked.
PULSE_S = 0.1
BLOCKED_S = 0.5


class AsyncLoop(ServingLoop):
    """``async def`` APIs: each request's stages run as a task of their own, up to capacity."""

    thread_name = "async"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Batched APIs only: requests whose batch has not closed yet.
        self.batcher = Batcher(self.max_batch_size, self.batch_timeout_s)
        self.pulse_at = time.monotonic()
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        #: The tasks at work, each with the jobs it serves.
        self._tasks: dict[asyncio.Task, list[Job]] = {}
        self._batch_timer: asyncio.TimerHandle | None = None
        #: Per link: its data socket's reader.
        self._readers: dict[int, EdgeReader] = {}
        self._blocked_log = LogThrottle()
        self._blocked_since: float | None = None
        #: Since when some task has been at work (busy time is wall time with any at work).
        self._busy_since = 0.0

    @property
    def queued(self) -> int:
        return len(self.batcher)

    # -- the thread and its event loop -------------------------------------------------------

    def _run(self) -> None:
        aloop = asyncio.new_event_loop()
        self._aloop = aloop
        try:
            aloop.run_until_complete(self._main())
        finally:
            aloop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        self._pulse()
        self._read_mailbox()
        await self._stopping.wait()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        self._close_sockets()

    def _wake(self) -> None:
        aloop = self._aloop
        if aloop is not None:
            with contextlib.suppress(RuntimeError):  # closed: the thread has ended
                aloop.call_soon_threadsafe(self._read_mailbox)

    def _obey(self, what: str, arg: Any) -> None:
        super()._obey(what, arg)
        if self._stopped and self._stopping is not None:
            self._stopping.set()

    def _pulse(self) -> None:
        self.pulse_at = time.monotonic()
        assert self._aloop is not None
        self._aloop.call_later(PULSE_S, self._pulse)

    # -- the socket ------------------------------------------------------------------------------

    def _opened(self, link: int, sock: zmq.Socket) -> None:
        assert self._aloop is not None
        self._readers[link] = EdgeReader(self._aloop, sock, functools.partial(self._receive, link))

    def _closing(self, link: int, sock: zmq.Socket) -> None:
        reader = self._readers.pop(link, None)
        if reader is not None:
            reader.close()

    def _send(self, link: int, message: list[Any]) -> None:
        super()._send(link, message)
        reader = self._readers.get(link)
        if reader is not None:
            reader.after_send()

    # -- requests ----------------------------------------------------------------------------------

    def _admit(self, job: Job) -> None:
        aloop = self._aloop
        assert aloop is not None
        job.timer = aloop.call_at(job.deadline, self._expire, job)
        if self.max_batch_size == 1:
            self._start([job])
            return
        self.batcher.add(job)
        if self.batcher.full():
            self._close_batches()
        elif self._batch_timer is None:
            self._batch_timer = aloop.call_at(job.arrived + self.batch_timeout_s, self._close_due)

    def _close_due(self) -> None:
        self._batch_timer = None
        self._start_batch(due_only=False)
        self._close_batches()

    def _close_batches(self) -> None:
        """Start every full batch; time the one still filling from its first request."""
        while self.batcher.full():
            self._start_batch()
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        due = self.batcher.due_at()
        if due is not None and self._aloop is not None:
            self._batch_timer = self._aloop.call_at(due, self._close_due)

    def _start_batch(self, *, due_only: bool = True) -> None:
        batch, ended = self.batcher.take(time.monotonic(), due_only=due_only)
        for job in ended:
            self._send_outs(job, [cancelled_out(job)])
        if batch:
            self._start(batch)

    def _start(self, jobs: list[Job]) -> None:
        assert self._aloop is not None
        task = self._aloop.create_task(self._work(jobs))
        if not self._tasks:
            self._busy_since = time.monotonic()
        self._tasks[task] = jobs
        for job in jobs:
            job.task = task

    async def _work(self, jobs: list[Job]) -> None:
        try:
            finished = await self.pipeline.serve(jobs)
        except asyncio.CancelledError:
            finished = [(job, [cancelled_out(job)]) for job in jobs]
        except Exception:
            log.exception("a batch failed outside user code")
            finished = [
                (job, [p.error_answer(500, "internal error in the worker")]) for job in jobs
            ]
        finally:
            self._tasks.pop(jobs[0].task, None)  # every job of a batch has its one task
        for job, outs in finished:
            self._send_outs(job, outs)
        self.batches += 1
        self.batch_sizes[len(jobs)] += 1
        if not self._tasks:
            self.busy_s += time.monotonic() - self._busy_since

    def _cancelled(self, job: Job) -> None:
        self._end_early(job)

    def _expire(self, job: Job) -> None:
        job.timer = None
        if self.jobs.get(job.key) is job:
            self._end_early(job)

    def _end_early(self, job: Job) -> None:
        """Answer a job whose client left or whose time ran out, and stop the work it needed."""
        if job.task is None:
            self.batcher.remove(job)
        self._send_outs(job, [cancelled_out(job)])
        task = job.task
        if task is not None and not any(
            self.jobs.get(j.key) is j for j in self._tasks.get(task, ())
        ):
            task.cancel()

    def _ended(self, job: Job) -> None:
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        super()._ended(job)

    def _forget(self, dropped: list[Job]) -> None:
        held = self.jobs
        for job in dropped:
            if job.timer is not None:
                job.timer.cancel()
                job.timer = None
        for task, jobs in list(self._tasks.items()):
            if not any(held.get(job.key) is job for job in jobs):
                task.cancel()
        self.batcher.keep(held)

    # -- what the process's event loop asks ------------------------------------------------------

    def blocked_s(self, now: float) -> float:
        """How long the loop has been held by one piece of work (0: it runs)."""
        late = now - self.pulse_at - PULSE_S
        return late if late >= BLOCKED_S else 0.0

    def overdue_s(self, now: float) -> float:
        if not self.blocked_s(now) or not self.jobs:
            return 0.0
        return max(0.0, now - max(job.deadline for job in self.jobs.values()))

    def report_blocked(self) -> None:
        now = time.monotonic()
        blocked_s = self.blocked_s(now)
        if not blocked_s:
            if self._blocked_since is not None:
                log.warning(
                    "the event loop of %s runs again after %.1f s",
                    self.pipeline.name,
                    now - self._blocked_since,
                )
                self._blocked_since = None
            return
        if self._blocked_since is None:
            self._blocked_since = self.pulse_at + PULSE_S
        if self._blocked_log.ready():
            log.warning(
                "%s has blocked the event loop for %.1f s: nothing else runs meanwhile "
                "(heartbeats do). Await instead, or move blocking work to a thread "
                "(asyncio.to_thread)",
                self._blocker(),
                blocked_s,
            )

    def _blocker(self) -> str:
        """Which stage of which request holds the loop, and where, read off the thread's stack."""
        thread = self._thread
        ident = thread.ident if thread is not None else None
        frame = sys._current_frames().get(ident) if ident is not None else None
        if frame is None:
            return "something"
        where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
        stage = jobs = None
        while frame is not None:
            code = frame.f_code
            if stage is None and code is Pipeline.call.__code__:
                stage = frame.f_locals.get("method")
            elif code is AsyncLoop._work.__code__:
                jobs = frame.f_locals.get("jobs")
                break
            frame = frame.f_back
        if stage is None:
            return f"code outside the API's stages ({where})"
        ids = ", ".join(str(job.meta.get("request_id") or "-") for job in jobs or ())
        return f"{self.pipeline.name}.{stage} ({where}, request_id={ids or '-'})"
