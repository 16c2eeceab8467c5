"""Closing connections whose request body stalls (slow clients, slowloris).

Tornado can limit the body's time itself (``body_timeout``), but then it
runs every body read as a task of its own with a timer beside it: about a
tenth of the frontend's throughput here. This watch notes when a request's
body began and forgets it once the body is read; a sweep a few times per
timeout closes the connections that took longer and forgets those that
closed. Headers keep Tornado's
own limit (``idle_connection_timeout``), which costs no task.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tornado.http1connection import HTTP1Connection

log = logging.getLogger(__name__)

#: The longest between two sweeps; a stalled connection lives at most this past its limit.
MAX_SWEEP_PERIOD_S = 1.0


class BodyWatch:
    """Connections whose request body is being read, and since when."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.reading: dict[HTTP1Connection, float] = {}

    def body_started(self, connection: HTTP1Connection) -> None:
        self.reading[connection] = time.monotonic()

    def body_read(self, connection: HTTP1Connection) -> None:
        self.reading.pop(connection, None)

    def sweep(self, now: float) -> None:
        limit = now - self.timeout_s
        for connection, since in list(self.reading.items()):
            stream = connection.stream
            if stream is None or stream.closed():
                del self.reading[connection]
            elif since <= limit:
                del self.reading[connection]
                log.info("closed a connection whose request body took over %g s", self.timeout_s)
                stream.close()

    async def run(self) -> None:
        period_s = min(MAX_SWEEP_PERIOD_S, self.timeout_s / 4)
        while True:
            await asyncio.sleep(period_s)
            self.sweep(time.monotonic())
