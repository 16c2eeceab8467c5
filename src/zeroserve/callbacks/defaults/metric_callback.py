"""LitServe's metric callbacks. They print to standard output at INFO, as LitServe's library
logger does, whatever level the server's own log is at: their lines are what they are for."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from zeroserve.worker.hooks import Callback


class _StandardOutput(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a record comes, as capturing tools swap it."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


logger = logging.getLogger(__name__)
if not logger.handlers:
    _handler = _StandardOutput()
    _handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


class PredictionTimeLogger(Callback):
    """Logs how long each ``predict`` took."""

    def on_before_predict(self, lit_api: Any = None, **_: Any) -> None:
        self._start_time = time.perf_counter()

    def on_after_predict(self, lit_api: Any = None, **_: Any) -> None:
        elapsed = time.perf_counter() - self._start_time
        logger.info("Prediction took %.2f seconds", elapsed)


class RequestTracker(Callback):
    """Logs the requests in flight as each one arrives (None without ``track_requests``)."""

    def on_request(self, active_requests: int | None = None, **_: Any) -> None:
        logger.info("Active requests: %s", active_requests)
