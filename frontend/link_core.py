"""Which broker holds each waiting request, and the route table merged from every broker's.

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

There is no socket and no clock here: the brokers are ``Peer`` objects (the
links of ``broker_link.BrokerLink``, or stand-ins in tests), and every event
that depends on the time is given ``now``, so each rule can be tested alone.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from zeroserve.common import protocol as p

log = logging.getLogger(__name__)


class Peer(Protocol):
    """A link to one broker, as the core uses it."""

    @property
    def alive(self) -> bool:
        """The broker can be reached."""

    def send(self, frames: list[Any]) -> bool:
        """Queue a message to the broker; False when it cannot take it now."""


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


class LinkCore:
    """Requests go to the live brokers in turn, and what a lost broker held and had not begun
    to answer goes to another within its deadline."""

    def __init__(
        self,
        peers: Sequence[Peer],
        request_timeout_s: float,
        settle_s: float,
        names: Sequence[str] = (),
    ) -> None:
        self.peers = peers
        self.request_timeout_s = request_timeout_s
        #: How long a broker back from a loss is given for its workers to rejoin.
        self.settle_s = settle_s
        #: Each broker's name for the logs (its endpoint).
        self.names = list(names) or [str(i) for i in range(len(peers))]
        self.pending: dict[bytes, Waiter] = {}
        self.routes: dict[str, Route] = {}
        self.services: dict[str, p.ServiceRoutes] = {}
        self._ids = itertools.count(1)
        #: (deadline, rid) in submission order, which is deadline order: every
        #: request gets the same timeout, so one sweep replaces a timer per request.
        self._deadlines: deque[tuple[float, bytes]] = deque()
        #: Each live broker's own route table (its "services"), merged into ``services``.
        self._tables: list[dict[str, p.ServiceRoutes]] = [{} for _ in peers]
        #: Each broker's services as last known, kept while it is lost or settling, so that
        #: their paths still resolve and their requests are held rather than refused.
        self._known: list[dict[str, p.ServiceRoutes]] = [{} for _ in peers]
        #: Per broker: until when it is settling (LOST: lost; 0: settled). While one settles,
        #: a request of a service no live broker serves is held, not sent.
        self._settle_until = [0.0] * len(peers)
        #: Requests no broker holds (in ``pending`` too), oldest first.
        self.held: dict[bytes, Waiter] = {}
        self._turn = 0

    # -- what handlers ask ------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Some broker can be reached."""
        return any(peer.alive for peer in self.peers)

    def next_id(self) -> bytes:
        return next(self._ids).to_bytes(8, "big")

    def ready_workers(self) -> int:
        return sum(
            s.workers
            for peer, table in zip(self.peers, self._tables, strict=True)
            if peer.alive
            for s in table.values()
        )

    def services_without_workers(self) -> list[str]:
        """Services that announced routes but have no ready worker at any live broker."""
        return [
            name
            for name, service in self.services.items()
            if service.routes and not service.workers
        ]

    def submit(self, meta: p.RequestMeta, body: Any, now: float) -> Waiter:
        """Send a request to a broker (or hold it); the returned waiter yields its answer.
        `meta` gets the request's budget and this frontend's load here."""
        rid = self.next_id()
        waiter = Waiter(rid)
        waiter.deadline = now + self.request_timeout_s
        meta["timeout_ms"] = p.remaining_ms(waiter.deadline, now)
        meta["active"] = len(self.pending) + 1
        self.pending[rid] = waiter
        self._deadlines.append((waiter.deadline, rid))
        if not self._send_request(waiter, meta, body, now):
            self._hold(waiter, meta, body)
        return waiter

    def cancel(self, waiter: Waiter) -> None:
        """The client left: stop waiting and tell the broker, which drops or cancels the work."""
        if self.pending.pop(waiter.rid, None) is not None:
            if waiter.broker == HELD:
                del self.held[waiter.rid]
            else:
                self.peers[waiter.broker].send(p.cancel(waiter.rid))

    # -- choosing a broker -----------------------------------------------------------

    def _send_request(
        self,
        waiter: Waiter,
        meta: p.RequestMeta,
        body: Any,
        now: float,
        *,
        avoid: int = -1,
        only_serving: bool = False,
    ) -> bool:
        """Send through a live broker that has workers for the service, in turn (any live one
        when none has, unless `only_serving` or a broker is settling); False when no broker
        took it."""
        peers = self.peers
        service = meta.get("service")
        if len(peers) == 1:
            live = [0] if peers[0].alive and avoid != 0 else []
            serving = [0] if live and self._serves(0, service) else []
        else:
            count = len(peers)
            start, self._turn = self._turn, (self._turn + 1) % count
            order = [(start + k) % count for k in range(count)]
            live = [i for i in order if peers[i].alive and i != avoid]
            serving = [i for i in live if self._serves(i, service)]
        if serving:
            chosen = serving + [i for i in live if i not in serving]
        elif only_serving or self._settling(now):
            return False
        else:
            chosen = live
        for index in chosen:
            if peers[index].send(p.request(waiter.rid, meta, body)):
                waiter.broker, waiter.meta, waiter.body = index, meta, body
                return True
        return False

    def _serves(self, index: int, service: Any) -> bool:
        entry = self._tables[index].get(service) if isinstance(service, str) else None
        return entry is not None and entry.workers > 0

    def _settling(self, now: float) -> bool:
        """Some broker is lost, or back for less than its heartbeat window."""
        return any(until > now for until in self._settle_until)

    # -- requests no broker holds ------------------------------------------------------

    def _hold(self, waiter: Waiter, meta: p.RequestMeta, body: Any) -> None:
        waiter.broker, waiter.meta, waiter.body = HELD, meta, body
        self.held[waiter.rid] = waiter

    def _release(self, now: float) -> None:
        """Send held requests, oldest first, to brokers that serve their service now; the
        others wait on to their deadline."""
        for rid, waiter in list(self.held.items()):
            if self.pending.get(rid) is not waiter or self._resend(
                waiter, HELD, now, only_serving=True
            ):
                del self.held[rid]

    def _resend(self, waiter: Waiter, lost: int, now: float, only_serving: bool = False) -> bool:
        """Send a request again with the budget it has left (False: none left, or no broker
        took it)."""
        assert waiter.meta is not None
        if waiter.deadline <= now:
            return False
        meta: p.RequestMeta = {**waiter.meta, "timeout_ms": p.remaining_ms(waiter.deadline, now)}
        return self._send_request(
            waiter, meta, waiter.body, now, avoid=lost, only_serving=only_serving
        )

    # -- events ------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Answer what is past its deadline (504, or 503 for a held request), settle the
        brokers whose window has passed, and send what is held to brokers that can take it."""
        deadlines = self._deadlines
        if deadlines and deadlines[0][0] <= now:
            message = p.error_answer(
                504, f"no answer within the request timeout of {self.request_timeout_s:g} s"
            )
            while deadlines and deadlines[0][0] <= now:
                waiter = self.pending.pop(deadlines.popleft()[1], None)
                if waiter is None:
                    continue
                if waiter.broker == HELD:
                    del self.held[waiter.rid]
                    waiter.push(self._held_too_long())
                else:
                    self.peers[waiter.broker].send(p.cancel(waiter.rid))
                    waiter.push(message)
        self._settle(now)
        if self.held:
            self._release(now)

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

    def lost(self, index: int, why: str, now: float) -> None:
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
            elif self._resend(waiter, index, now):
                resent += 1
            else:
                self._hold(waiter, waiter.meta, waiter.body)
                kept += 1
        if lost:
            log.warning(
                "%s (%s): of the %d request(s) it held, %d sent to another broker, %d held "
                "until a broker can take them, %d answered 502 (their answer had begun)",
                why,
                self.names[index],
                len(lost),
                resent,
                kept,
                failed,
            )

    def answer(self, index: int, command: bytes, rid: bytes, meta: Any, body: bytes) -> None:
        """A piece of an answer from broker `index`: to its waiter, unless the request was
        answered already or has left that broker."""
        waiter = self.pending.get(rid)
        if waiter is None or waiter.broker != index:
            return
        waiter.push((command, meta, body))
        if command in p.TERMINAL:
            del self.pending[rid]

    def set_routes(self, index: int, services: dict[str, p.ServiceRoutes], now: float) -> None:
        """Broker `index`'s route table came: merge it, and send what is held if it can."""
        if self._settle_until[index] == LOST:
            self._settle_until[index] = now + self.settle_s
        self._tables[index] = services
        if self._settle_until[index] > now:
            self._known[index] = {**self._known[index], **services}
        else:
            self._known[index] = services
        self._merge_routes()
        if self.held:
            self._release(now)

    def _merge_routes(self) -> None:
        """One route table from every broker's: a service's live workers are summed, and the
        services of a broker lost or settling are kept, with no workers."""
        services: dict[str, p.ServiceRoutes] = {}
        for table in (*self._tables, *self._known):  # live ones first: their details win
            for name, service in table.items():
                if name not in services:
                    services[name] = replace(service, workers=0)
        for table in self._tables:  # a lost broker's is empty
            for name, service in table.items():
                if service.workers:
                    services[name] = replace(
                        services[name], workers=services[name].workers + service.workers
                    )
        routes: dict[str, Route] = {}
        for name, service in services.items():
            for route in service.routes:
                routes[route.path] = Route(
                    name,
                    frozenset(route.methods),
                    headers=service.headers,
                    authorize=service.authorize,
                )
        if routes.keys() != self.routes.keys():
            log.info(
                "routes: %s",
                ", ".join(f"{path} -> {r.service}" for path, r in sorted(routes.items())) or "none",
            )
        self.routes = routes
        self.services = services
