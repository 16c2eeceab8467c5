"""The frontend's own endpoints: health and probes, info, models, metrics and the dashboard,
each behind the API keys that are set."""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from zeroserve.frontend.access import BROWSER_UNAUTHORIZED, UNAUTHORIZED, refusal
from zeroserve.frontend.broker_link import BROKER_UNREACHABLE, BrokerLink
from zeroserve.frontend.config import FrontendConfig
from zeroserve.frontend.dashboard import CONTENT_SECURITY_POLICY, Recent, dashboard_data
from zeroserve.frontend.dashboard import page as dashboard_page
from zeroserve.frontend.errors import JSONErrorMixin
from zeroserve.frontend.metrics import FrontendMetrics, merge_snapshots


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
                "services": {name: s.describe() for name, s in self.link.services.items()},
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
                if service.workers
                for model in service.models
            }
        )
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "zeroserve"} for m in models]
        self.finish({"object": "list", "data": data})


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
