"""The hot path: any path a service announced is forwarded to a broker, and the worker's
answer written back.

The frontend knows no model: it forwards the body bytes unparsed and writes back the
status, content type and bytes that the worker produced.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, cast

import tornado.httputil
import tornado.iostream

from zeroserve.common import protocol as p
from zeroserve.common.tracing import Tracing
from zeroserve.frontend.access import CREDENTIAL_HEADERS, litserve_refusal, zeroserve_refusal
from zeroserve.frontend.broker_link import BROKER_UNREACHABLE, BrokerLink, Route, Waiter
from zeroserve.frontend.config import PROBE_PATHS, FrontendConfig
from zeroserve.frontend.dashboard import Recent
from zeroserve.frontend.errors import PAYLOAD_TOO_LARGE, error_json, stream_error
from zeroserve.frontend.http1 import Connection
from zeroserve.frontend.metrics import FrontendMetrics
from zeroserve.frontend.middlewares import preflight, shape

log = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]+")

#: Headers a worker may not set: the frontend owns the framing.
HOP_BY_HOP = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "trailer"}
)

#: Most header bytes forwarded to a worker (a request's metadata may not exceed 64 KiB).
MAX_FORWARDED_HEADER_BYTES = 32 * 1024


def forwarded_headers(
    headers: tornado.httputil.HTTPHeaders, keep_credentials: bool = True
) -> dict[str, str] | None:
    """The request's headers by lower-case name (repeated ones joined by commas), for an API
    that takes ``context`` or authorizes; None when they are too large to forward."""
    forwarded: dict[str, str] = {}
    size = 0
    for name, value in headers.get_all():
        key = name.lower()
        if not keep_credentials and key in CREDENTIAL_HEADERS:
            continue
        size += len(key) + len(value)
        forwarded[key] = f"{forwarded[key]}, {value}" if key in forwarded else value
    return forwarded if size <= MAX_FORWARDED_HEADER_BYTES else None


@dataclass(frozen=True)
class Frontend:
    """What every request of this frontend process shares."""

    link: BrokerLink
    config: FrontendConfig
    metrics: FrontendMetrics
    recent: Recent
    tracing: Tracing | None = None


_ID_PREFIX = secrets.token_hex(8)
_id_counter = itertools.count(1)


def request_id_of(request: tornado.httputil.HTTPServerRequest) -> str:
    """The client's X-Request-Id when it is a sane one, else a new id unique to this process."""
    given = request.headers.get("X-Request-Id", "")
    if 0 < len(given) <= 128 and REQUEST_ID.fullmatch(given):
        return given
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


class ServeDelegate(tornado.httputil.HTTPMessageDelegate):
    """Any path a service announced: forward the request, write back the worker's answer.

    It sits on the HTTP connection (``http1.Connection``) directly, below ``RequestHandler``:
    the frontend only moves bytes, and a handler's per-request machinery
    (default headers, coroutine, write buffer) cost more than the move.
    """

    def __init__(self, front: Frontend, request: tornado.httputil.HTTPServerRequest) -> None:
        self.front = front
        self.request = request
        self.conn = cast(Connection, request.connection)
        self.request_id = request_id_of(request)
        self.route: Route | None = None
        self.chunks: list[bytes] = []
        #: The answer has begun; nothing else may be written.
        self.answered = False
        self.closed = False
        self.waiter: Waiter | None = None
        self.status = 0
        self.content_type = ""
        self.streaming: asyncio.Future | None = None
        #: Its span, when tracing is on.
        self.span: Any = None
        # A client that leaves before its answer is told here (the delegate only hears of it
        # while the request is read).
        self.conn.set_close_callback(self.on_connection_close)
        self.conn.set_too_large_callback(self.reject_too_large)

    # -- reading the request (Tornado calls these) -----------------------------------

    def headers_received(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
    ) -> None:
        front = self.front
        config = front.config
        if (answer := preflight(config, self.request.method or "", headers)) is not None:
            status, extra, body = answer
            self._write_whole(
                status,
                body,
                headers=self._headers(extra.pop("Content-Type")),
                extra=extra,
                preflight=True,
            )
            return
        if (refused := zeroserve_refusal(headers, config.api_key)) is not None:
            self._write_whole(*refused)
            return
        path = self.request.path
        route = front.link.route(path)
        if route is None:
            if not front.link.alive:
                self._write_error(503, BROKER_UNREACHABLE, {"Retry-After": "1"})
            elif not front.link.routes:
                self._write_error(503, "no service is registered yet", {"Retry-After": "1"})
            else:
                self._write_error(404, "Not Found")
            return
        if self.request.method not in route.methods:
            allowed = ", ".join(sorted(route.methods))
            self._write_error(405, f"{path} accepts {allowed}", {"Allow": allowed})
            return
        if not route.authorize and (refused := litserve_refusal(headers, config.lit_api_key)):
            self._write_whole(*refused)
            return
        self.route = route

    def data_received(self, chunk: bytes) -> None:
        if not self.answered:
            self.chunks.append(chunk)

    def finish(self) -> None:
        if self.answered or self.route is None:
            return
        chunks, self.chunks = self.chunks, []
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        request = self.request
        model = request.headers.get("X-Model-Id", "")
        if len(model) > p.MAX_MODEL_ID:
            self._write_error(400, f"X-Model-Id is at most {p.MAX_MODEL_ID} characters")
            return
        version = request.headers.get(p.VERSION_HEADER, "")
        if version and not p.VERSION_LABEL.match(version):
            self._write_error(400, f"{p.VERSION_HEADER} is 1 to 64 letters, digits and . _ + -")
            return
        headers = None
        if self.route.headers:
            config = self.front.config
            keep = self.route.authorize or not (config.api_key or config.lit_api_key)
            headers = forwarded_headers(request.headers, keep)
            if headers is None:
                self._write_error(431, "the request's headers are too large to forward")
                return
        trace = None
        if self.front.tracing is not None:
            self.span = self._open_span()
            if self.span is not None:
                trace = self.front.tracing.carrier(self.span)
        self.waiter = self.front.link.submit(
            self.route,
            request.path,
            request.method or "POST",
            request.headers.get("Content-Type", ""),
            body,
            request_id=self.request_id,
            headers=headers,
            query=request.query,
            trace=trace,
            model=model,
            version=version,
        )
        self.waiter.listen(self._on_first)

    def _open_span(self) -> Any:
        """The request's span, from when its headers came, under the client's trace if any."""
        request, route = self.request, self.route
        assert self.front.tracing is not None and route is not None
        began_ns = time.time_ns() - int(request.request_time() * 1e9)
        return self.front.tracing.server_span(
            f"{request.method} {request.path}",
            request.headers,
            began_ns,
            {
                "http.request.method": request.method or "",
                "http.route": request.path,
                "url.path": request.path,
                "client.address": request.remote_ip or "",
                "zeroserve.service": route.service,
                "zeroserve.request_id": self.request_id,
            },
        )

    def on_connection_close(self) -> None:
        self.closed = True
        if self.waiter is not None:
            self.front.link.cancel(self.waiter)
        if not self.answered:
            self.answered = True
            self._done(499)

    # -- writing the answer ------------------------------------------------------------

    def _on_first(self, message: p.Answer) -> None:
        """The first message of the answer: a whole reply, an error, or a stream's start."""
        if self.closed or self.answered:
            return
        try:
            self._begin_answer(message)
        except Exception:
            # A bug of ours must not leave the client waiting for its deadline.
            log.exception("could not write an answer (request_id=%s)", self.request_id)
            if not self.answered:
                self._write_error(502, "the answer could not be written")
            elif (stream := getattr(self.conn, "stream", None)) is not None:
                stream.close()  # begun: only a cut connection tells the client

    def _begin_answer(self, message: p.Answer) -> None:
        command, meta, payload = message
        if command == p.ERROR:
            self._write_failure(meta)
            return
        try:
            status = int(meta.get("status", 200))
            if not 100 <= status <= 599:
                raise ValueError(f"status {status}")
            headers = self._headers(str(meta.get("ct", "application/octet-stream")))
            extra = meta.get("headers")
            if isinstance(extra, dict):
                for name, value in extra.items():
                    if str(name).lower() not in HOP_BY_HOP:
                        headers.add(str(name), str(value))
        except (ValueError, TypeError, tornado.httputil.HTTPInputError) as exc:
            log.warning("a worker sent an answer that cannot be written: %s", exc)
            self._write_error(502, "the worker's answer was not valid HTTP")
            return
        if command == p.REPLY:
            self._write_whole(status, payload, headers=headers)
        else:
            self.answered = True
            self.status = status
            self.content_type = headers.get("Content-Type", "")
            # Small pieces must not wait for the client's acknowledgements (Nagle);
            # Tornado turns this off again once the answer is finished.
            stream = getattr(self.conn, "stream", None)
            if stream is not None:
                stream.set_nodelay(True)
            shape(self.front.config, self.request.headers, status, headers, None)
            self.conn.write_headers(
                tornado.httputil.ResponseStartLine("HTTP/1.1", status, _reason(status)),
                headers,
                payload if command == p.CHUNK else None,
            )
            self.streaming = asyncio.ensure_future(self._stream(command, meta, payload))

    async def _stream(self, command: bytes, meta: p.AnswerMeta, payload: bytes) -> None:
        """CHUNK ... END: each piece goes to the client as it comes; the first went with the
        headers."""
        assert self.waiter is not None
        conn = self.conn
        if command == p.CHUNK:
            if self.closed:
                return
            command, meta, payload = await self.waiter.next()
        while command == p.CHUNK:
            try:
                await conn.write(payload)
            except tornado.iostream.StreamClosedError:
                return
            if self.closed:
                return
            command, meta, payload = await self.waiter.next()
        if self.closed:
            return
        if command == p.ERROR:
            conn.write(payload or stream_error(self.content_type, meta))
        elif payload:
            conn.write(payload)
        conn.finish()
        self._done(self.status)

    def _headers(self, content_type: str) -> tornado.httputil.HTTPHeaders:
        """Our headers; the content type may be the worker's, so it is checked (HTTPInputError)."""
        headers = tornado.httputil.HTTPHeaders()
        headers.add("Content-Type", content_type)
        headers["X-Request-Id"] = self.request_id
        headers["Date"] = http_date()
        return headers

    def _write_whole(
        self,
        status: int,
        body: bytes,
        extra: dict[str, str] | None = None,
        headers: tornado.httputil.HTTPHeaders | None = None,
        preflight: bool = False,
    ) -> None:
        if self.answered:
            return
        self.answered = True
        if headers is None:
            headers = self._headers("application/json")
        for name, value in (extra or {}).items():
            headers[name] = value
        if not preflight:
            body = shape(self.front.config, self.request.headers, status, headers, body) or body
        headers["Content-Length"] = str(len(body))
        self.conn.write_headers(
            tornado.httputil.ResponseStartLine("HTTP/1.1", status, _reason(status)), headers, body
        )
        self.conn.finish()
        self._done(status)

    def _write_error(self, status: int, error: Any, extra: dict[str, str] | None = None) -> None:
        self._write_whole(status, error_json(error), extra)

    def _write_failure(self, meta: p.AnswerMeta) -> None:
        status = meta.get("status")
        if not isinstance(status, int) or not 400 <= status <= 599:
            status = 502
        extra = {}
        retry_after = meta.get("retry_after")
        if isinstance(retry_after, (int, float)):
            extra["Retry-After"] = str(max(1, round(retry_after)))
        given = meta.get("headers")
        version = given.get(p.VERSION_HEADER) if isinstance(given, dict) else None
        if isinstance(version, str) and p.VERSION_LABEL.match(version):
            extra[p.VERSION_HEADER] = version  # a worker's error names its version too
        self._write_error(status, meta.get("error", "error"), extra)

    def reject_too_large(self) -> None:
        """The connection found the body over the limit (``http1.Connection``): LitServe's
        413, written as every answer of this delegate is (its headers, CORS)."""
        self.chunks.clear()
        self._write_error(413, PAYLOAD_TOO_LARGE)

    def _done(self, status: int) -> None:
        request = self.request
        if self.span is not None and self.front.tracing is not None:
            self.front.tracing.end(self.span, status)
            self.span = None
        seconds = request.request_time()
        self.front.metrics.observe(
            request.path if self.route is not None else "unmatched", status, seconds
        )
        self.front.recent.observe(seconds)
        log_access(status, request, seconds, self.request_id)


def _reason(status: int) -> str:
    return tornado.httputil.responses.get(status, "Unknown")


_date_cache = (0, "")


def http_date() -> str:
    """The Date header, formatted once a second rather than once a request."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, tornado.httputil.format_timestamp(now))
    return _date_cache[1]


def log_access(
    status: int,
    request: tornado.httputil.HTTPServerRequest,
    seconds: float,
    request_id: str | None,
) -> None:
    """One line per request: at WARNING for our failures, at DEBUG for the rest."""
    quiet = request.path == "/health" or request.path in PROBE_PATHS  # polled while not ready
    level = logging.WARNING if status >= 500 and not quiet else logging.DEBUG
    if log.isEnabledFor(level):
        log.log(
            level,
            "%d %s %s %.1f ms request_id=%s",
            status,
            request.method,
            request.path,
            seconds * 1000,
            request_id or "-",
        )
