"""zeroserve: serve LitServe-style model APIs from a ZeroMQ cluster of processes."""

from zeroserve.common.errors import ConfigError, HTTPException, ProtocolError, ZeroserveError
from zeroserve.common.version import __version__
from zeroserve.litserver import LitServer
from zeroserve.utils import set_trace, set_trace_if_debug
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
from zeroserve.worker.threads import threads_per_process

#: LitServe's modules, by the names ``import litserve as ls`` gives them, loaded when first used.
_SUBMODULES = frozenset(
    {
        "api",
        "callbacks",
        "connector",
        "loggers",
        "loops",
        "mcp",
        "middlewares",
        "server",
        "specs",
        "test_examples",
        "utils",
    }
)


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "set_trace",
    "set_trace_if_debug",
    "threads_per_process",
]
