"""What every worker loop shares: the data sockets, the mailbox, the jobs held, the answers.

A worker process serves from one thread of its own (the serving thread),
which owns the process's data sockets, one per broker: READY, requests and
cancels, the answers, and the drain's request, acknowledgement and goodbye
all go over them, each answer on the socket its request came from. The
process's event loop keeps the control sockets (heartbeats both ways), so a
long ``predict`` never silences the worker; it steers the serving thread
through a mailbox only and never touches a data socket.

Each loop kind (``BatchingLoop``, ``AsyncLoop``, ``ContinuousLoop``) is a
subclass that says how requests become work: ``_run`` is the thread's
body, ``_admit`` takes a new job, ``_cancelled`` hears that one's client
left. Everything else is here, written once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq

from zeroserve.common import protocol as p
from zeroserve.common.connection import open_dealer
from zeroserve.common.errors import ProtocolError
from zeroserve.common.frames import has_input, recv_frames, send_frames
from zeroserve.common.logs import LogThrottle
from zeroserve.common.security import CurveKeys
from zeroserve.worker.job import Job
from zeroserve.worker.pipeline import Pipeline

log = logging.getLogger(__name__)

#: The longest a waiting thread leaves its mailbox unread (stop, drain, a new broker session).
MAILBOX_WAKE_S = 0.05
MAILBOX_WAKE_MS = round(MAILBOX_WAKE_S * 1000)

#: What the thread hands to the event loop: a broker's DRAIN, REFUSED, ANNOUNCE and
#: DISCONNECT, as (broker link, command, frames).
ControlSink = Callable[[int, bytes, list[Any]], None]


def cancelled_out(job: Job) -> p.Answer:
    """The answer of a job that ends before its work does: its client left, or its time ran out."""
    if job.cancelled:
        return p.error_answer(499, "cancelled")
    return p.error_answer(504, "the request's deadline passed before it was answered")


class ServingLoop:
    """Owns the data socket in the serving thread; the event loop steers it through
    ``announce``, ``send``, ``watch_empty`` and ``stop``."""

    #: The thread's name, as logs and profilers show it.
    thread_name = "serving"

    def __init__(
        self,
        pipeline: Pipeline,
        max_batch_size: int,
        batch_timeout_s: float,
        *,
        endpoints: tuple[str, ...],
        on_control: ControlSink,
        on_failed: Callable[[], None],
        keys: CurveKeys | None = None,
        context: zmq.Context | None = None,
        version: str = "1",
    ) -> None:
        self.pipeline = pipeline
        #: Added to every answer: the version of its service this worker serves.
        self.version_header = {p.VERSION_HEADER: version}
        self.max_batch_size = max_batch_size
        self.batch_timeout_s = batch_timeout_s
        self.endpoints = endpoints
        self.on_control = on_control
        self.on_failed = on_failed
        self.keys = keys
        self.context = context or zmq.Context.instance()
        pipeline.emit = self._send_outs_now
        self.tracing = pipeline.tracing
        self._hooks = pipeline.hooks
        #: Requests held (waiting here or running), by (broker link, client, request id).
        self.jobs: dict[tuple[int, bytes, bytes], Job] = {}
        self.done = 0
        #: Batches run (for the continuous loop: steps), their sizes, and the time they took.
        self.batches = 0
        self.batch_sizes: Counter[int] = Counter()
        self.busy_s = 0.0
        self.bad_messages = 0
        #: The data socket of each broker link (None until its first READY).
        self._socks: list[zmq.Socket | None] = [None] * len(endpoints)
        self._mailbox: queue.SimpleQueue = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._empty: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._bad_log = LogThrottle()

    # -- what each kind says -------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Jobs held that wait for their turn."""
        return 0

    @property
    def running(self) -> int:
        """Jobs held whose work has begun."""
        return len(self.jobs) - self.queued

    def overdue_s(self, now: float) -> float:
        """How long the work that holds the serving thread has run past every deadline in it
        (0: nothing is stuck). The process recycles itself past its hang grace."""
        return 0.0

    def report_blocked(self) -> None:
        """Called by the event loop a few times a second: log what keeps the thread from
        serving, where the kind can tell."""

    def _run(self) -> None:
        raise NotImplementedError

    def _admit(self, job: Job) -> None:
        raise NotImplementedError

    def _cancelled(self, job: Job) -> None:
        """The client of a held job left (``job.cancelled`` is set)."""

    def _wake(self) -> None:
        """Make the thread read its mailbox soon (a thread that waits wakes on its own)."""

    # -- from the event loop -------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._serve, name=self.thread_name, daemon=True)
        self._thread.start()

    def announce(self, link: int, name: bytes, ready: list[Any]) -> None:
        """A fresh data socket named `name` to broker `link`, then READY: work of that broker's
        earlier session is forgotten."""
        self._post("announce", (link, name, ready))

    def send(self, link: int, message: list[Any]) -> None:
        """Send a message on a broker's data socket, after every answer sent before it."""
        self._post("send", (link, message))

    def watch_empty(self, event: asyncio.Event) -> None:
        """Set `event` (on the event loop) once no request is held."""
        self._post("watch_empty", event)

    def stop(self, goodbye: list[Any] | None = None, timeout_s: float = 5.0) -> None:
        """Say `goodbye` to every broker after the last answer, close the sockets and end the
        thread."""
        self._post("stop", goodbye)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _post(self, what: str, arg: Any) -> None:
        self._mailbox.put((what, arg))
        self._wake()

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the process is ending
                self._loop.call_soon_threadsafe(callback, *args)

    # -- the thread ------------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("the serving loop failed; this worker process stops")
            self._to_loop(self.on_failed)
        finally:
            self._close_sockets()

    def _read_mailbox(self) -> None:
        while not self._stopped:
            try:
                what, arg = self._mailbox.get_nowait()
            except queue.Empty:
                return
            self._obey(what, arg)

    def _obey(self, what: str, arg: Any) -> None:
        if what == "announce":
            self._announce(*arg)
        elif what == "send":
            self._send(*arg)
        elif what == "watch_empty":
            self._empty = arg
            if not self.jobs:
                self._to_loop(arg.set)
        elif what == "stop":
            for link, sock in enumerate(self._socks):
                if sock is not None:
                    if arg is not None:
                        self._send(link, arg)
                    sock.setsockopt(zmq.LINGER, 500)
            self._stopped = True

    def _announce(self, link: int, name: bytes, ready: list[Any]) -> None:
        dropped = [job for job in self.jobs.values() if job.link == link]
        for job in dropped:
            del self.jobs[job.key]
            if job.span is not None:
                job.span.set_attribute("zeroserve.dropped", "the broker's session ended")
                self._end_span(job, None)
        self._forget(dropped)
        if dropped:
            log.warning("dropped %d request(s) of a previous broker session", len(dropped))
        self._close_socket(link)
        # No back-off of its own: when the broker is lost, the control link re-announces,
        # which opens a fresh data socket.
        sock = open_dealer(
            self.context,
            self.endpoints[link],
            self.keys,
            routing_id=name,
            reconnect_max_s=0.0,
        )
        self._socks[link] = sock
        self._opened(link, sock)
        self._send(link, ready)

    def _forget(self, dropped: list[Job]) -> None:
        """The jobs of a broker session that ended are gone from ``jobs`` (that broker re-sends
        them): the kind drops them from its own structures too."""

    def _opened(self, link: int, sock: zmq.Socket) -> None:
        """A fresh data socket is in place."""

    def _close_socket(self, link: int) -> None:
        sock, self._socks[link] = self._socks[link], None
        if sock is not None:
            self._closing(link, sock)
            sock.close()

    def _close_sockets(self) -> None:
        for link in range(len(self._socks)):
            self._close_socket(link)

    def _closing(self, link: int, sock: zmq.Socket) -> None:
        """A data socket is about to close."""

    def _read_socket(self) -> None:
        for link, sock in enumerate(self._socks):
            while sock is not None and has_input(sock):
                self._receive(link, recv_frames(sock))

    def _receive(self, link: int, frames: list[bytes]) -> None:
        try:
            command, args = p.parse(frames, p.TO_WORKER)
            if command == p.REQUEST:
                self._on_request(link, args)
            elif command == p.CANCEL:
                job = self.jobs.get((link, p.identity(args[0]), p.identity(args[1])))
                if job is not None and not job.cancelled:
                    job.cancelled = True
                    self._cancelled(job)
            elif command != p.HEARTBEAT:
                self._to_loop(self.on_control, link, command, args)
        except ProtocolError as exc:
            self.bad_messages += 1
            if self._bad_log.ready():
                log.warning("dropped a bad message from the broker: %s", exc)
        except Exception:
            # A bug of ours must cost one message, never the process.
            log.exception("internal error while handling a message; it was dropped")

    def _on_request(self, link: int, args: list[Any]) -> None:
        client, rid = p.identity(args[0]), p.identity(args[1])
        # The frontend's metadata, with the broker's budget and attempt (its hop frame) on top.
        meta = p.unpack_request_meta(args[2], args[3])
        now = time.monotonic()
        job = Job(client, rid, meta, args[4], p.deadline_from(meta, now=now), now, link)
        if self.tracing is not None and "trace" in meta:
            job.span = self.tracing.remote_span(
                meta["trace"],
                "worker.request",
                attributes=self._span_attributes(meta),
            )
        self.jobs[job.key] = job
        if log.isEnabledFor(logging.DEBUG):
            log.debug("request_id=%s received", meta.get("request_id") or "-")
        if self._hooks.callbacks:
            active = meta.get("active", len(self.jobs))
            self._hooks.fire("on_request", active_requests=self._hooks.tracked(active))
        refusal = self.pipeline.refusal(job)
        if refusal is not None:
            self._send_outs(job, refusal)
            return
        self._admit(job)

    def _span_attributes(self, meta: p.RequestMeta) -> dict[str, Any]:
        return {
            "zeroserve.service": str(meta.get("service", "")),
            "zeroserve.request_id": str(meta.get("request_id", "")),
            "zeroserve.attempt": int(meta.get("attempt", 1) or 1),
            "zeroserve.api": self.pipeline.name,
        }

    def _count_batch(self, size: int, began: float) -> None:
        self.batches += 1
        self.batch_sizes[size] += 1
        self.busy_s += time.monotonic() - began

    # -- answers ---------------------------------------------------------------------------

    def _send_outs_now(self, job: Job, outs: list[p.Answer]) -> None:
        """Send at once (a streamed piece, say), then take in what came meanwhile, cancels too."""
        self._send_outs(job, outs)
        self._read_socket()

    def _send_outs(self, job: Job, outs: list[p.Answer]) -> bool:
        """Send a job's messages; the first terminal one ends it, and anything after is dropped.
        True when the job has ended."""
        if self.jobs.get(job.key) is not job:
            return True
        for command, given, body in outs:
            meta = given
            if meta and "status" in meta:  # an answer's first message: it names the version
                meta = {**meta, "headers": {**meta.get("headers", {}), **self.version_header}}
            self._send(job.link, p.answer(command, job.client, job.rid, meta, body))
            if command in p.TERMINAL:
                if job.span is not None:
                    self._end_span(job, meta.get("status", 200) if meta else 200)
                self._ended(job)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug(
                        "request_id=%s answered %s",
                        job.meta.get("request_id") or "-",
                        meta.get("status", 200) if meta else 200,
                    )
                return True
        return False

    def _end_span(self, job: Job, status: Any) -> None:
        if self.tracing is not None:
            self.tracing.end(job.span, status if isinstance(status, int) else None)
        job.span = None

    def _ended(self, job: Job) -> None:
        del self.jobs[job.key]
        self.done += 1
        if self._hooks.callbacks:
            self._hooks.fire("on_response")
        if not self.jobs and self._empty is not None:
            self._to_loop(self._empty.set)

    def _send(self, link: int, message: list[Any]) -> None:
        sock = self._socks[link]
        if sock is None:
            return
        try:
            send_frames(sock, message)
        except zmq.Again:
            log.warning("the data socket is full; a message to the broker was dropped")
