"""The broker's settings, one frozen object built by the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from zeroserve.common import protocol as p
from zeroserve.common.errors import ConfigError


@dataclass(frozen=True)
class BrokerConfig:
    frontend_bind: str = "tcp://*:5555"
    backend_bind: str = "tcp://*:5556"
    #: Requests waiting per service before new ones are answered 503.
    max_queue: int = 1024
    #: How many workers may try one request before it is answered 502.
    max_attempts: int = 3
    heartbeat_interval_s: float = p.HEARTBEAT_INTERVAL_S
    heartbeat_liveness: int = p.HEARTBEAT_LIVENESS
    #: Budget for a request whose frontend sent none.
    default_timeout_s: float = p.DEFAULT_TIMEOUT_S
    #: What a 503 for a full queue tells the client to wait.
    retry_after_s: float = 1.0
    #: How long a worker may hold a request past its deadline before the slot is taken back.
    deadline_grace_s: float = 10.0
    #: CurveZMQ: this broker's secret key file, and the folder of public keys it admits.
    curve_secret_key: str | None = None
    authorized_keys: str | None = None

    def __post_init__(self) -> None:
        if self.max_queue < 1:
            raise ConfigError("max_queue must be at least 1")
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        if self.heartbeat_interval_s <= 0:
            raise ConfigError("heartbeat_interval_s must be positive")
        if self.heartbeat_liveness < 1:
            raise ConfigError("heartbeat_liveness must be at least 1")
        if (self.curve_secret_key is None) != (self.authorized_keys is None):
            raise ConfigError("--curve-secret-key and --authorized-keys go together")
