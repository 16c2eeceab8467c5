"""``litserve.middlewares``, and LitServer's ``middlewares=[...]`` turned into frontend flags.

LitServe runs Starlette ASGI middlewares around its FastAPI app; the frontend here is
Tornado, so only the middlewares whose behaviour it reproduces are taken: Starlette's
``CORSMiddleware`` and ``GZipMiddleware`` (FastAPI's re-exports are the same classes) and
LitServe's own ``MaxSizeMiddleware``. Any other is refused at ``LitServer()`` with one line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from zeroserve.common.errors import ConfigError

logger = logging.getLogger(__name__)

SERVED = "CORSMiddleware, GZipMiddleware and MaxSizeMiddleware"
#: LitServe's message for a middlewares argument that is not a list.
NOT_A_LIST = (
    "middlewares must be a list of tuples where each tuple contains a middleware and its "
    "arguments. For example:\nserver = ls.LitServer(ls.test_examples.SimpleLitAPI(), "
    'middlewares=[(RequestIdMiddleware, {"length": 5})])'
)
#: LitServe's GZip on every server without a streaming API.
DEFAULT_GZIP_MIN_SIZE = 1000
CORS_ARGS = {
    "allow_origins": "--cors-origin",
    "allow_methods": "--cors-method",
    "allow_headers": "--cors-header",
    "expose_headers": "--cors-expose-header",
}


class MaxSizeMiddleware:
    """LitServe's request-size limit; here the frontend's own (``--max-body``) enforces it."""

    def __init__(self, app: Any = None, *, max_size: int | None = None) -> None:
        self.app = app
        self.max_size = max_size


class RequestCountMiddleware:
    """LitServe's count of requests in flight, which ``track_requests=True`` installs; the
    frontend counts them always (``/metrics``)."""

    def __init__(self, app: Any = None, active_counter: Any = None) -> None:
        self.app = app
        self.active_counter = active_counter


def _name(cls: Any) -> str:
    return getattr(cls, "__name__", type(cls).__name__)


def _kind(cls: Any) -> str | None:
    """Which served middleware ``cls`` is, by the module that defines it."""
    module = getattr(cls, "__module__", "") or ""
    name = _name(cls)
    if name == "CORSMiddleware" and module == "starlette.middleware.cors":
        return "cors"
    if name == "GZipMiddleware" and module == "starlette.middleware.gzip":
        return "gzip"
    if name == "MaxSizeMiddleware" and module in {__name__, "litserve.middlewares"}:
        return "max_size"
    return None


def _entries(middlewares: Any) -> list[tuple[Any, dict[str, Any]]]:
    if middlewares is None:
        return []
    if not isinstance(middlewares, list):
        raise ConfigError(NOT_A_LIST)
    entries = []
    for item in middlewares:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict):
            entries.append((item[0], dict(item[1])))
        elif callable(item) and not isinstance(item, tuple):
            entries.append((item, {}))
        else:
            raise ConfigError(NOT_A_LIST)
    return entries


def _refuse(cls: Any, why: str) -> ConfigError:
    return ConfigError(f"LitServer(middlewares=[{_name(cls)}...]): {why}; served here: {SERVED}")


def _cors_flags(cls: Any, kwargs: dict[str, Any]) -> list[str]:
    flags: list[str] = []
    for name, value in kwargs.items():
        if name in CORS_ARGS:
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise _refuse(cls, f"{name} must be a list of strings")
            for item in value:
                flags += [CORS_ARGS[name], str(item)]
        elif name == "allow_origin_regex" and value is not None:
            flags += ["--cors-origin-regex", str(value)]
        elif name == "allow_credentials" and value:
            flags.append("--cors-credentials")
        elif name == "allow_private_network" and value:
            raise _refuse(cls, "allow_private_network is not served")
        elif name not in {
            "allow_origin_regex",
            "allow_credentials",
            "allow_private_network",
            "max_age",
        }:
            raise _refuse(cls, f"unknown argument {name!r}")
    # Always given, so that CORS is on even with no origin (Starlette's answers then too).
    return [*flags, "--cors-max-age", str(int(kwargs.get("max_age", 600)))]


def frontend_flags(
    middlewares: Any, any_stream: bool, max_body_bytes: int | None
) -> tuple[list[Any], list[str], int | None]:
    """LitServe's ``server.middlewares`` list (its defaults appended as LitServe appends
    them), the frontend's flags for it, and the request-size limit it sets."""
    entries = _entries(middlewares)
    payload_limit = max_body_bytes
    flags: list[str] = []
    gzip: tuple[int, int] | None = None
    cors_seen = False
    for cls, kwargs in entries:
        kind = _kind(cls)
        if kind == "cors":
            if cors_seen:
                raise _refuse(cls, "CORSMiddleware is given twice")
            cors_seen = True
            flags += _cors_flags(cls, kwargs)
        elif kind == "gzip":
            unknown = set(kwargs) - {"minimum_size", "compresslevel", "thread_minimum_size"}
            if unknown:
                raise _refuse(cls, f"unknown or unserved argument(s) {sorted(unknown)}")
            if any_stream:
                raise _refuse(cls, "streamed answers are not compressed here")
            if gzip is None:  # the innermost (first) one compresses under Starlette
                gzip = (int(kwargs.get("minimum_size", 500)), int(kwargs.get("compresslevel", 9)))
        elif kind == "max_size":
            size = kwargs.get("max_size")
            if size is not None:
                size = int(size)
                max_body_bytes = size if max_body_bytes is None else min(size, max_body_bytes)
        elif _name(cls) == "RequestCountMiddleware":
            raise _refuse(cls, "LitServe installs it itself: pass track_requests=True")
        else:
            raise _refuse(cls, "an ASGI middleware cannot run here (the frontend is Tornado)")
    served = list(middlewares or [])
    if not any_stream:
        served.append((_gzip_class(), {"minimum_size": DEFAULT_GZIP_MIN_SIZE}))
        if gzip is None:
            gzip = (DEFAULT_GZIP_MIN_SIZE, 9)
    if gzip is not None:
        flags += ["--gzip-min-size", str(gzip[0]), "--gzip-level", str(gzip[1])]
    if payload_limit is not None:  # LitServe's max_payload_size
        served.append((MaxSizeMiddleware, {"max_size": payload_limit}))
    return served, flags, max_body_bytes


def _gzip_class() -> Any:
    """Starlette's GZipMiddleware when it is installed, for ``server.middlewares`` to show."""
    try:
        from starlette.middleware.gzip import GZipMiddleware
    except ImportError:
        return "GZipMiddleware"
    return GZipMiddleware
