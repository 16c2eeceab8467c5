"""The worker's batching loop: one thread that owns the data socket, forms batches and runs them.

Requests come in, batches form, ``predict`` runs and answers go out in this
one thread, which waits in a blocking receive on its socket like the
simplest ZeroMQ worker: no hand-off between threads on the way of a request,
and no poll set to build for every wait. A batch closes when it is
full, or when ``batch_timeout`` has passed since its first request arrived;
what arrives while a batch runs waits in the socket and forms the next one.
Work whose client left or whose deadline passed is answered here and never
reaches the model.

The process's event loop keeps the control socket (heartbeats both ways),
so a long ``predict`` never silences the worker. It talks to this thread
through a mailbox only, which the thread reads between receives (at least
every ``MAILBOX_WAKE_S``): it never touches the data socket. The data socket
carries everything whose order matters: READY, requests and cancels, the
answers, and the drain's request, acknowledgement and goodbye.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import zmq

from zeroserve.common import protocol as p
from zeroserve.common.connection import open_dealer
from zeroserve.common.errors import ProtocolError
from zeroserve.common.frames import has_input, recv_frames, send_frames
from zeroserve.common.logs import LogThrottle
from zeroserve.common.security import CurveKeys
from zeroserve.worker.framing import Out, error_out
from zeroserve.worker.pipeline import Job, Pipeline

log = logging.getLogger(__name__)

#: The longest a waiting thread leaves its mailbox unread (stop, drain, a new broker session).
MAILBOX_WAKE_S = 0.05
MAILBOX_WAKE_MS = round(MAILBOX_WAKE_S * 1000)

#: Messages the thread hands to the event loop: DISCONNECT metadata from the broker.
ControlSink = Callable[[dict[str, Any]], None]


class BatchingLoop:
    """Owns the data socket in its own thread; the event loop steers it through ``announce``,
    ``send``, ``watch_empty`` and ``stop``."""

    def __init__(
        self,
        pipeline: Pipeline,
        max_batch_size: int,
        batch_timeout_s: float,
        *,
        endpoint: str,
        identity: bytes,
        on_control: ControlSink,
        on_failed: Callable[[], None],
        keys: CurveKeys | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.max_batch_size = max_batch_size
        self.batch_timeout_s = batch_timeout_s
        self.endpoint = endpoint
        self.identity = identity
        self.on_control = on_control
        self.on_failed = on_failed
        self.keys = keys
        self.context = context or zmq.Context.instance()
        pipeline.emit = self._send_outs_now
        #: Requests held (queued here or running), by (client, request id).
        self.jobs: dict[tuple[bytes, bytes], Job] = {}
        self.pending: deque[Job] = deque()
        self.running: list[Job] = []
        self.done = 0
        self.batches = 0
        #: How many batches of each size ran, and for how long predict was busy.
        self.batch_sizes: Counter[int] = Counter()
        self.busy_s = 0.0
        self.bad_messages = 0
        self.generation = 0
        self._sock: zmq.Socket | None = None
        #: The socket's receive timeout now, in ms: set only when a wait needs another.
        self._sock_timeout_ms = -1
        self._mailbox: queue.SimpleQueue = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._empty: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._bad_log = LogThrottle()

    # -- from the event loop -------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="batching", daemon=True)
        self._thread.start()

    def announce(self, ready: list[Any]) -> None:
        """A fresh data socket, then READY: work of an earlier broker session is forgotten."""
        self._mailbox.put(("announce", ready))

    def send(self, message: list[Any]) -> None:
        """Send a message on the data socket, after every answer sent before it."""
        self._mailbox.put(("send", message))

    def watch_empty(self, event: asyncio.Event) -> None:
        """Set `event` (on the event loop) once no request is held."""
        self._mailbox.put(("watch_empty", event))

    def stop(self, goodbye: list[Any] | None = None, timeout_s: float = 5.0) -> None:
        """Say `goodbye` after the last answer, close the socket and end the thread."""
        self._mailbox.put(("stop", goodbye))
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the process is ending
                self._loop.call_soon_threadsafe(callback, *args)

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopped:
                wait_ms = self._wait_ms()
                if wait_ms != 0:
                    self._wait(wait_ms)
                if not self._mailbox.empty():
                    self._read_mailbox()
                self._read_socket()
                self._run_batch()
        except Exception:
            log.exception("the batching loop failed; this worker process stops")
            self._to_loop(self.on_failed)
        finally:
            self._close_socket()

    def _wait(self, wait_ms: int | None) -> None:
        """Block until a message comes, `wait_ms` pass, or it is time to read the mailbox."""
        timeout_ms = MAILBOX_WAKE_MS if wait_ms is None else min(wait_ms, MAILBOX_WAKE_MS)
        sock = self._sock
        if sock is None:
            with contextlib.suppress(queue.Empty):
                self._obey(*self._mailbox.get(timeout=timeout_ms / 1000))
            return
        if timeout_ms != self._sock_timeout_ms:
            sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
            self._sock_timeout_ms = timeout_ms
        with contextlib.suppress(zmq.Again):
            self._receive(recv_frames(sock, block=True))

    def _wait_ms(self) -> int | None:
        """How long to wait for more: until the first pending request's batch is due."""
        if not self.pending:
            return None
        if len(self.pending) >= self.max_batch_size:
            return 0
        due_s = self.pending[0].arrived + self.batch_timeout_s - time.monotonic()
        return 0 if due_s <= 0 else max(1, math.ceil(due_s * 1000))

    def _read_mailbox(self) -> None:
        while not self._stopped:
            try:
                what, arg = self._mailbox.get_nowait()
            except queue.Empty:
                return
            self._obey(what, arg)

    def _obey(self, what: str, arg: Any) -> None:
        if what == "announce":
            self._announce(arg)
        elif what == "send":
            self._send(arg)
        elif what == "watch_empty":
            self._empty = arg
            if not self.jobs:
                self._to_loop(arg.set)
        elif what == "stop":
            if arg is not None:
                self._send(arg)
            if self._sock is not None:
                self._sock.setsockopt(zmq.LINGER, 500)
            self._stopped = True

    def _announce(self, ready: list[Any]) -> None:
        self.generation += 1
        dropped = len(self.pending)
        self.pending.clear()
        self.jobs.clear()
        if dropped:
            log.warning("dropped %d request(s) of a previous broker session", dropped)
        self._close_socket()
        # No back-off of its own: when the broker is lost, the control link re-announces,
        # which opens a fresh data socket.
        sock = open_dealer(
            self.context, self.endpoint, self.keys, routing_id=self.identity, reconnect_max_s=0.0
        )
        self._sock = sock
        self._sock_timeout_ms = -1
        self._send(ready)

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _read_socket(self) -> None:
        sock = self._sock
        while sock is not None and has_input(sock):
            self._receive(recv_frames(sock))

    def _receive(self, frames: list[bytes]) -> None:
        try:
            command, args = p.parse(frames, p.TO_WORKER)
            if command == p.REQUEST:
                self._on_request(args)
            elif command == p.CANCEL:
                job = self.jobs.get((p.identity(args[0]), p.identity(args[1])))
                if job is not None:
                    job.cancelled = True
            elif command == p.DISCONNECT:
                self._to_loop(self.on_control, p.unpack_meta(args[0]))
        except ProtocolError as exc:
            self.bad_messages += 1
            if self._bad_log.ready():
                log.warning("dropped a bad message from the broker: %s", exc)
        except Exception:
            # A bug of ours must cost one message, never the process.
            log.exception("internal error while handling a message; it was dropped")

    def _on_request(self, args: list[Any]) -> None:
        client, rid = p.identity(args[0]), p.identity(args[1])
        meta = p.unpack_meta(args[2])
        now = time.monotonic()
        job = Job(client, rid, meta, args[3], p.deadline_from(meta, now=now), now, self.generation)
        self.jobs[job.key] = job
        self.pending.append(job)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("request_id=%s received", meta.get("request_id") or "-")

    def _run_batch(self) -> None:
        if self._wait_ms() != 0:
            return
        batch: list[Job] = []
        now = time.monotonic()
        while self.pending and len(batch) < self.max_batch_size:
            job = self.pending.popleft()
            if job.cancelled:
                self._send_outs(job, [error_out(499, "cancelled")])
            elif job.deadline <= now:
                self._send_outs(
                    job, [error_out(504, "the request's deadline passed before it started")]
                )
            else:
                batch.append(job)
        if not batch:
            return
        self.running = batch
        self.batches += 1
        self.batch_sizes[len(batch)] += 1
        try:
            finished = self.pipeline.run(batch)
        except BaseException:
            log.exception("a batch failed outside user code")
            finished = [(job, [error_out(500, "internal error in the worker")]) for job in batch]
        for job, outs in finished:
            self._send_outs(job, outs)
        self.running = []
        self.busy_s += time.monotonic() - now

    def _send_outs_now(self, job: Job, outs: list[Out]) -> None:
        """Send at once (a streamed piece, say), then take in what came meanwhile, cancels too."""
        self._send_outs(job, outs)
        self._read_socket()

    def _send_outs(self, job: Job, outs: list[Out]) -> None:
        """Send a job's messages; the first terminal one ends it, and anything after is dropped."""
        if job.generation != self.generation or self.jobs.get(job.key) is not job:
            return
        for command, meta, body in outs:
            self._send(
                [
                    p.SIGNATURE,
                    command,
                    job.client,
                    job.rid,
                    p.pack_meta(meta) if meta else p.EMPTY_META,
                    body,
                ]
            )
            if command in p.TERMINAL:
                del self.jobs[job.key]
                self.done += 1
                if not self.jobs and self._empty is not None:
                    self._to_loop(self._empty.set)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug(
                        "request_id=%s answered %s",
                        job.meta.get("request_id") or "-",
                        meta.get("status", 200) if meta else 200,
                    )
                return

    def _send(self, message: list[Any]) -> None:
        if self._sock is None:
            return
        try:
            send_frames(self._sock, message)
        except zmq.Again:
            log.warning("the data socket is full; a message to the broker was dropped")
