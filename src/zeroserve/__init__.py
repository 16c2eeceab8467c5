"""zeroserve: serve LitServe-style model APIs from a ZeroMQ cluster of processes.

The public names are loaded when first used: the broker and the frontend, which need none
of them, start without importing what a ``server.py`` or a worker needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zeroserve.common.errors import ConfigError, HTTPException, ProtocolError, ZeroserveError

if TYPE_CHECKING:
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

    __version__: str

#: Each public name, by the module that defines it.
_NAMES = {
    "LitServer": "zeroserve.litserver",
    "set_trace": "zeroserve.utils",
    "set_trace_if_debug": "zeroserve.utils",
    **dict.fromkeys(
        (
            "STREAM_END",
            "ContinuousBatchingLoop",
            "DefaultContinuousBatchingLoop",
            "LitAPI",
            "LitAPIStatus",
            "OpenAIEmbeddingSpec",
            "OpenAISpec",
            "Output",
            "Request",
            "Response",
        ),
        "zeroserve.worker.api",
    ),
    "Callback": "zeroserve.worker.hooks",
    "Logger": "zeroserve.worker.hooks",
    "threads_per_process": "zeroserve.worker.threads",
}

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
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    elif name == "__version__":
        from zeroserve.common.version import version

        value = version()
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # asked once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES, *_SUBMODULES, "__version__"})


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
