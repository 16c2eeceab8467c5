"""The frontend's HTTP endpoints: the routes services announce, plus health and info.

The frontend knows no model: it forwards the body bytes unparsed and writes
back the status, content type and bytes that the worker produced. Every
error it makes itself is JSON ``{"detail": "..."}``, as FastAPI writes it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, cast

import tornado.httputil
import tornado.iostream
import tornado.routing
import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST

from zeroserve.common import protocol as p
from zeroserve.common.tracing import Tracing
from zeroserve.common.version import __version__
from zeroserve.frontend.access import (
    BROWSER_UNAUTHORIZED,
    CREDENTIAL_HEADERS,
    UNAUTHORIZED,
    litserve_refusal,
    refusal,
    zeroserve_refusal,
)
from zeroserve.frontend.broker_link import BROKER_UNREACHABLE, BrokerLink, Route, Waiter
from zeroserve.frontend.config import PROBE_PATHS, FrontendConfig
from zeroserve.frontend.cors import CorsPolicy
from zeroserve.frontend.dashboard import CONTENT_SECURITY_POLICY, Recent, dashboard_data
from zeroserve.frontend.dashboard import page as dashboard_page
from zeroserve.frontend.http1 import Connection
from zeroserve.frontend.metrics import FrontendMetrics, merge_snapshots
from zeroserve.frontend.middlewares import preflight, shape, transforms

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


def error_body(error: Any) -> dict[str, Any]:
    """An error as FastAPI, and so LitServe, writes it."""
    return {"detail": error}


class JSONErrorMixin(tornado.web.RequestHandler):
    request_id: str | None = None

    def write_json_error(
        self, status: int, error: Any, headers: dict[str, str] | None = None
    ) -> None:
        self.write_json(status, json.dumps(error_body(error), separators=(",", ":")), headers)

    def write_json(
        self, status: int, body: bytes | str, headers: dict[str, str] | None = None
    ) -> None:
        self.clear()
        self.set_status(status)
        if self.request_id:
            self.set_header("X-Request-Id", self.request_id)
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json")
        self.finish(body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.write_json_error(status_code, message)


class GuardedHandler(JSONErrorMixin):
    """A frontend endpoint of its own, behind the API keys that are set."""

    def initialize(self, link: BrokerLink, config: FrontendConfig) -> None:
        self.link = link
        self.config = config

    def check_api_key(self, challenge: dict[str, str] = UNAUTHORIZED, health: bool = False) -> bool:
        """Refuse (401) a request without the keys that are set; zeroserve's own key leaves
        the health check open, LitServe's does not."""
        config = self.config
        api_key = None if health else config.api_key
        refused = refusal(self.request.headers, api_key, config.lit_api_key, challenge)
        if refused is not None:
            self.write_json(*refused)
        return refused is None

    def plain(self, status: int, text: str) -> None:
        """A text answer with no content type, as LitServe writes ``ok`` and its index."""
        self.set_status(status)
        self.clear_header("Content-Type")
        self.finish(text)


class HealthHandler(GuardedHandler):
    """LitServe's answer (``ok``, or 503 ``not ready``) until every service that announced
    a route has a ready worker; ``?verbose=1`` says why, as JSON."""

    def get(self) -> None:
        if not self.check_api_key(health=True):
            return
        waiting = self.link.services_without_workers()
        waiting += [r for r in self.config.expected_routes if r not in self.link.routes]
        ready = self.link.alive and bool(self.link.routes) and not waiting
        if self.get_query_argument("verbose", "") in ("", "0", "false"):
            self.plain(200 if ready else 503, "ok" if ready else "not ready")
            return
        why = None
        if not self.link.alive:
            why = BROKER_UNREACHABLE
        elif not self.link.routes:
            why = "no service is registered yet"
        elif waiting:
            why = f"no worker is ready for {', '.join(sorted(waiting))}"
        self.set_status(200 if ready else 503)
        self.finish(
            {
                "status": "ok" if ready else "not ready",
                "workers": self.link.ready_workers(),
                "error": why,
            }
        )


class LivezHandler(GuardedHandler):
    """``GET /livez``: the process answers; it asks nothing of the broker, so that a slow
    broker never gets a frontend restarted."""

    def get(self) -> None:
        self.plain(200, "ok")


class ReadyzHandler(GuardedHandler):
    """``GET /readyz``: 200 once every route in the route table (and every expected one) has
    a ready, healthy worker. Kubernetes' probes carry no credentials, so it is open whatever
    key is set; it then names the routes that lack workers only to a caller with the keys."""

    def get(self) -> None:
        ready, body = readiness(self.link, self.config)
        config = self.config
        if not ready and refusal(self.request.headers, config.api_key, config.lit_api_key):
            body = {"status": "not ready"}
        self.write_json(200 if ready else 503, json.dumps(body))


class StartupzHandler(ReadyzHandler):
    """``GET /startupz``: readyz until it first answers 200, then 200 for good: a startup
    probe waits out the workers' ``setup``, and a worker lost later is readiness's business,
    not a reason to restart the frontend."""

    def get(self) -> None:
        if not self.link.started:
            self.link.started = readiness(self.link, self.config)[0]
        if self.link.started:
            self.write_json(200, b'{"status":"started"}')
        else:
            super().get()


def readiness(link: BrokerLink, config: FrontendConfig) -> tuple[bool, dict[str, Any]]:
    """Whether every route has a ready worker, with the routes that lack one."""
    if not link.alive:
        return False, {"status": "not ready", "error": BROKER_UNREACHABLE}
    if not link.routes:
        return False, {"status": "not ready", "error": "no route is registered yet"}
    idle = set(link.services_without_workers())
    waiting = [path for path, route in link.routes.items() if route.service in idle]
    waiting += [path for path in config.expected_routes if path not in link.routes]
    if waiting:
        return False, {"status": "not ready", "waiting": sorted(waiting)}
    return True, {"status": "ready"}


class IndexHandler(GuardedHandler):
    """``GET /``: LitServe's sign of life."""

    def get(self) -> None:
        if self.check_api_key():
            self.plain(200, "litserve running")


class InfoHandler(GuardedHandler):
    def get(self) -> None:
        if not self.check_api_key():
            return
        config = self.link.config
        server = config.server_info or {
            "timeout": config.request_timeout_s,
            "max_payload_size": config.max_body_bytes,
        }
        self.finish(
            {
                "model": config.model_metadata,
                "server": server,
                "brokers": self.link.describe_brokers(),
                "services": self.link.services,
                "routes": {path: r.service for path, r in self.link.routes.items()},
                "workers": self.link.ready_workers(),
            }
        )


class ModelsHandler(GuardedHandler):
    """OpenAI's ``GET /v1/models``: every model a service announced."""

    def get(self) -> None:
        if not self.check_api_key():
            return
        models = sorted(
            {
                model
                for service in self.link.services.values()
                if isinstance(service, dict) and service.get("workers")
                for model in service.get("models") or []
            }
        )
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "zeroserve"} for m in models]
        self.finish({"object": "list", "data": data})


class OpenAPIHandler(GuardedHandler):
    """``GET /openapi.json``: every service's routes, with the request schema its API's
    ``decode_request`` annotation gives."""

    def get(self) -> None:
        if not self.check_api_key():
            return
        self.finish(openapi_document(self.link.services, __version__))


def openapi_document(services: dict[str, Any], version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    components: dict[str, Any] = {}
    for name, service in sorted(services.items()):
        if not isinstance(service, dict):
            continue
        schema = service.get("request_schema")
        body_schema: dict[str, Any] = {}
        if isinstance(schema, dict):
            schema = dict(schema)
            components.update(schema.pop("$defs", None) or {})
            title = str(schema.get("title") or name)
            components[title] = schema
            body_schema = {"$ref": f"#/components/schemas/{title}"}
        for route in service.get("routes") or []:
            if not isinstance(route, dict) or not isinstance(route.get("path"), str):
                continue
            operation = {
                "summary": name,
                "requestBody": {"content": {"application/json": {"schema": body_schema}}},
                "responses": {
                    "200": {"description": "the model's answer"},
                    "422": {"description": "the body does not fit the request schema"},
                },
            }
            paths[route["path"]] = {
                str(method).lower(): operation for method in route.get("methods") or ["POST"]
            }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "zeroserve", "version": version},
        "paths": paths,
    }
    if components:
        document["components"] = {"schemas": components}
    return document


class MetricsHandler(GuardedHandler):
    """Prometheus text: this frontend's figures and the broker's."""

    def initialize(  # type: ignore[override]
        self, link: BrokerLink, config: FrontendConfig, metrics: FrontendMetrics
    ) -> None:
        super().initialize(link, config)
        self.metrics = metrics

    async def get(self) -> None:
        if not self.check_api_key():
            return
        snapshots = await self.link.fetch_statuses()
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.metrics.render(snapshots))


class DashboardHandler(GuardedHandler):
    """``GET /dashboard``: the page; a browser asks for the API key when one is set."""

    def get(self) -> None:
        if not self.check_api_key(BROWSER_UNAUTHORIZED):
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("Cache-Control", "no-store")
        self.finish(dashboard_page())


class DashboardDataHandler(GuardedHandler):
    """``GET /dashboard/data``: what the page draws, fetched from every live broker."""

    def initialize(  # type: ignore[override]
        self, link: BrokerLink, config: FrontendConfig, recent: Recent
    ) -> None:
        super().initialize(link, config)
        self.recent = recent

    async def get(self) -> None:
        if not self.check_api_key(BROWSER_UNAUTHORIZED):
            return
        merged = merge_snapshots(await self.link.fetch_statuses())
        if merged is not None:
            queued = sum(s.get("queued", 0) for s in merged["services"].values())
            self.recent.saw_queue(queued, time.time())
        self.set_header("Cache-Control", "no-store")
        self.finish(dashboard_data(merged, self.link.describe_brokers(), self.recent))


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
        self.size = 0
        self.too_large = False
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
        length = headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > front.config.max_body_bytes:
            self._reject_too_large()
            return
        self.route = route

    def data_received(self, chunk: bytes) -> None:
        if self.answered:
            return
        self.size += len(chunk)
        if self.size > self.front.config.max_body_bytes:
            self.too_large = True
            self.chunks.clear()
        elif not self.too_large:
            self.chunks.append(chunk)

    def finish(self) -> None:
        if self.answered or self.route is None:
            return
        if self.too_large:
            self._reject_too_large()
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
            conn.write(payload or _stream_error(self.content_type, meta))
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
        self._write_whole(
            status, json.dumps(error_body(error), separators=(",", ":")).encode(), extra
        )

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

    def _reject_too_large(self) -> None:
        # LitServe's MaxSizeMiddleware's words.
        self._write_error(413, "Payload too large")

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


def _stream_error(content_type: str, meta: p.AnswerMeta) -> bytes:
    """An error that ends a stream already begun and brings no last words of its own (the
    broker's, when the worker is lost), in the stream's own format."""
    status, error = meta.get("status", 502), meta.get("error", "error")
    if content_type.startswith("text/event-stream"):
        # LitServe's shape for an error in a begun OpenAI stream (OpenAI's error object).
        event = {
            "error": {"message": error, "type": "internal", "param": None, "code": "internal_error"}
        }
        return b"data: " + json.dumps(event).encode() + b"\n\n"
    return json.dumps({"error": error, "status": status}).encode() + b"\n"


@dataclass(frozen=True)
class Frontend:
    """What every request of this frontend process shares."""

    link: BrokerLink
    config: FrontendConfig
    metrics: FrontendMetrics
    recent: Recent
    tracing: Tracing | None = None


class FrontendRouter(tornado.routing.Router):
    """The frontend's own endpoints go to a Tornado application; every other path to a service."""

    def __init__(self, front: Frontend, app: tornado.web.Application) -> None:
        self.front = front
        self.app = app
        self.own_paths = front.config.own_paths

    def _index_is_free(self) -> bool:
        """``GET /`` is the frontend's unless a service serves that path itself."""
        return "/" not in self.front.link.routes

    def find_handler(
        self, request: tornado.httputil.HTTPServerRequest, **kwargs: Any
    ) -> tornado.httputil.HTTPMessageDelegate | None:
        path = request.path
        if self.front.config.cors is not None and CorsPolicy.is_preflight(
            request.method or "", request.headers
        ):
            return ServeDelegate(self.front, request)
        if path in self.own_paths or (path == "/" and self._index_is_free()):
            return self.app.find_handler(request)
        if path in ("/mcp", "/mcp/") and path not in self.front.link.routes:
            return self.app.find_handler(request)  # LitServe's MCP server (mcp_endpoint.py)
        return ServeDelegate(self.front, request)


def make_app(
    link: BrokerLink, config: FrontendConfig, tracing: Tracing | None = None
) -> FrontendRouter:
    from zeroserve.frontend.mcp_endpoint import MCPHandler  # it builds on GuardedHandler
    from zeroserve.frontend.shutdown import shutdown_route  # it builds on this module

    guarded = {"link": link, "config": config}
    metrics = FrontendMetrics(lambda: len(link.pending))
    recent = Recent()
    app = tornado.web.Application(
        [
            (r"/", IndexHandler, guarded),
            (re.escape(config.health_path), HealthHandler, guarded),
            (r"/livez", LivezHandler, guarded),
            (r"/readyz", ReadyzHandler, guarded),
            (r"/startupz", StartupzHandler, guarded),
            (re.escape(config.info_path), InfoHandler, guarded),
            (r"/v1/models", ModelsHandler, guarded),
            *([(r"/openapi\.json", OpenAPIHandler, guarded)] if config.openapi else []),
            (r"/metrics", MetricsHandler, {**guarded, "metrics": metrics}),
            (r"/dashboard", DashboardHandler, guarded),
            (r"/dashboard/data", DashboardDataHandler, {**guarded, "recent": recent}),
            (r"/mcp/?", MCPHandler, guarded),
            *shutdown_route(config.shutdown_path),
        ],
        transforms=transforms(config),
        compress_response=False,
        log_function=_log_request,
    )
    front = Frontend(link, config, metrics, recent, tracing)
    return FrontendRouter(front, app)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    request = handler.request
    log_access(
        handler.get_status(), request, request.request_time(), getattr(handler, "request_id", None)
    )


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
