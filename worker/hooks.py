"""Callbacks and loggers: user code that watches the worker, isolated so it never hurts a request.

Callbacks have LitServe's method names (``on_before_predict``, ...) and get
the API object as ``lit_api``; each fires after the work it follows has
finished. The server's events get what LitServe gives them instead:
``litserver`` (the ``LitServer`` when one started the worker, else None),
and for ``on_request`` the requests held, ``active_requests``. Loggers
receive the ``(key, value)`` pairs that user code passes to
``self.log(key, value)``, after the batch that logged them is answered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from enum import Enum
from typing import Any

from zeroserve.common.errors import ConfigError

log = logging.getLogger(__name__)


class EventTypes(Enum):
    """The events a callback may hear, by LitServe's names and values."""

    BEFORE_SETUP = "on_before_setup"
    AFTER_SETUP = "on_after_setup"
    BEFORE_DECODE_REQUEST = "on_before_decode_request"
    AFTER_DECODE_REQUEST = "on_after_decode_request"
    BEFORE_ENCODE_RESPONSE = "on_before_encode_response"
    AFTER_ENCODE_RESPONSE = "on_after_encode_response"
    BEFORE_PREDICT = "on_before_predict"
    AFTER_PREDICT = "on_after_predict"
    ON_SERVER_START = "on_server_start"
    ON_SERVER_END = "on_server_end"
    ON_REQUEST = "on_request"
    ON_RESPONSE = "on_response"


#: Events of the server, which LitServe calls without ``lit_api``.
SERVER_EVENTS = frozenset(
    e.value
    for e in (
        EventTypes.ON_SERVER_START,
        EventTypes.ON_SERVER_END,
        EventTypes.ON_REQUEST,
        EventTypes.ON_RESPONSE,
    )
)


class Callback:
    """Subclass and override the events you need; LitServe's ``Callback`` subclasses work too."""

    def on_before_setup(self, *args: Any, **kwargs: Any) -> None: ...
    def on_after_setup(self, *args: Any, **kwargs: Any) -> None: ...
    def on_before_decode_request(self, *args: Any, **kwargs: Any) -> None: ...
    def on_after_decode_request(self, *args: Any, **kwargs: Any) -> None: ...
    def on_before_predict(self, *args: Any, **kwargs: Any) -> None: ...
    def on_after_predict(self, *args: Any, **kwargs: Any) -> None: ...
    def on_before_encode_response(self, *args: Any, **kwargs: Any) -> None: ...
    def on_after_encode_response(self, *args: Any, **kwargs: Any) -> None: ...
    def on_server_start(self, *args: Any, **kwargs: Any) -> None: ...
    def on_server_end(self, *args: Any, **kwargs: Any) -> None: ...
    def on_request(self, *args: Any, **kwargs: Any) -> None: ...
    def on_response(self, *args: Any, **kwargs: Any) -> None: ...


class CallbackRunner:
    """Calls one event on every callback, as LitServe's runner does: one that raises is
    logged and the others still run."""

    def __init__(self, callbacks: Any = None) -> None:
        self._callbacks: list[Any] = []
        if callbacks:
            self._add_callbacks(callbacks)

    def _add_callbacks(self, callbacks: Any) -> None:
        given = callbacks if isinstance(callbacks, list) else [callbacks]
        for callback in given:
            if not is_callback(callback):
                raise ConfigError(f"Invalid callback type: {callback!r} is not a Callback")
        self._callbacks.extend(given)

    def trigger_event(self, event_name: str, *args: Any, **kwargs: Any) -> None:
        for callback in self._callbacks:
            method = getattr(callback, event_name, None)
            if method is None:
                continue
            try:
                method(*args, **kwargs)
            except Exception:
                log.exception("callback %s.%s raised", type(callback).__name__, event_name)


def is_callback(value: Any) -> bool:
    """A subclass of zeroserve's or LitServe's ``Callback`` (by name, so LitServe's pass
    without importing it), or any object with one of the events' methods."""
    if any(cls.__name__ == "Callback" for cls in type(value).__mro__[:-1]):
        return True
    return any(callable(getattr(value, e.value, None)) for e in EventTypes)


class Logger:
    """Receives what user code logs with ``self.log(key, value)``."""

    def process(self, key: str, value: Any) -> None:
        raise NotImplementedError


class LogBuffer:
    """Where ``LitAPI.log`` puts pairs (LitServe calls it the logger queue)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []

    def put(self, item: tuple[str, Any]) -> None:
        self.items.append(item)

    def take(self) -> list[tuple[str, Any]]:
        items, self.items = self.items, []
        return items


class Hooks:
    def __init__(
        self,
        api: Any,
        callbacks: Iterable[Any] = (),
        loggers: Iterable[Any] = (),
        server: Any = None,
    ) -> None:
        self.api = api
        #: The LitServer that started this worker, if one did.
        self.server = server
        self.runner = CallbackRunner(list(callbacks))
        self.loggers = list(loggers)
        self.buffer = LogBuffer()
        if self.loggers:
            setter = getattr(api, "set_logger_queue", None)
            if callable(setter):
                setter(self.buffer)
            else:
                api._logger_queue = self.buffer

    @property
    def callbacks(self) -> list[Any]:
        return self.runner._callbacks

    def tracked(self, count: int) -> int | None:
        """The requests in flight as ``on_request`` hears them: None when the LitServer that
        started the worker was not asked to ``track_requests``, as LitServe gives it."""
        if self.server is not None and not getattr(self.server, "track_requests", True):
            return None
        return count

    def fire(self, event: str, **kwargs: Any) -> None:
        """Call `event` on every callback; one that raises is logged and the others still run."""
        if not self.callbacks:
            return
        if event in SERVER_EVENTS:
            kwargs["litserver"] = self.server
        else:
            kwargs["lit_api"] = self.api
        self.runner.trigger_event(event, **kwargs)

    def flush_logs(self) -> None:
        items = self.buffer.take()
        for key, value in items:
            for logger in self.loggers:
                try:
                    logger.process(key, value)
                except Exception:
                    log.exception("logger %s raised on %r", type(logger).__name__, key)
