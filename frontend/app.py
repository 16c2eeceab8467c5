"""The frontend's HTTP application: its own endpoints go to Tornado handlers (``admin``,
``openapi``, ``mcp_endpoint``, ``shutdown``), every other path to a service (``serve``)."""

from __future__ import annotations

import re
from typing import Any

import tornado.httputil
import tornado.routing
import tornado.web

from zeroserve.common.tracing import Tracing
from zeroserve.frontend.admin import (
    DashboardDataHandler,
    DashboardHandler,
    HealthHandler,
    IndexHandler,
    InfoHandler,
    LivezHandler,
    MetricsHandler,
    ModelsHandler,
    ReadyzHandler,
    StartupzHandler,
)
from zeroserve.frontend.broker_link import BrokerLink
from zeroserve.frontend.config import FrontendConfig
from zeroserve.frontend.cors import CorsPolicy
from zeroserve.frontend.dashboard import Recent
from zeroserve.frontend.mcp_endpoint import MCPHandler
from zeroserve.frontend.metrics import FrontendMetrics
from zeroserve.frontend.middlewares import transforms
from zeroserve.frontend.openapi import OpenAPIHandler
from zeroserve.frontend.serve import Frontend, ServeDelegate, log_access
from zeroserve.frontend.shutdown import shutdown_route


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
