"""How a process links to its peers: heartbeats, CurveZMQ and logging, one config for every
process (broker, frontend, worker, status client), checked the same way everywhere."""

from __future__ import annotations

from dataclasses import dataclass, field

from zeroserve.common import protocol as p
from zeroserve.common.errors import ConfigError
from zeroserve.common.logs import LEVELS
from zeroserve.common.security import (
    CurveKeys,
    broker_token_keys,
    check_token,
    load_keys,
    peer_token_keys,
)


def silence_limit_s(liveness: int, *intervals_s: float) -> float:
    """How long a peer may stay silent before it counts as dead: the longest heartbeat interval
    in play (ours, the peer's), times the heartbeats it may miss. Decided here only."""
    return max(intervals_s) * liveness


@dataclass(frozen=True)
class LinkConfig:
    heartbeat_interval_s: float = p.HEARTBEAT_INTERVAL_S
    #: Heartbeats a peer may miss before it counts as dead.
    heartbeat_liveness: int = p.HEARTBEAT_LIVENESS
    log_level: str = "INFO"
    #: CurveZMQ: this process's secret key file (``NAME.key_secret``).
    curve_secret_key: str | None = None
    #: A peer's: the broker's public key file. The broker's: the folder of keys it admits.
    broker_public_key: str | None = None
    authorized_keys: str | None = None
    #: The join token: CurveZMQ keys derived from it (the broker's comes from its token file).
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_interval_s <= 3600:
            raise ConfigError("the heartbeat interval must be above 0 and at most 3600 s")
        if self.heartbeat_liveness < 1:
            raise ConfigError("heartbeat liveness must be at least 1")
        if self.log_level.upper() not in LEVELS:
            raise ConfigError(f"unknown log level {self.log_level!r}; one of {', '.join(LEVELS)}")
        if self.broker_public_key is not None and self.authorized_keys is not None:
            raise ConfigError("a broker admits --authorized-keys; a peer names --broker-public-key")
        if self.token is not None:
            object.__setattr__(self, "token", check_token(self.token))
            if self.curve_secret_key or self.broker_public_key or self.authorized_keys:
                raise ConfigError("give a join token or CurveZMQ key files, not both")

    def silence_limit_s(self, *peer_intervals_s: float) -> float:
        """A peer's silence limit, with this process's own interval and liveness."""
        return silence_limit_s(
            self.heartbeat_liveness, self.heartbeat_interval_s, *peer_intervals_s
        )

    @property
    def secured(self) -> bool:
        """Peers join with a token or listed keys."""
        return self.token is not None or self.curve_secret_key is not None

    def client_keys(self) -> CurveKeys | None:
        """A peer's CurveZMQ keys toward the broker, or None when it links in the clear."""
        if self.token is not None:
            return peer_token_keys(self.token)
        return load_keys(self.curve_secret_key, self.broker_public_key)

    def server_keys(self) -> CurveKeys | None:
        """The broker's CurveZMQ keys, or None when it is open."""
        if self.token is not None:
            return broker_token_keys(self.token)
        return load_keys(self.curve_secret_key)

    def check_broker(self) -> None:
        if (self.curve_secret_key is None) != (self.authorized_keys is None):
            raise ConfigError("--curve-secret-key and --authorized-keys go together")

    def check_peer(self) -> None:
        if self.authorized_keys is not None:
            raise ConfigError("--authorized-keys is the broker's; a peer names --broker-public-key")
