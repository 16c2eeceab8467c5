"""Logging set-up shared by every process: one format, to stderr."""

from __future__ import annotations

import logging
import os
import sys
import time

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure_logging(level: str = "INFO", role: str | None = None) -> None:
    """Send records to stderr with the process's role and pid, so interleaved logs stay readable."""
    name = role or os.environ.get("ZEROSERVE_ROLE", "zeroserve")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)-7s {name}[%(process)d] %(name)s: %(message)s",
            datefmt="%H:%M:%S",
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("tornado.access").setLevel(max(logging.WARNING, root.level))


class LogThrottle:
    """Lets one record through per `interval_s`, so a flood of bad input cannot flood the log."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._last = float("-inf")

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return False
        self._last = now
        return True
