"""The frontend's HTTP endpoints: the routes services announce, plus health and info.

The frontend knows no model: it forwards the body bytes unparsed and writes
back the status, content type and bytes that the worker produced. Every
error it makes itself is JSON ``{"error": "..."}``.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import uuid
from typing import Any

import tornado.httputil
import tornado.iostream
import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST

from zeroserve.common import protocol as p
from zeroserve.frontend.broker_link import BrokerLink, Route, Waiter
from zeroserve.frontend.config import FrontendConfig
from zeroserve.frontend.metrics import FrontendMetrics

log = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]+")

#: Headers a worker may not set: the frontend owns the framing.
HOP_BY_HOP = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "trailer"}
)


class JSONErrorMixin(tornado.web.RequestHandler):
    api_key: str | None = None
    request_id: str | None = None

    def write_json_error(
        self, status: int, error: Any, headers: dict[str, str] | None = None
    ) -> None:
        self.clear()
        self.set_status(status)
        if self.request_id:
            self.set_header("X-Request-Id", self.request_id)
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": error}))

    def check_api_key(self) -> bool:
        """With an API key set, refuse (401, in OpenAI's error shape) a request without it."""
        if not self.api_key:
            return True
        given = self.request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), self.api_key):
            return True
        self.clear()
        self.set_status(401)
        self.set_header("WWW-Authenticate", "Bearer")
        self.set_header("Content-Type", "application/json")
        error = {
            "message": "missing or wrong API key; send 'Authorization: Bearer <key>'",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
        self.finish(json.dumps({"error": error}))
        return False

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.write_json_error(status_code, message)


class HealthHandler(JSONErrorMixin):
    def initialize(self, link: BrokerLink) -> None:
        self.link = link

    def get(self) -> None:
        workers = self.link.ready_workers()
        if not workers:
            why = (
                "the broker is not reachable" if not self.link.conn.alive else "no worker is ready"
            )
            self.write_json_error(503, why)
            return
        self.finish({"status": "ok", "workers": workers})


class GuardedHandler(JSONErrorMixin):
    """A frontend endpoint of its own, behind the API key when one is set."""

    def initialize(self, link: BrokerLink, api_key: str | None) -> None:
        self.link = link
        self.api_key = api_key


class InfoHandler(GuardedHandler):
    def get(self) -> None:
        if not self.check_api_key():
            return
        self.finish(
            {
                "broker": {
                    "endpoint": self.link.config.broker,
                    "connected": self.link.conn.alive,
                    "id": self.link.conn.broker_id,
                },
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


class MetricsHandler(GuardedHandler):
    """Prometheus text: this frontend's figures and the broker's."""

    def initialize(  # type: ignore[override]
        self, link: BrokerLink, api_key: str | None, metrics: FrontendMetrics
    ) -> None:
        super().initialize(link, api_key)
        self.metrics = metrics

    async def get(self) -> None:
        if not self.check_api_key():
            return
        snapshot = await self.link.fetch_status()
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.metrics.render(snapshot))


def request_id_of(request: tornado.httputil.HTTPServerRequest) -> str:
    """The client's X-Request-Id when it is a sane one, else a new id."""
    given = request.headers.get("X-Request-Id", "")
    if 0 < len(given) <= 128 and REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


@tornado.web.stream_request_body
class ServeHandler(JSONErrorMixin):
    """Any path a service announced: forward the request, write back the worker's answer."""

    SUPPORTED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

    def initialize(
        self, link: BrokerLink, config: FrontendConfig, metrics: FrontendMetrics
    ) -> None:
        self.link = link
        self.config = config
        self.metrics = metrics
        self.api_key = config.api_key
        self.chunks: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.waiter: Waiter | None = None
        self.route: Route | None = None

    def prepare(self) -> None:
        self.request_id = request_id_of(self.request)
        self.set_header("X-Request-Id", self.request_id)
        if not self.check_api_key():
            return
        path = self.request.path
        route = self.link.route(path)
        if route is None:
            if not self.link.routes:
                self.write_json_error(503, "no service is registered yet", {"Retry-After": "1"})
            else:
                self.write_json_error(404, f"no route for {path}")
            return
        if self.request.method not in route.methods:
            allowed = ", ".join(sorted(route.methods))
            self.write_json_error(405, f"{path} accepts {allowed}", {"Allow": allowed})
            return
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.config.max_body_bytes:
            self._reject_too_large()
            return
        self.route = route

    def data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.config.max_body_bytes:
            self.too_large = True
            self.chunks.clear()
        elif not self.too_large:
            self.chunks.append(chunk)

    def _reject_too_large(self) -> None:
        self.write_json_error(
            413, f"the request body exceeds the limit of {self.config.max_body_bytes} bytes"
        )

    async def post(self) -> None:
        if self.too_large:
            self._reject_too_large()
            return
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks = []
        assert self.route is not None  # prepare() finished the request otherwise
        waiter = self.waiter = self.link.submit(
            self.route,
            self.request.path,
            self.request.method or "POST",
            self.request.headers.get("Content-Type", ""),
            body,
            request_id=self.request_id or "",
        )
        command, meta, payload = await waiter.next()
        if self.request.connection is None or self._finished:
            return
        if command == p.ERROR:
            self._write_failure(meta)
        elif self._begin_answer(meta):
            if command == p.REPLY:
                self.finish(payload)
            else:
                await self._write_stream(waiter, command, meta, payload)

    get = put = patch = delete = post

    def _begin_answer(self, meta: dict[str, Any]) -> bool:
        """Status, content type and headers of the worker's answer (whole or streamed)."""
        try:
            self.set_status(int(meta.get("status", 200)))
            self.set_header("Content-Type", str(meta.get("ct", "application/octet-stream")))
            headers = meta.get("headers")
            if isinstance(headers, dict):
                for name, value in headers.items():
                    if str(name).lower() not in HOP_BY_HOP:
                        self.set_header(str(name), str(value))
        except (ValueError, TypeError) as exc:
            log.warning("a worker sent an answer that cannot be written: %s", exc)
            self.write_json_error(502, "the worker's answer was not valid HTTP")
            return False
        return True

    def _write_failure(self, meta: dict[str, Any]) -> None:
        status = meta.get("status")
        if not isinstance(status, int) or not 400 <= status <= 599:
            status = 502
        headers = {}
        retry_after = meta.get("retry_after")
        if isinstance(retry_after, (int, float)):
            headers["Retry-After"] = str(max(1, round(retry_after)))
        self.write_json_error(status, meta.get("error", "error"), headers)

    async def _write_stream(
        self, waiter: Waiter, command: bytes, meta: dict[str, Any], payload: bytes
    ) -> None:
        """CHUNK ... END: each piece goes to the client as it comes."""
        while command == p.CHUNK:
            self.write(payload)
            try:
                await self.flush()
            except tornado.iostream.StreamClosedError:
                return
            command, meta, payload = await waiter.next()
        if command == p.ERROR:
            self.write(_stream_error(self._headers.get("Content-Type", ""), meta))
        elif payload:
            self.write(payload)
        self.finish()

    def on_connection_close(self) -> None:
        if self.waiter is not None:
            self.link.cancel(self.waiter)

    def on_finish(self) -> None:
        route = self.request.path if self.route is not None else "unmatched"
        self.metrics.observe(route, self.get_status(), self.request.request_time())


def _stream_error(content_type: str, meta: dict[str, Any]) -> bytes:
    """An error that ends a stream already begun, in the stream's own format."""
    status, error = meta.get("status", 502), meta.get("error", "error")
    if content_type.startswith("text/event-stream"):
        event = {"error": {"message": error, "type": "server_error", "code": status}}
        return b"data: " + json.dumps(event).encode() + b"\n\n"
    return json.dumps({"error": error, "status": status}).encode() + b"\n"


def make_app(link: BrokerLink, config: FrontendConfig) -> tornado.web.Application:
    guarded = {"link": link, "api_key": config.api_key}
    metrics = FrontendMetrics(lambda: len(link.pending))
    return tornado.web.Application(
        [
            (r"/health", HealthHandler, {"link": link}),
            (r"/info", InfoHandler, guarded),
            (r"/v1/models", ModelsHandler, guarded),
            (r"/metrics", MetricsHandler, {**guarded, "metrics": metrics}),
            (r"/.*", ServeHandler, {"link": link, "config": config, "metrics": metrics}),
        ],
        compress_response=False,
        log_function=_log_request,
    )


def _log_request(handler: tornado.web.RequestHandler) -> None:
    status = handler.get_status()
    level = (
        logging.WARNING if status >= 500 and handler.request.path != "/health" else logging.DEBUG
    )
    if log.isEnabledFor(level):
        log.log(
            level,
            "%d %s %s %.1f ms request_id=%s",
            status,
            handler.request.method,
            handler.request.path,
            handler.request.request_time() * 1000,
            getattr(handler, "request_id", None) or "-",
        )
