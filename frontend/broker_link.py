"""The frontend's side of the broker: the route table, and every request waiting for its answer.

Each request gets an id unique within this process and a waiter that its
HTTP handler awaits. Exactly one terminal answer reaches each waiter: the
worker's, or a 502/503/504 made here when the broker is lost, unreachable or
too slow. Answers that come after that are dropped.

A lost broker costs no request whose answer had not begun: the frontend
cannot tell whether a worker had started it (the broker says nothing until
the first piece of the answer), so it sends it again, through another live
broker, or *holds* it until a broker can take it (the same one restarted, its
workers back) or its deadline passes (503 with Retry-After). Only a request
whose answer had begun (a stream) is answered 502. A broker that comes back
is given a short while (its heartbeat window) for its workers to rejoin
before it is sent requests of a service it has no worker for.
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
from zeroserve.common.connection import broker_links
from zeroserve.common.snapshot import Snapshot
from zeroserve.frontend.config import FrontendConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    service: str
    methods: frozenset[str]
    #: The service reads request headers and the query string (its API takes ``context``
    #: or authorizes).
    headers: bool = False
    #: Its API's ``authorize()`` decides who may call it, credentials included.
    authorize: bool = False


class Waiter:
    """The messages of one request, in order, for the handler that awaits them.

    The first message can go to a plain callback instead (``listen``): most
    answers are one message, and a callback costs less than a coroutine. While
    no message has come, the request may be sent again through another broker:
    the waiter keeps what that takes.
    """

    __slots__ = (
        "_callback",
        "_future",
        "_messages",
        "body",
        "broker",
        "deadline",
        "meta",
        "rid",
        "started",
    )

    def __init__(self, rid: bytes) -> None:
        self.rid = rid
        self._messages: deque[p.Answer] = deque()
        self._future: asyncio.Future | None = None
        self._callback: Callable[[p.Answer], None] | None = None
        #: The broker link that holds the request now (HELD: none yet), and what was sent.
        self.broker = 0
        self.meta: p.RequestMeta | None = None
        self.body: Any = b""
        self.deadline = 0.0
        #: A message of its answer has come: it can no longer go to another broker.
        self.started = False

    def listen(self, callback: Callable[[p.Answer], None]) -> None:
        """Call `callback` with the next message, once (now, if it has come already)."""
        if self._messages:
            callback(self._messages.popleft())
        else:
            self._callback = callback

    def push(self, message: p.Answer) -> None:
        self.started = True
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
#: A waiter's ``broker`` while no broker holds its request: the frontend holds it.
HELD = -1
#: A broker not reached since it was lost: it settles when its route table comes.
LOST = float("inf")


class BrokerLink:
    """Links to every broker; requests go to the live ones in turn, and what a lost broker
    held and had not begun to answer goes to another within its deadline."""

    def __init__(
        self, config: FrontendConfig, on_refused: Callable[[str], None] | None = None
    ) -> None:
        self.config = config
        #: Told why, when a broker refuses this frontend (final: it should stop).
        self.on_refused = on_refused
        self.refusal = ""
        self.pending: dict[bytes, Waiter] = {}
        self.routes: dict[str, Route] = {}
        self.services: dict[str, dict[str, Any]] = {}
        #: /startupz has answered 200: every route had a ready worker once.
        self.started = False
        self._ids = itertools.count(1)
        #: (deadline, rid) in submission order, which is deadline order: every
        #: request gets the same timeout, so one sweep replaces a timer per request.
        self._deadlines: deque[tuple[float, bytes]] = deque()
        self._status_waiters: dict[bytes, asyncio.Future] = {}
        self._host = socket.gethostname()
        self._sweeper: asyncio.Task | None = None
        #: Each live broker's own route table (its "services"), merged into ``services``.
        self._tables: list[dict[str, Any]] = [{} for _ in config.brokers]
        #: Each broker's services as last known, kept while it is lost or settling, so that
        #: their paths still resolve and their requests are held rather than refused.
        self._known: list[dict[str, Any]] = [{} for _ in config.brokers]
        #: Per broker: until when it is settling (LOST: lost; 0: settled). While one settles,
        #: a request of a service no live broker serves is held, not sent.
        self._settle_until = [0.0] * len(config.brokers)
        self._settle_s = config.link.silence_limit_s()
        #: Requests no broker holds (in ``pending`` too), oldest first.
        self.held: dict[bytes, Waiter] = {}
        self._turn = 0
        keys = config.link.client_keys()
        self.conns = broker_links(
            config.brokers,
            on_message=self._on_message,
            on_connect=self._hello,
            on_lost=self._on_lost,
            table=p.TO_FRONTEND,
            heartbeat_meta=self._heartbeat_meta,
            link=config.link,
            keys=keys,
            immediate=True,
            name=f"frontend {os.getpid()}",
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
        return any(conn.alive for conn in self.conns)

    def route(self, path: str) -> Route | None:
        return self.routes.get(path)

    def ready_workers(self) -> int:
        return sum(
            s.get("workers", 0)
            for conn, table in zip(self.conns, self._tables, strict=True)
            if conn.alive
            for s in table.values()
            if isinstance(s, dict)
        )

    def services_without_workers(self) -> list[str]:
        """Services that announced routes but have no ready worker at any live broker."""
        return [
            name
            for name, service in self.services.items()
            if service.get("routes") and not service.get("workers")
        ]

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
        rid = b"status-" + next(self._ids).to_bytes(8, "big")
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
        rid = next(self._ids).to_bytes(8, "big")
        waiter = Waiter(rid)
        meta: p.RequestMeta = {
            "service": route.service,
            "path": path,
            "method": method,
            "ct": content_type,
            "timeout_ms": int(self.config.request_timeout_s * 1000),
            "request_id": request_id,
            "active": len(self.pending) + 1,
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
        self.pending[rid] = waiter
        waiter.deadline = time.monotonic() + self.config.request_timeout_s
        self._deadlines.append((waiter.deadline, rid))
        if not self._send_request(waiter, meta, body):
            self._hold(waiter, meta, body)
        return waiter

    def cancel(self, waiter: Waiter) -> None:
        """The client left: stop waiting and tell the broker, which drops or cancels the work."""
        if self.pending.pop(waiter.rid, None) is not None:
            if waiter.broker == HELD:
                del self.held[waiter.rid]
            else:
                self.conns[waiter.broker].send(p.cancel(waiter.rid))

    # -- choosing a broker -----------------------------------------------------------

    def _send_request(
        self,
        waiter: Waiter,
        meta: p.RequestMeta,
        body: Any,
        avoid: int = -1,
        only_serving: bool = False,
    ) -> bool:
        """Send through a live broker that has workers for the service, in turn (any live one
        when none has, unless `only_serving` or a broker is settling); False when no broker
        took it."""
        conns = self.conns
        service = meta.get("service")
        if len(conns) == 1:
            live = [0] if conns[0].alive and avoid != 0 else []
            serving = [0] if live and self._serves(0, service) else []
        else:
            count = len(conns)
            start, self._turn = self._turn, (self._turn + 1) % count
            order = [(start + k) % count for k in range(count)]
            live = [i for i in order if conns[i].alive and i != avoid]
            serving = [i for i in live if self._serves(i, service)]
        if serving:
            chosen = serving + [i for i in live if i not in serving]
        elif only_serving or self._settling():
            return False
        else:
            chosen = live
        for index in chosen:
            if conns[index].send(p.request(waiter.rid, meta, body)):
                waiter.broker, waiter.meta, waiter.body = index, meta, body
                return True
        return False

    def _serves(self, index: int, service: Any) -> bool:
        entry = self._tables[index].get(service) if isinstance(service, str) else None
        return isinstance(entry, dict) and bool(entry.get("workers"))

    def _settling(self) -> bool:
        """Some broker is lost, or back for less than its heartbeat window."""
        now = time.monotonic()
        return any(until > now for until in self._settle_until)

    # -- requests no broker holds ------------------------------------------------------

    def _hold(self, waiter: Waiter, meta: p.RequestMeta, body: Any) -> None:
        waiter.broker, waiter.meta, waiter.body = HELD, meta, body
        self.held[waiter.rid] = waiter

    def _release(self) -> None:
        """Send held requests, oldest first, to brokers that serve their service now; the
        others wait on to their deadline."""
        for rid, waiter in list(self.held.items()):
            if self.pending.get(rid) is not waiter or self._resend(waiter, HELD, only_serving=True):
                del self.held[rid]

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
                if waiter is None:
                    continue
                if waiter.broker == HELD:
                    del self.held[waiter.rid]
                    waiter.push(self._held_too_long())
                else:
                    self.conns[waiter.broker].send(p.cancel(waiter.rid))
                    waiter.push(message)
            self._settle(now)
            if self.held:
                self._release()

    def _held_too_long(self) -> p.Answer:
        why = (
            BROKER_UNREACHABLE
            if not self.alive
            else "no broker could take the request within the request timeout"
        )
        return p.error_answer(503, why, retry_after_s=1.0)

    def _settle(self, now: float) -> None:
        """A broker whose heartbeat window since it came back has passed is settled: what its
        workers did not re-announce by then is forgotten."""
        for index, until in enumerate(self._settle_until):
            if 0 < until <= now:
                self._settle_until[index] = 0.0
                self._known[index] = self._tables[index]
                self._merge_routes()

    def _on_lost(self, index: int, why: str) -> None:
        """Requests the lost broker held will never be answered through it: those that had no
        answer yet go to another live broker or are held until one can take them (the frontend
        cannot tell whether a worker had begun them); those whose answer had begun are
        answered 502 now."""
        self._tables[index] = {}
        self._settle_until[index] = LOST
        self._merge_routes()
        lost = [w for w in self.pending.values() if w.broker == index]
        resent = kept = failed = 0
        for waiter in lost:
            if waiter.started or waiter.meta is None:
                del self.pending[waiter.rid]
                waiter.push(p.error_answer(502, f"{why}; the request was lost"))
                failed += 1
            elif self._resend(waiter, index):
                resent += 1
            else:
                self._hold(waiter, waiter.meta, waiter.body)
                kept += 1
        if lost:
            log.warning(
                "%s (%s): of the %d request(s) it held, %d sent to another broker, %d held "
                "until a broker can take them, %d answered 502 (their answer had begun)",
                why,
                self.config.brokers[index],
                len(lost),
                resent,
                kept,
                failed,
            )

    def _resend(self, waiter: Waiter, lost: int, only_serving: bool = False) -> bool:
        """Send a request again with the budget it has left (False: none left, or no broker
        took it)."""
        assert waiter.meta is not None
        left_s = waiter.deadline - time.monotonic()
        if left_s <= 0:
            return False
        meta: p.RequestMeta = {**waiter.meta, "timeout_ms": int(left_s * 1000)}
        return self._send_request(waiter, meta, waiter.body, lost, only_serving)

    def _hello(self, index: int) -> None:
        self.conns[index].send(p.heartbeat(self._heartbeat_meta()))

    def _heartbeat_meta(self) -> dict[str, Any]:
        return {
            "host": self._host,
            "pid": os.getpid(),
            "heartbeat_interval_s": self.config.link.heartbeat_interval_s,
            "pending": len(self.pending),
        }

    def _on_message(self, index: int, command: bytes, args: list[Any]) -> None:
        if command in p.ANSWERS:
            rid = args[0]
            waiter = self.pending.get(rid)
            if waiter is None or waiter.broker != index:
                return  # a late answer, or one of a broker the request has left
            waiter.push((command, p.unpack_answer_meta(args[1]), args[2]))
            if command in p.TERMINAL:
                del self.pending[rid]
        elif command == p.ROUTES:
            self._set_routes(index, p.unpack_meta(args[0]))
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

    def _set_routes(self, index: int, table: dict[str, Any]) -> None:
        services = table.get("services")
        if not isinstance(services, dict):
            return
        now = time.monotonic()
        if self._settle_until[index] == LOST:
            self._settle_until[index] = now + self._settle_s
        self._tables[index] = services
        if self._settle_until[index] > now:
            self._known[index] = {**self._known[index], **services}
        else:
            self._known[index] = services
        self._merge_routes()
        if self.held:
            self._release()

    def _merge_routes(self) -> None:
        """One route table from every broker's: a service's live workers are summed, and the
        services of a broker lost or settling are kept, with no workers."""
        services: dict[str, dict[str, Any]] = {}
        for table in (*self._tables, *self._known):  # live ones first: their details win
            for name, service in table.items():
                if isinstance(service, dict):
                    services.setdefault(name, {**service, "workers": 0})
        for table in self._tables:  # a lost broker's is empty
            for name, service in table.items():
                if isinstance(service, dict):
                    services[name]["workers"] += service.get("workers", 0) or 0
        routes: dict[str, Route] = {}
        for name, service in services.items():
            for route in service.get("routes", []):
                path = route.get("path") if isinstance(route, dict) else None
                methods = route.get("methods") if isinstance(route, dict) else None
                if isinstance(path, str) and isinstance(methods, list):
                    routes[path] = Route(
                        name,
                        frozenset(str(m) for m in methods),
                        headers=service.get("headers") is True,
                        authorize=service.get("authorize") is True,
                    )
        if routes.keys() != self.routes.keys():
            log.info(
                "routes: %s",
                ", ".join(f"{path} -> {r.service}" for path, r in sorted(routes.items())) or "none",
            )
        self.routes = routes
        self.services = services
