"""The frontend's side of the broker: the route table, and every request waiting for its answer.

Each request gets an id unique within this process and a waiter that its
HTTP handler awaits. Exactly one terminal answer reaches each waiter: the
worker's, or a 502/503/504 made here when the broker is lost, unreachable or
too slow. Answers that come after that are dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeroserve.common import protocol as p
from zeroserve.common.connection import BrokerConnection
from zeroserve.frontend.config import FrontendConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    service: str
    methods: frozenset[str]
    #: The service reads request headers and the query string (its API takes ``context``).
    headers: bool = False


class Waiter:
    """The messages of one request, in order, for the handler that awaits them.

    The first message can go to a plain callback instead (``listen``): most
    answers are one message, and a callback costs less than a coroutine.
    """

    __slots__ = ("_callback", "_future", "_messages", "rid")

    def __init__(self, rid: bytes) -> None:
        self.rid = rid
        self._messages: deque[p.Answer] = deque()
        self._future: asyncio.Future | None = None
        self._callback: Callable[[p.Answer], None] | None = None

    def listen(self, callback: Callable[[p.Answer], None]) -> None:
        """Call `callback` with the next message, once (now, if it has come already)."""
        if self._messages:
            callback(self._messages.popleft())
        else:
            self._callback = callback

    def push(self, message: p.Answer) -> None:
        callback = self._callback
        if callback is not None:
            self._callback = None
            callback(message)
            return
        future = self._future
        if future is not None and not future.done():
            self._future = None
            future.set_result(message)
        else:
            self._messages.append(message)

    async def next(self) -> p.Answer:
        if self._messages:
            return self._messages.popleft()
        self._future = asyncio.get_running_loop().create_future()
        return await self._future


#: What every endpoint says while the broker cannot be reached.
BROKER_UNREACHABLE = "the broker is not reachable"
UNREACHABLE = p.error_answer(503, BROKER_UNREACHABLE, retry_after_s=1.0)


class BrokerLink:
    def __init__(self, config: FrontendConfig) -> None:
        self.config = config
        self.pending: dict[bytes, Waiter] = {}
        self.routes: dict[str, Route] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        #: (deadline, rid) in submission order, which is deadline order: every
        #: request gets the same timeout, so one sweep replaces a timer per request.
        self._deadlines: deque[tuple[float, bytes]] = deque()
        self._status_waiters: dict[bytes, asyncio.Future] = {}
        self._host = socket.gethostname()
        self._sweeper: asyncio.Task | None = None
        self.conn = BrokerConnection(
            config.broker,
            table=p.TO_FRONTEND,
            on_message=self._on_message,
            on_connect=self._hello,
            on_lost=self._on_lost,
            heartbeat_meta=self._heartbeat_meta,
            link=config.link,
            keys=config.link.client_keys(),
            immediate=True,
            name=f"frontend {os.getpid()}",
        )

    def start(self) -> None:
        self.conn.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_deadlines())

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.conn.close(p.disconnect("frontend stopping"))

    # -- what handlers ask ------------------------------------------------------

    def route(self, path: str) -> Route | None:
        return self.routes.get(path)

    def ready_workers(self) -> int:
        if not self.conn.alive:
            return 0
        return sum(s.get("workers", 0) for s in self.services.values())

    async def fetch_status(self, timeout_s: float = 1.0) -> dict[str, Any] | None:
        """The broker's snapshot of the cluster, or None when it does not answer in time."""
        rid = b"status-" + next(self._ids).to_bytes(8, "big")
        future = asyncio.get_running_loop().create_future()
        self._status_waiters[rid] = future
        try:
            if not self.conn.send(p.status_request(rid)):
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
    ) -> Waiter:
        """Send a request to the broker; the returned waiter yields its answer."""
        rid = next(self._ids).to_bytes(8, "big")
        waiter = Waiter(rid)
        if not self.conn.alive:
            waiter.push(UNREACHABLE)
            return waiter
        meta: p.RequestMeta = {
            "service": route.service,
            "path": path,
            "method": method,
            "ct": content_type,
            "timeout_ms": int(self.config.request_timeout_s * 1000),
            "request_id": request_id,
        }
        if headers is not None:
            meta["headers"] = headers
            meta["query"] = query
        if not self.conn.send(p.request(rid, meta, body)):
            waiter.push(UNREACHABLE)
            return waiter
        self.pending[rid] = waiter
        self._deadlines.append((time.monotonic() + self.config.request_timeout_s, rid))
        return waiter

    def cancel(self, waiter: Waiter) -> None:
        """The client left: stop waiting and tell the broker, which drops or cancels the work."""
        if self.pending.pop(waiter.rid, None) is not None:
            self.conn.send(p.cancel(waiter.rid))

    # -- events ------------------------------------------------------------------

    async def _sweep_deadlines(self) -> None:
        period_s = min(0.05, self.config.request_timeout_s / 10)
        message = p.error_answer(
            504, f"no answer within the request timeout of {self.config.request_timeout_s:g} s"
        )
        while True:
            await asyncio.sleep(period_s)
            now = time.monotonic()
            deadlines = self._deadlines
            while deadlines and deadlines[0][0] <= now:
                waiter = self.pending.pop(deadlines.popleft()[1], None)
                if waiter is not None:
                    self.conn.send(p.cancel(waiter.rid))
                    waiter.push(message)

    def _on_lost(self, why: str) -> None:
        """Requests the lost broker held will never be answered: answer them now."""
        lost, self.pending = self.pending, {}
        self._deadlines.clear()
        for waiter in lost.values():
            waiter.push(p.error_answer(502, f"{why}; the request was lost"))
        if lost:
            log.warning("%s: answered %d waiting request(s) with 502", why, len(lost))

    def _hello(self) -> None:
        self.conn.send(p.heartbeat(self._heartbeat_meta()))

    def _heartbeat_meta(self) -> dict[str, Any]:
        return {
            "host": self._host,
            "pid": os.getpid(),
            "heartbeat_interval_s": self.config.link.heartbeat_interval_s,
            "pending": len(self.pending),
        }

    def _on_message(self, command: bytes, args: list[Any]) -> None:
        if command in p.ANSWERS:
            rid = args[0]
            waiter = self.pending.get(rid)
            if waiter is None:
                return
            waiter.push((command, p.unpack_meta(args[1]), args[2]))
            if command in p.TERMINAL:
                del self.pending[rid]
        elif command == p.ROUTES:
            self._set_routes(p.unpack_meta(args[0]))
        elif command == p.STATUS:
            future = self._status_waiters.get(args[0])
            if future is not None and not future.done():
                future.set_result(p.unpack_meta(args[1]))
        elif command == p.REFUSED:
            log.error("the broker refused this frontend: %s", p.parse_refusal(args[0])[1])
        elif command == p.DISCONNECT:
            log.info("the broker said goodbye: %s", p.parse_disconnect(args[0])["reason"] or "-")

    def _set_routes(self, table: dict[str, Any]) -> None:
        services = table.get("services")
        if not isinstance(services, dict):
            return
        routes: dict[str, Route] = {}
        for name, service in services.items():
            for route in service.get("routes", []) if isinstance(service, dict) else []:
                path = route.get("path") if isinstance(route, dict) else None
                methods = route.get("methods") if isinstance(route, dict) else None
                if isinstance(path, str) and isinstance(methods, list):
                    wants = isinstance(service, dict) and service.get("headers") is True
                    routes[path] = Route(name, frozenset(str(m) for m in methods), wants)
        self.routes = routes
        self.services = services
        log.info(
            "routes: %s",
            ", ".join(f"{path} -> {r.service}" for path, r in sorted(routes.items())) or "none",
        )
