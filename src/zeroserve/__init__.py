"""zeroserve: serve LitServe-style model APIs from a ZeroMQ cluster of processes."""

from zeroserve.common.errors import ConfigError, HTTPException, ProtocolError, ZeroserveError
from zeroserve.common.version import __version__
from zeroserve.litserver import LitServer
from zeroserve.worker.api import (
    STREAM_END,
    ContinuousBatchingLoop,
    DefaultContinuousBatchingLoop,
    LitAPI,
    LitAPIStatus,
    OpenAIEmbeddingSpec,
    OpenAISpec,
    Output,
    Request,
    Response,
)
from zeroserve.worker.hooks import Callback, Logger

__all__ = [
    "STREAM_END",
    "Callback",
    "ConfigError",
    "ContinuousBatchingLoop",
    "DefaultContinuousBatchingLoop",
    "HTTPException",
    "LitAPI",
    "LitAPIStatus",
    "LitServer",
    "Logger",
    "OpenAIEmbeddingSpec",
    "OpenAISpec",
    "Output",
    "ProtocolError",
    "Request",
    "Response",
    "ZeroserveError",
    "__version__",
]
