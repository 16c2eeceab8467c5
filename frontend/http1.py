"""HTTP/1.1 connections parsed by httptools, behind Tornado's ``HTTPConnection`` interface.

Tornado's own ``HTTP1Connection`` parses in Python and runs a coroutine, a connection object
and a header dictionary's regular expressions for every request: measured, most of the
frontend's time. Here the parsing is llhttp's (C, through httptools, as uvicorn uses it) over
Tornado's ``IOStream``, and each request is delivered to the same delegates (Tornado's
routing and ``RequestHandler`` for the frontend's own endpoints, ``ServeDelegate`` for the
services), which write through ``write_headers``, ``write`` and ``finish`` as before.

Requests on one connection are answered in order: while one is being answered, the
connection reads no more, and what a read had already brought of later requests waits.
A response finished before its request was read whole closes the connection afterwards,
once what the client still sends of it has been read and dropped for a while (a lingering
close), so that a client writing a body too large reads its 413 instead of a reset. A
connection that waits on its client longer than the idle timeout, for a request's first
byte, its headers or its body, is closed by the server's watch.

A draining server (``drain``) takes no new connection and no new request: those waiting
for a next request close at once, the others after the answer they owe.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools
import tornado.httpserver
import tornado.httputil
import tornado.iostream

from zeroserve.frontend.errors import TOO_LARGE

log = logging.getLogger(__name__)

#: What one read asks the stream for.
READ_BYTES = 64 * 1024
#: How long the rest of a request answered early (413) is read and dropped before the
#: connection closes, so a client still sending its body reads the answer instead of a
#: reset connection (nginx's lingering close).
LINGER_S = 10.0
#: A body or chunk this long is written after its head, not joined to it (a copy).
COPY_BELOW = 128 * 1024
#: Most bytes of a request's start line and headers.
MAX_HEADER_BYTES = 64 * 1024
CR_OR_LF = re.compile(rb"[\r\n]")
CONTINUE = b"HTTP/1.1 100 (Continue)\r\n\r\n"
#: A request's parts, delivered in order: ("headers", start line, headers, keep-alive, body
#: too large), ("body", bytes), ("end",).
Event = tuple[Any, ...]


class RequestContext:
    """What ``HTTPServerRequest`` reads from its connection: the client's address, the scheme."""

    def __init__(self, stream: tornado.iostream.IOStream, address: Any) -> None:
        family = stream.socket.family if stream.socket is not None else None
        ip = address[0] if family in (socket.AF_INET, socket.AF_INET6) else "0.0.0.0"
        self.remote_ip = ip
        self.protocol = "https" if isinstance(stream, tornado.iostream.SSLIOStream) else "http"

    def __str__(self) -> str:
        return self.remote_ip


class IdleWatch:
    """Connections waiting on their client, and since when; a sweep closes those past the
    limit (one task for all, rather than a timer per read)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.waiting: dict[Connection, float] = {}

    def sweep(self, now: float) -> None:
        limit = now - self.timeout_s
        for conn, since in list(self.waiting.items()):
            if since <= limit:
                del self.waiting[conn]
                log.info("closed a connection idle or stalled for over %g s", self.timeout_s)
                conn.stream.close()

    async def run(self) -> None:
        period_s = min(1.0, self.timeout_s / 4)
        while True:
            await asyncio.sleep(period_s)
            self.sweep(time.monotonic())


class Server(tornado.httpserver.HTTPServer):
    """Tornado's HTTP server with httptools connections; its settings are read the same way."""

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.idle = IdleWatch(self.conn_params.header_timeout or 3600.0)
        self.max_body_bytes = self.conn_params.max_body_size or 100 * 1024 * 1024
        self._watch: asyncio.Task | None = None
        self.draining = False

    def handle_stream(self, stream: tornado.iostream.IOStream, address: Any) -> None:
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self.idle.run())
        conn = Connection(self, stream, address)
        self._connections.add(conn)  # type: ignore[arg-type]
        conn.start()

    def stop(self) -> None:
        super().stop()
        if self._watch is not None:
            self._watch.cancel()

    def drain(self) -> None:
        """Close the listening sockets; each connection closes once it owes no answer."""
        self.stop()
        self.draining = True
        for conn in list(self._connections):
            if isinstance(conn, Connection):
                conn.drain()


class Connection(tornado.httputil.HTTPConnection):
    """One client's connection: its parser, the request being answered, and those waiting."""

    def __init__(self, server: Server, stream: tornado.iostream.IOStream, address: Any) -> None:
        self.server = server
        self.stream = stream
        self.context = RequestContext(stream, address)
        self.parser = httptools.HttpRequestParser(self)
        # Parsing (the request being read).
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body_bytes = 0
        #: Parts of later requests, held while one is being answered.
        self._held: deque[Event] = deque()
        # Answering (the request whose delegate has it).
        self._delegate: Any = None
        self._start_line: tornado.httputil.RequestStartLine | None = None
        self._keep_alive = False
        self._read_done = False
        self._answering = False
        self._response_started = False
        self._chunked = False
        self._head = False
        self._close_after = False
        self._lingering = False
        self._last_write: asyncio.Future | None = None
        self._close_callback: Callable[[], None] | None = None
        self._too_large_callback: Callable[[], None] | None = None
        self._resume: asyncio.Future | None = None
        self._closed = asyncio.get_running_loop().create_future()

    # -- reading -----------------------------------------------------------------------

    def start(self) -> None:
        self.stream.set_close_callback(self._on_stream_closed)
        if self.stream.socket is not None and self.stream.socket.family != socket.AF_UNIX:
            self.stream.set_nodelay(True)  # answers are written whole: Nagle only delays them
        self._reader = asyncio.ensure_future(self._read_loop())

    async def _read_loop(self) -> None:
        stream = self.stream
        waiting = self.server.idle.waiting
        try:
            while True:
                while (self._answering or self._held) and not self._lingering:
                    self._resume = asyncio.get_running_loop().create_future()
                    await self._resume
                if not self._lingering:
                    # From the first wait for a request until it has been read whole.
                    waiting.setdefault(self, time.monotonic())
                data = await stream.read_bytes(READ_BYTES, partial=True)
                if self._lingering:
                    continue
                try:
                    self.parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    self._refuse(400, "protocol upgrades are not supported")
                    return
                except httptools.HttpParserError as exc:
                    cause = exc.__context__
                    if isinstance(cause, _Refused):
                        if self._lingering:
                            continue
                        return
                    if cause is not None:  # a delegate raised: a bug, never the client's
                        log.error("internal error while serving a request", exc_info=cause)
                        stream.close()
                        return
                    self._refuse(400, f"malformed request: {exc}")
                    return
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            waiting.pop(self, None)

    def drain(self) -> None:
        """Close now if no answer is owed; else close after it."""
        if self._delegate is None and not self._held:
            self.stream.close()
        else:
            self._close_after = True

    def _too_large(self) -> bool:
        """The body is over the limit (the one place that decides): LitServe's 413, written by
        the request's delegate when it said how (``set_too_large_callback``: True), else here
        (False). A delegate that answered first (404, 401) keeps its answer."""
        reject = self._too_large_callback
        if reject is not None and not (self._answering or self._held or self._response_started):
            reject()
            return True
        if not self._response_started:
            self._refuse(413, "the request body is too large")
        return False

    def _refuse(self, status: int, why: str) -> None:
        """Answer a request that cannot be read (only before its answer began), then close."""
        log.info("refused a request from %s: %s", self.context.remote_ip, why)
        if not (self._answering or self._response_started or self.stream.closed()):
            body, content_type = why.encode(), "text/plain; charset=utf-8"
            if status == 413:  # the answer LitServe gives, wherever the limit was found
                body, content_type = TOO_LARGE, "application/json"
            head = (
                f"HTTP/1.1 {status} {tornado.httputil.responses.get(status, 'Error')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            written = self.stream.write(head.encode() + body)
            if status == 413:
                self._lingering = True
                written.add_done_callback(self._linger_after_write)
            else:
                written.add_done_callback(self._close_after_write)
        else:
            self.stream.close()

    def _close_after_write(self, written: asyncio.Future) -> None:
        if not written.cancelled():
            written.exception()  # a client gone meanwhile is no news
        self.stream.close()

    def _linger_after_write(self, written: asyncio.Future) -> None:
        if not written.cancelled() and written.exception() is None:
            self._linger()
        else:
            self.stream.close()

    def _linger(self) -> None:
        """The answer is sent: end our side, drop what the client still sends (the read loop
        does, while ``_lingering``), and close when it closes or ``LINGER_S`` has passed."""
        self._lingering = True
        self.server.idle.waiting.pop(self, None)
        try:
            if self.stream.socket is not None:
                self.stream.socket.shutdown(socket.SHUT_WR)
        except OSError:
            self.stream.close()
            return
        asyncio.get_running_loop().call_later(LINGER_S, self.stream.close)

    # httptools calls these from feed_data, in order.

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._count_header_bytes(len(name) + len(value) + 4)

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(431, "the request's headers are too large")
            raise _Refused

    def on_headers_complete(self) -> None:
        parser = self.parser
        headers = tornado.httputil.HTTPHeaders()
        for name, value in self._headers:
            headers.add(name.decode("latin1"), value.decode("latin1"))
        length = headers.get("Content-Length")
        too_large = (
            length is not None and length.isdigit() and int(length) > self.server.max_body_bytes
        )
        if too_large and (self._answering or self._held):
            self._too_large()
            raise _Refused
        start_line = tornado.httputil.RequestStartLine(
            parser.get_method().decode("latin1"),
            self._url.decode("latin1"),
            f"HTTP/{parser.get_http_version()}",
        )
        self._event(("headers", start_line, headers, parser.should_keep_alive(), too_large))

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._response_started:
            return  # answered early: the rest is dropped, then the connection lingers
        if self._body_bytes > self.server.max_body_bytes:
            if not self._too_large():
                raise _Refused
            return  # answered by its delegate: the rest is dropped, then it lingers
        self._event(("body", body))

    def on_message_complete(self) -> None:
        self.server.idle.waiting.pop(self, None)
        self._event(("end",))

    def _event(self, event: Event) -> None:
        if self._answering or self._held:
            self._held.append(event)
        else:
            self._deliver(event)

    def _deliver(self, event: Event) -> None:
        kind = event[0]
        if kind == "headers":
            self._begin(event[1], event[2], event[3], event[4])
        elif kind == "body":
            if self._delegate is not None:
                self._delegate.data_received(event[1])
        else:
            self._read_done = True
            self._answering = True
            if self._delegate is not None:
                self._delegate.finish()

    def _begin(
        self,
        start_line: tornado.httputil.RequestStartLine,
        headers: tornado.httputil.HTTPHeaders,
        keep_alive: bool,
        too_large: bool,
    ) -> None:
        self._start_line = start_line
        self._keep_alive = keep_alive and not self.server.conn_params.no_keep_alive
        self._read_done = self._response_started = self._chunked = False
        self._close_after = not self._keep_alive or self.server.draining
        self._head = start_line.method == "HEAD"
        self._close_callback = self._too_large_callback = None
        if (
            not too_large
            and headers.get("Expect", "").lower() == "100-continue"
            and start_line.version == "HTTP/1.1"
        ):
            self.stream.write(CONTINUE)
        self._delegate = self.server.start_request(self, self)
        self._delegate.headers_received(start_line, headers)
        if too_large and not self._response_started and not self._too_large():
            raise _Refused

    # -- writing (Tornado's HTTPConnection) ------------------------------------------

    def write_headers(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
        chunk: bytes | None = None,
    ) -> asyncio.Future:
        assert isinstance(start_line, tornado.httputil.ResponseStartLine)
        request = self._start_line
        assert request is not None
        code = start_line.code
        self._response_started = True
        self._chunked = (
            request.version == "HTTP/1.1"
            and not self._head
            and code not in (204, 304)
            and not 100 <= code < 200
            and "Content-Length" not in headers
        )
        if self._chunked:
            headers["Transfer-Encoding"] = "chunked"
        elif "Content-Length" not in headers and not self._head and code not in (204, 304):
            self._close_after = True  # only the end of the connection ends this body
        if not self._read_done:
            self._close_after = True
        if request.version == "HTTP/1.1" and self._close_after:
            headers["Connection"] = "close"
        elif request.version == "HTTP/1.0" and self._keep_alive:
            headers["Connection"] = "Keep-Alive"
        lines = [f"HTTP/1.1 {code} {start_line.reason}".encode("latin1")]
        lines.extend(f"{name}: {value}".encode("latin1") for name, value in headers.get_all())
        for line in lines:
            if CR_OR_LF.search(line):
                raise ValueError(f"Illegal characters (CR or LF) in header: {line!r}")
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        if chunk and not self._head:
            return self._write_framed(head, chunk)
        return self._write(head)

    def write(self, chunk: bytes) -> asyncio.Future:
        if chunk and not self._head:
            return self._write_framed(b"", chunk)
        return self._write(b"")

    def finish(self) -> None:
        if self._chunked:
            self._write(b"0\r\n\r\n")
        if not self._read_done:
            self._close_after = True
        last = self._last_write
        if last is None or last.done():
            self._finished()
        else:
            last.add_done_callback(lambda _: self._finished())

    def _write_framed(self, head: bytes, chunk: bytes) -> asyncio.Future:
        """`head`, then `chunk` framed as the answer is (chunked or not): one write when the
        chunk is small, else the chunk written apart, so that it is not copied."""
        tail = b""
        if self._chunked:
            head += b"%x\r\n" % len(chunk)
            tail = b"\r\n"
        if len(chunk) < COPY_BELOW:
            return self._write(head + chunk + tail)
        if head:
            self._write(head)
        written = self._write(chunk)
        return self._write(tail) if tail else written

    def _write(self, data: bytes) -> asyncio.Future:
        if self.stream.closed():
            future = asyncio.get_running_loop().create_future()
            future.set_exception(tornado.iostream.StreamClosedError())
            future.exception()  # nobody need look
            return future
        self._last_write = self.stream.write(data)
        return self._last_write

    def _finished(self) -> None:
        """The answer is on its way: close, or take the next request."""
        self._delegate = None
        self._close_callback = self._too_large_callback = None
        self._last_write = None
        if self._close_after:
            if self._read_done:
                self.stream.close()
            else:
                self._linger()
            return
        self._answering = False
        try:
            while self._held and not self._answering:
                self._deliver(self._held.popleft())
                if self.stream.closed():
                    return
        except Exception:
            log.exception("internal error while serving a request")
            self.stream.close()
            return
        if not self._answering and self._resume is not None and not self._resume.done():
            self._resume.set_result(None)

    # -- closing ---------------------------------------------------------------------

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        """Called once if the client goes before the current request is answered (in place
        of the delegate's ``on_connection_close``)."""
        self._close_callback = callback

    def set_too_large_callback(self, callback: Callable[[], None] | None) -> None:
        """Called, in place of the answer written here, when the current request's body is
        over the limit (a delegate that writes its answers itself, with their headers)."""
        self._too_large_callback = callback

    def _on_stream_closed(self) -> None:
        """A client gone is told once: to the close callback when the request's delegate set
        one, else to the delegate while its request is being read."""
        self.server.idle.waiting.pop(self, None)
        callback, self._close_callback = self._close_callback, None
        if callback is not None:
            callback()
        elif self._delegate is not None and not self._read_done:
            self._delegate.on_connection_close()
        self._delegate = None
        if self._resume is not None and not self._resume.done():
            self._resume.set_exception(tornado.iostream.StreamClosedError())
        if not self._closed.done():
            self._closed.set_result(None)
        self.server.on_close(self)

    async def close(self) -> None:
        """Close now (the server is stopping) and wait until it is closed."""
        self.stream.close()
        await self._closed


class _Refused(Exception):
    """Raised from a parser callback once the request was refused, to stop the parser."""
