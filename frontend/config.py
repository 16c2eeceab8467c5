"""The frontend's settings, one frozen object built by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

from zeroserve.common.errors import ConfigError


@dataclass(frozen=True)
class FrontendConfig:
    broker: str = "tcp://127.0.0.1:5555"
    host: str = "127.0.0.1"
    port: int = 8000
    #: HTTP server processes sharing the port (SO_REUSEPORT).
    processes: int = 1
    max_body_bytes: int = 10 * 1024 * 1024
    #: Time a request may take end to end before it is answered 504.
    request_timeout_s: float = 30.0
    heartbeat_interval_s: float = 1.0
    heartbeat_liveness: int = 3
    #: Idle keep-alive connections and stalled uploads are closed after this.
    idle_timeout_s: float = 60.0
    log_level: str = "INFO"
    #: CurveZMQ: this process's secret key file and the broker's public key file.
    curve_secret_key: str | None = None
    broker_public_key: str | None = None
    #: When set, every route but /health needs ``Authorization: Bearer <api_key>``.
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ConfigError("processes must be at least 1")
        if self.max_body_bytes < 1:
            raise ConfigError("max_body must be at least 1 byte")
        if self.request_timeout_s <= 0:
            raise ConfigError("request_timeout must be positive")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range")
