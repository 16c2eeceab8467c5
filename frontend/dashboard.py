"""``GET /dashboard``: one self-contained page of the cluster, and the JSON it refreshes from.

The page (``dashboard.html``: its script and styles inline, nothing fetched from
elsewhere) asks ``/dashboard/data`` about once a second. The data is what ``cluster
status`` shows, merged over every live broker, and this frontend process's own recent
figures: requests per second and p50/p99 latency for each of the last five minutes, and the
queue depth for the seconds in which someone watched (the brokers are asked only then).
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import socket
import time
from collections import deque
from collections.abc import Mapping
from importlib.resources import files
from typing import Any

#: Seconds of figures kept.
HISTORY_S = 300
#: How long a queue depth the page fetched counts as the current one.
QUEUE_FRESH_S = 2.5
#: The page allows its own inline script and style, and requests to this frontend only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self'"
)


@functools.cache
def page() -> bytes:
    """The page, read once from the package."""
    return files("zeroserve.frontend").joinpath("dashboard.html").read_bytes()


def percentile(ordered: list[float], share: float) -> float | None:
    """Nearest rank: the value below which `share` of the sorted values lie."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


class Recent:
    """Per-second figures of the requests this process answered, for the page's charts."""

    def __init__(self, seconds: int = HISTORY_S, now: float | None = None) -> None:
        self.samples: deque[dict[str, Any]] = deque(maxlen=seconds)
        self._latencies: list[float] = []
        self._since = time.time() if now is None else now
        self._queued: int | None = None
        self._queued_at = -math.inf

    def observe(self, seconds: float) -> None:
        self._latencies.append(seconds)

    def saw_queue(self, depth: int, now: float) -> None:
        """The brokers' queue depth (summed over services), as the page's fetch found it."""
        self._queued, self._queued_at = depth, now

    def tick(self, now: float) -> None:
        """Close the second that ended at `now`."""
        latencies, self._latencies = self._latencies, []
        elapsed = max(now - self._since, 1e-3)
        self._since = now
        latencies.sort()
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        fresh = now - self._queued_at <= QUEUE_FRESH_S
        self.samples.append(
            {
                "t": round(now, 3),
                "rps": round(len(latencies) / elapsed, 2),
                "p50_ms": None if p50 is None else round(p50 * 1000, 3),
                "p99_ms": None if p99 is None else round(p99 * 1000, 3),
                "queued": self._queued if fresh else None,
            }
        )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(1.0 - time.time() % 1.0)
            self.tick(time.time())


def dashboard_data(
    merged: Mapping[str, Any] | None, brokers: list[dict[str, Any]], recent: Recent
) -> dict[str, Any]:
    """What the page draws: the merged cluster view, each broker this frontend links to (with
    what that broker says of itself), and this process's figures."""
    merged = merged or {}
    own = {b.get("id"): b for b in merged.get("brokers", [])}
    listed = [{**own.get(b["id"], {}), **b} for b in brokers]
    return {
        "now": time.time(),
        "frontend": {"host": socket.gethostname(), "pid": os.getpid()},
        "brokers": listed,
        "services": merged.get("services", {}),
        "workers": merged.get("workers", []),
        "frontends": merged.get("frontends", []),
        "launchers": merged.get("launchers", []),
        "history": list(recent.samples),
    }
