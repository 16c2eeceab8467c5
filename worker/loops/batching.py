"""The sync batching loop: one thread that waits for requests, forms batches and runs them.

Requests come in, batches form, ``predict`` runs and answers go out in the
serving thread, which waits in a blocking receive on its socket like the
simplest ZeroMQ worker: no hand-off between threads on the way of a request,
and no poll set to build for every wait. A batch closes when it is full, or
when ``batch_timeout`` has passed since its first request arrived; what
arrives while a batch runs waits in the socket and forms the next one. Work
whose client left or whose deadline passed is answered here and never
reaches the model. The thread reads its mailbox between receives, at least
every ``MAILBOX_WAKE_S``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from typing import Any

import zmq

from zeroserve.common import protocol as p
from zeroserve.common.frames import recv_frames
from zeroserve.worker.job import Job
from zeroserve.worker.loops.batcher import Batcher
from zeroserve.worker.loops.serving import MAILBOX_WAKE_MS, ServingLoop, cancelled_out

log = logging.getLogger(__name__)


class ThreadedLoop(ServingLoop):
    """A loop whose thread waits in a blocking receive on the data socket."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The socket's receive timeout now, in ms: set only when a wait needs another.
        self._sock_timeout_ms = -1
        #: The data sockets in place, by link; with several, a poller waits on them all.
        self._live: list[tuple[int, zmq.Socket]] = []
        self._poller: zmq.Poller | None = None
        #: The jobs of the work that holds the thread now (a batch, a step).
        self.working: list[Job] = []

    def overdue_s(self, now: float) -> float:
        working = self.working
        return max(0.0, now - max(job.deadline for job in working)) if working else 0.0

    def _opened(self, link: int, sock: zmq.Socket) -> None:
        self._sockets_changed()

    def _closing(self, link: int, sock: zmq.Socket) -> None:
        self._sockets_changed()

    def _sockets_changed(self) -> None:
        self._sock_timeout_ms = -1
        self._live = [(link, s) for link, s in enumerate(self._socks) if s is not None]
        self._poller = None
        if len(self._live) > 1:
            self._poller = zmq.Poller()
            for _, sock in self._live:
                self._poller.register(sock, zmq.POLLIN)

    def _wait(self, wait_ms: int | None) -> None:
        """Block until a message comes, `wait_ms` pass, or it is time to read the mailbox."""
        timeout_ms = MAILBOX_WAKE_MS if wait_ms is None else min(wait_ms, MAILBOX_WAKE_MS)
        live = self._live
        if not live:
            with contextlib.suppress(queue.Empty):
                self._obey(*self._mailbox.get(timeout=timeout_ms / 1000))
            return
        if self._poller is not None:  # several brokers: what came is read by the loop
            self._poller.poll(timeout_ms)
            return
        link, sock = live[0]
        if timeout_ms != self._sock_timeout_ms:
            sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
            self._sock_timeout_ms = timeout_ms
        with contextlib.suppress(zmq.Again):
            self._receive(link, recv_frames(sock, block=True))


class BatchingLoop(ThreadedLoop):
    """Plain ``def`` APIs: one batch at a time, formed while the one before it ran."""

    thread_name = "batching"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batcher = Batcher(self.max_batch_size, self.batch_timeout_s)

    @property
    def queued(self) -> int:
        return len(self.batcher)

    def _run(self) -> None:
        while not self._stopped:
            wait_ms = self.batcher.wait_ms(time.monotonic())
            if wait_ms != 0:
                self._wait(wait_ms)
            if not self._mailbox.empty():
                self._read_mailbox()
            self._read_socket()
            self._run_batch()

    def _admit(self, job: Job) -> None:
        self.batcher.add(job)

    def _forget(self, dropped: list[Job]) -> None:
        self.batcher.keep(self.jobs)

    def _run_batch(self) -> None:
        now = time.monotonic()
        batch, ended = self.batcher.take(now)
        for job in ended:
            self._send_outs(job, [cancelled_out(job)])
        if not batch:
            return
        self.working = batch
        try:
            finished = self.pipeline.run(batch)
        except BaseException:
            log.exception("a batch failed outside user code")
            finished = [
                (job, [p.error_answer(500, "internal error in the worker")]) for job in batch
            ]
        for job, outs in finished:
            self._send_outs(job, outs)
        self.working = []
        self._count_batch(len(batch), now)
