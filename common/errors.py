"""The exceptions of zeroserve: one root, a shallow tree."""

from __future__ import annotations

#: What a client is told of an exception in user code, as LitServe tells it (the log has it).
INTERNAL_ERROR = "Internal server error"


class ZeroserveError(Exception):
    """Root of every error zeroserve raises on purpose."""


class ProtocolError(ZeroserveError):
    """A peer sent a message that does not follow the wire protocol."""


class VersionMismatch(ProtocolError):
    """The peer speaks another version of the protocol."""


class ConfigError(ZeroserveError, ValueError):
    """A setting, a flag or the user's API class is not usable; the message says why."""


class HTTPException(ZeroserveError):
    """Raise from user code to answer with this status and message.

    Shaped like FastAPI's ``HTTPException`` (``status_code``, ``detail``) so
    that code written for LitServe keeps its meaning; an exception of FastAPI's
    own type is honoured the same way.
    """

    def __init__(self, status_code: int, detail: str = "", headers: dict | None = None) -> None:
        super().__init__(status_code, detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers or {}

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}"


def http_status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception asks for, if it is HTTPException-shaped."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
        return status
    return None
