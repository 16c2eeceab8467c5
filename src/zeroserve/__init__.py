"""zeroserve: serve LitServe-style model APIs from a ZeroMQ cluster of processes."""

from zeroserve.common.errors import ConfigError, HTTPException, ProtocolError, ZeroserveError
from zeroserve.common.version import __version__
from zeroserve.worker.api import LitAPI, Response

__all__ = [
    "ConfigError",
    "HTTPException",
    "LitAPI",
    "ProtocolError",
    "Response",
    "ZeroserveError",
    "__version__",
]
