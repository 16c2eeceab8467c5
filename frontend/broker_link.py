"""The frontend's links to its brokers: sockets, heartbeats and the clock around ``LinkCore``.

``link_core.LinkCore`` decides which broker takes each request, what a lost one held, and
when a request is past its deadline; this module gives it the broker connections, the time,
and the messages that come, and answers status requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from zeroserve.common import protocol as p
from zeroserve.common.connection import broker_links
from zeroserve.common.snapshot import Snapshot
from zeroserve.frontend.config import FrontendConfig
from zeroserve.frontend.link_core import BROKER_UNREACHABLE, HELD, LinkCore, Route, Waiter

__all__ = ["BROKER_UNREACHABLE", "HELD", "BrokerLink", "Route", "Waiter"]

log = logging.getLogger(__name__)


class BrokerLink:
    """Links to every broker, and the requests waiting on them (``core``)."""

    def __init__(
        self, config: FrontendConfig, on_refused: Callable[[str], None] | None = None
    ) -> None:
        self.config = config
        #: Told why, when a broker refuses this frontend (final: it should stop).
        self.on_refused = on_refused
        self.refusal = ""
        #: /startupz has answered 200: every route had a ready worker once.
        self.started = False
        self._status_waiters: dict[bytes, asyncio.Future] = {}
        self._host = socket.gethostname()
        self._sweeper: asyncio.Task | None = None
        self.conns = broker_links(
            config.brokers,
            on_message=self._on_message,
            on_connect=self._hello,
            on_lost=self._on_lost,
            table=p.TO_FRONTEND,
            heartbeat_meta=self._heartbeat_meta,
            link=config.link,
            keys=config.link.client_keys(),
            immediate=True,
            name=f"frontend {os.getpid()}",
        )
        self.core = LinkCore(
            self.conns,
            config.request_timeout_s,
            settle_s=config.link.silence_limit_s(),
            names=config.brokers,
        )

    def start(self) -> None:
        for conn in self.conns:
            conn.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_deadlines())

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in self.conns:
            conn.close(p.disconnect("frontend stopping"))

    # -- what handlers ask ------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Some broker can be reached."""
        return self.core.alive

    @property
    def pending(self) -> dict[bytes, Waiter]:
        return self.core.pending

    @property
    def routes(self) -> dict[str, Route]:
        return self.core.routes

    @property
    def services(self) -> dict[str, p.ServiceRoutes]:
        return self.core.services

    def route(self, path: str) -> Route | None:
        return self.core.routes.get(path)

    def ready_workers(self) -> int:
        return self.core.ready_workers()

    def services_without_workers(self) -> list[str]:
        """Services that announced routes but have no ready worker at any live broker."""
        return self.core.services_without_workers()

    def describe_brokers(self) -> list[dict[str, Any]]:
        """Each broker this frontend links to: where, whether the link is up, and its id."""
        return [
            {"endpoint": conn.endpoint, "connected": conn.alive, "id": conn.broker_id}
            for conn in self.conns
        ]

    async def fetch_statuses(self, timeout_s: float = 1.0) -> list[Snapshot]:
        """Each live broker's snapshot of the cluster (those that answer in time)."""
        asked = [conn for conn in self.conns if conn.alive]
        answers = await asyncio.gather(*(self._fetch_status(c, timeout_s) for c in asked))
        return [answer for answer in answers if answer is not None]

    async def _fetch_status(self, conn: Any, timeout_s: float) -> Snapshot | None:
        rid = b"status-" + self.core.next_id()
        future = asyncio.get_running_loop().create_future()
        self._status_waiters[rid] = future
        try:
            if not conn.send(p.status_request(rid)):
                return None
            return await asyncio.wait_for(future, timeout_s)
        except asyncio.TimeoutError:
            return None
        finally:
            self._status_waiters.pop(rid, None)

    def submit(
        self,
        route: Route,
        path: str,
        method: str,
        content_type: str,
        body: bytes,
        *,
        request_id: str = "",
        headers: dict[str, str] | None = None,
        query: str = "",
        trace: dict[str, str] | None = None,
        model: str = "",
        version: str = "",
    ) -> Waiter:
        """Send a request to a broker; the returned waiter yields its answer."""
        meta: p.RequestMeta = {
            "service": route.service,
            "path": path,
            "method": method,
            "ct": content_type,
            "request_id": request_id,
        }
        if headers is not None:
            meta["headers"] = headers
            meta["query"] = query
        if trace is not None:
            meta["trace"] = trace
        if model:
            meta["model"] = model
        if version:
            meta["version"] = version
        return self.core.submit(meta, body, time.monotonic())

    def cancel(self, waiter: Waiter) -> None:
        """The client left: stop waiting and tell the broker, which drops or cancels the work."""
        self.core.cancel(waiter)

    # -- events ------------------------------------------------------------------

    async def _sweep_deadlines(self) -> None:
        period_s = min(0.05, self.config.request_timeout_s / 10)
        while True:
            await asyncio.sleep(period_s)
            self.core.sweep(time.monotonic())

    def _on_lost(self, index: int, why: str) -> None:
        self.core.lost(index, why, time.monotonic())

    def _hello(self, index: int) -> None:
        self.conns[index].send(p.heartbeat(self._heartbeat_meta(index)))

    def _heartbeat_meta(self, index: int) -> dict[str, Any]:
        """The same to every broker."""
        return {
            "host": self._host,
            "pid": os.getpid(),
            "heartbeat_interval_s": self.config.link.heartbeat_interval_s,
            "pending": len(self.core.pending),
        }

    def _on_message(self, index: int, command: bytes, args: list[Any]) -> None:
        if command in p.ANSWERS:
            self.core.answer(index, command, args[0], p.unpack_answer_meta(args[1]), args[2])
        elif command == p.ROUTES:
            services = p.parse_routes(args[0])
            if services is not None:
                self.core.set_routes(index, services, time.monotonic())
        elif command == p.STATUS:
            future = self._status_waiters.get(args[0])
            if future is not None and not future.done():
                future.set_result(p.unpack_status(args[1]))
        elif command == p.REFUSED:
            if self.refusal:
                return  # said once; the frontend is stopping
            why = self.refusal = p.parse_refusal(args[0])[1]
            log.error("the broker at %s refused this frontend: %s", self.conns[index].endpoint, why)
            if self.on_refused is not None:
                self.on_refused(why)
        elif command == p.DISCONNECT:
            log.info("the broker said goodbye: %s", p.parse_disconnect(args[0])["reason"] or "-")
