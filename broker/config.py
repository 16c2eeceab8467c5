"""The broker's settings, one frozen object built by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

from zeroserve.common import protocol as p
from zeroserve.common.errors import ConfigError
from zeroserve.common.link import LinkConfig


@dataclass(frozen=True)
class BrokerConfig:
    frontend_bind: str = "tcp://*:5555"
    backend_bind: str = "tcp://*:5556"
    #: Requests waiting per service before new ones are answered 503.
    max_queue: int = 1024
    #: How many workers may try one request before it is answered 502.
    max_attempts: int = 3
    #: Budget for a request whose frontend sent none.
    default_timeout_s: float = p.DEFAULT_TIMEOUT_S
    #: What a 503 for a full queue tells the client to wait.
    retry_after_s: float = 1.0
    #: How long a worker may hold a request past its deadline before the slot is taken back.
    deadline_grace_s: float = 10.0
    #: Heartbeats, logging, and who may join (a token, or a secret key and the keys it admits).
    link: LinkConfig = field(default_factory=LinkConfig)
    #: Send a request naming a model (X-Model-Id) to a worker holding it first; off, the
    #: broker routes as if no request named one (benchmarks/models.py compares both).
    model_routing: bool = True
    #: Traffic splits to start with, by service: version -> weight (``--weights``); each
    #: ``cluster route`` replaces its service's.
    weights: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Listen beyond loopback with neither a token nor keys: anyone who reaches it may join.
    insecure: bool = False

    def __post_init__(self) -> None:
        if self.max_queue < 1:
            raise ConfigError("max_queue must be at least 1")
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        self.link.check_broker()
        open_to = [e for e in (self.frontend_bind, self.backend_bind) if beyond_loopback(e)]
        if open_to and not self.link.secured and not self.insecure:
            raise ConfigError(
                f"refusing to listen on {' and '.join(open_to)} with no authentication: anyone "
                "who reaches it could join as a worker and read every request. Give "
                "--token-file FILE (peers then join with --token, or ZEROSERVE_TOKEN), or "
                "--curve-secret-key with --authorized-keys; bind to 127.0.0.1; or pass "
                "--insecure to accept that"
            )


_LOOPBACK_HOSTS = {"localhost", "::1", "[::1]"}


def beyond_loopback(endpoint: str) -> bool:
    """Whether a bind endpoint may be reached from another host (ipc:// may not)."""
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://") :].rsplit(":", 1)[0]
    return not (host in _LOOPBACK_HOSTS or host.startswith("127."))
