"""The frontend's settings, one frozen object built by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zeroserve.common import protocol as p
from zeroserve.common.errors import ConfigError
from zeroserve.common.link import LinkConfig
from zeroserve.frontend.cors import CorsPolicy
from zeroserve.frontend.gzip import GzipPolicy

#: Kubernetes' probes: the process answers, every route has a worker, it has started once.
PROBE_PATHS = ("/livez", "/readyz", "/startupz")


@dataclass(frozen=True)
class FrontendConfig:
    #: Every broker's frontend endpoint; requests are spread over the live ones.
    brokers: tuple[str, ...] = ("tcp://127.0.0.1:5555",)
    host: str = "127.0.0.1"
    port: int = 8000
    #: HTTP server processes sharing the port (SO_REUSEPORT).
    processes: int = 1
    max_body_bytes: int = 10 * 1024 * 1024
    #: Time a request may take end to end before it is answered 504.
    request_timeout_s: float = p.DEFAULT_TIMEOUT_S
    #: Idle keep-alive connections and stalled uploads are closed after this.
    idle_timeout_s: float = 60.0
    #: Heartbeats, logging, and CurveZMQ (its secret key and the broker's public key).
    link: LinkConfig = field(default_factory=LinkConfig)
    #: zeroserve's key: every route but health needs ``Authorization: Bearer <api_key>``
    #: (or ``X-API-Key: <api_key>``); see ``frontend.access``.
    api_key: str | None = field(default=None, repr=False)
    #: LitServe's ``LIT_SERVER_API_KEY``, with LitServe's rules: ``X-API-Key`` on every
    #: path, health included, but the routes of APIs that define ``authorize()``.
    lit_api_key: str | None = field(default=None, repr=False)
    #: Where the frontend's own health and info endpoints live (LitServe lets them move).
    health_path: str = "/health"
    info_path: str = "/info"
    #: LitServe's shutdown endpoint, served when set (its key comes in the environment).
    shutdown_path: str | None = None
    #: Serve ``GET /openapi.json`` (LitServe's ``disable_openapi_url=True`` turns it off).
    openapi: bool = True
    #: Routes the health check waits for, besides every service that announced one.
    expected_routes: tuple[str, ...] = ()
    #: A JSON object shown under "model" in the info endpoint (LitServe's model_metadata).
    model_metadata: dict[str, Any] | None = None
    #: A JSON object shown under "server" in the info endpoint (LitServer's settings).
    server_info: dict[str, Any] | None = None
    #: HTTPS: the certificate chain (PEM), and its private key when not in the same file.
    certfile: str | None = None
    keyfile: str | None = None
    #: LitServer's CORSMiddleware and GZipMiddleware, served by the frontend itself.
    cors: CorsPolicy | None = None
    gzip: GzipPolicy | None = None

    def __post_init__(self) -> None:
        self.link.check_peer()
        if not self.brokers or len(set(self.brokers)) != len(self.brokers):
            raise ConfigError("give each broker once, and at least one")
        if self.processes < 1:
            raise ConfigError("processes must be at least 1")
        if self.max_body_bytes < 1:
            raise ConfigError("max_body must be at least 1 byte")
        if self.request_timeout_s <= 0:
            raise ConfigError("request_timeout must be positive")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range")
        for name, path in (("health_path", self.health_path), ("info_path", self.info_path)):
            if not path.startswith("/"):
                raise ConfigError(f"{name} must start with '/', not {path!r}")
        if self.health_path == self.info_path:
            raise ConfigError("health_path and info_path must differ")
        if self.keyfile is not None and self.certfile is None:
            raise ConfigError("--keyfile goes with --certfile")

    @property
    def scheme(self) -> str:
        return "https" if self.certfile is not None else "http"

    @property
    def own_paths(self) -> frozenset[str]:
        """The frontend's own endpoints; every other path belongs to the services."""
        return frozenset(
            {
                self.health_path,
                *PROBE_PATHS,
                self.info_path,
                "/v1/models",
                "/metrics",
                *(["/openapi.json"] if self.openapi else []),
                "/dashboard",
                "/dashboard/data",
                *([self.shutdown_path] if self.shutdown_path else []),
            }
        )
