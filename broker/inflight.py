"""Every request the broker holds, from acceptance to its end, and the only ways it moves.

A request is *queued* (in its service's FIFO) or *assigned* (a worker holds it, and once a
piece of its stream went out it has *started*); it ends when it is answered, cancelled,
expired or failed. Invariant 1 (exactly one terminal answer per request) is kept here: a
request leaves the table at the moment its one terminal answer is decided, and anything said
about it afterwards is dropped. Credit is kept here too: a worker's ``assigned`` set holds
exactly the requests of this table it was given, changed only through its service's
``assign`` and ``release``, which keep the service's ready heap in step.

There is no socket here. What has to be said goes to a ``Wire`` (the broker's sockets, or a
recording stand-in in tests), so every transition can be tested on its own.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from zeroserve.broker.queue import ServiceQueue
from zeroserve.broker.registry import Registry, RequestKey, ServiceRecord, WorkerRecord
from zeroserve.broker.requests import BrokerRequest
from zeroserve.common import protocol as p
from zeroserve.common.errors import ProtocolError

log = logging.getLogger(__name__)


class Wire(Protocol):
    """What the table needs said, and to whom."""

    def send_request(self, worker: WorkerRecord, request: BrokerRequest) -> None:
        """Give `request` to `worker` (its attempt and remaining budget are set)."""

    def send_cancel(self, worker: bytes, request: BrokerRequest) -> None:
        """Tell the worker that holds `request` to skip it."""

    def forward(self, request: BrokerRequest, command: bytes, meta: Any, body: Any) -> None:
        """Pass a worker's answer on to the request's frontend."""

    def refuse(
        self,
        frontend: bytes,
        rid: bytes,
        status: int,
        why: str,
        retry_after_s: float | None = None,
    ) -> None:
        """Answer a request with an ERROR made here."""


@dataclass(frozen=True)
class Policy:
    """The settings the life cycle follows (from the broker's config)."""

    max_attempts: int = 3
    default_timeout_s: float = p.DEFAULT_TIMEOUT_S
    retry_after_s: float = 1.0
    deadline_grace_s: float = 10.0
    #: A request naming a model goes to a worker holding it first (off: model-blind).
    model_routing: bool = True


#: How far into a service's queue a free worker looks for a request of a model it holds, and
#: how many such requests may go before the oldest one (so that it never starves).
LOOKAHEAD = 32
MAX_PASSED = 16


def _model_of(request: BrokerRequest) -> str | None:
    named = request.meta.get("model")
    return named if isinstance(named, str) and named else None


class Inflight:
    """The table of requests held, with named transitions."""

    def __init__(
        self, registry: Registry, wire: Wire, policy: Policy, counters: Counter[str]
    ) -> None:
        self.registry = registry
        self.wire = wire
        self.policy = policy
        self.counters = counters
        self.requests: dict[RequestKey, BrokerRequest] = {}
        self._deadlines: list[tuple[float, int, RequestKey]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self.requests)

    # -- transitions -------------------------------------------------------------------

    def accept(
        self,
        frontend: bytes,
        rid: bytes,
        meta: dict[str, Any],
        body: Any,
        now: float,
        *,
        meta_frame: Any,
    ) -> None:
        """A frontend's request: queued and dispatched, or answered 503 at once. `meta` is
        `meta_frame` unpacked; the frame itself goes on to the worker as it came."""
        key = (frontend, rid)
        if key in self.requests:
            raise ProtocolError("request id already in use")
        self.counters["requests"] += 1
        name = meta.get("service")
        service = self.registry.services.get(name) if isinstance(name, str) else None
        if service is None or not (service.has_ready_worker() or now < service.awaiting_until):
            self.counters["rejected_no_worker"] += 1
            # Workers come back (a launcher restarts one that died): worth a try again.
            self.wire.refuse(frontend, rid, 503, _no_worker(name), self.policy.retry_after_s)
            return
        if service.queue.full():
            self.counters["rejected_queue_full"] += 1
            self.wire.refuse(
                frontend,
                rid,
                503,
                f"the queue of {name!r} is full ({service.queue.max_size} waiting)",
                self.policy.retry_after_s,
            )
            return
        version: str | None
        pinned = meta.get("version")
        if isinstance(pinned, str) and pinned:
            if not service.serves_version(pinned):
                self.counters["rejected_version"] += 1
                status, why = (
                    (503, "no worker of it takes new work now")
                    if service.has_version(pinned)
                    else (404, "it has no worker of that version")
                )
                self.wire.refuse(frontend, rid, status, f"version {pinned!r} of {name!r}: {why}")
                return
            version = pinned
        else:
            version = service.choose_version()
        deadline = p.deadline_from(meta, self.policy.default_timeout_s, now=now)
        request = BrokerRequest(frontend, rid, service.name, meta, meta_frame, body, deadline, now)
        request.version, request.pinned = version, bool(pinned)
        self.requests[key] = request
        heapq.heappush(self._deadlines, (deadline, next(self._seq), key))
        service.queue.push(key)
        self.dispatch(service)

    def dispatch(self, service: ServiceRecord) -> None:
        """Assign queued requests, oldest first, while a worker of the service has credit.

        A request naming a model goes to a free worker holding it. When none is free, the
        worker picked instead first looks for a request near the front whose model it holds
        (``LOOKAHEAD``), which goes before the oldest, at most ``MAX_PASSED`` times; else the
        oldest goes to it, and it loads that model.

        Each request goes to a worker of its version, chosen when it was accepted. While the
        oldest one's version has no free worker, a request near the front (``LOOKAHEAD``) of
        a version that has one goes instead; the oldest loses nothing by it. A request whose
        version no longer takes new work (drained, gone) is given the version the rule picks
        now, unless it pinned its own (then it is answered 503)."""
        queue = service.queue
        routing = self.policy.model_routing and service.multiplexed
        while len(queue):
            key = queue.peek()
            assert key is not None  # the queue was not empty
            request = self.requests[key]
            if not service.serves_version(request.version or ""):
                if request.pinned:
                    queue.pop()
                    self._fail(
                        request,
                        503,
                        f"version {request.version!r} of {service.name!r}: no worker of it "
                        "takes new work now",
                    )
                    continue
                request.version = service.choose_version()
                if request.version is None:
                    return
            model = _model_of(request) if routing else None
            worker = service.pick(model, request.version)
            if worker is None:
                found = self._other_version(service, queue, routing)
                if found is None:
                    return
                request, worker = found
                model = _model_of(request) if routing else None
            elif model is not None and model not in worker.models and request.passed < MAX_PASSED:
                other = self._held_by(worker, queue)
                if other is not None:
                    request.passed += 1
                    request, model = other, _model_of(other)
            if request.key == key:
                queue.pop()
            else:
                queue.remove(request.key)
            request.attempt += 1
            request.worker = worker.identity
            service.assign(worker, request.key, model)
            self.wire.send_request(worker, request)

    def _other_version(
        self, service: ServiceRecord, queue: ServiceQueue, routing: bool
    ) -> tuple[BrokerRequest, WorkerRecord] | None:
        """A request near the front of `queue` whose version has a free worker, with it."""
        if len(service.versions()) < 2:
            return None
        for key in itertools.islice(queue.front(LOOKAHEAD + 1), 1, None):
            request = self.requests[key]
            model = _model_of(request) if routing else None
            if request.version is not None and service.serves_version(request.version):
                worker = service.pick(model, request.version)
                if worker is not None:
                    return request, worker
        return None

    def _held_by(self, worker: WorkerRecord, queue: ServiceQueue) -> BrokerRequest | None:
        """A request near the front of `queue`, after the oldest, whose model `worker` holds."""
        held = worker.models
        if not held:
            return None
        for key in queue.front(LOOKAHEAD + 1):
            request = self.requests[key]
            if _model_of(request) in held and request.version == worker.model_version:
                return request
        return None

    def answer(
        self, worker: WorkerRecord, command: bytes, key: RequestKey, args: list[Any]
    ) -> bool:
        """A worker's REPLY, CHUNK, END or ERROR for `key` (``args``: its meta and body frames).
        True when it freed one of the worker's slots."""
        request = self.requests.get(key)
        if request is None or request.worker != worker.identity:
            # A late answer: the request expired, was cancelled, or went to another worker.
            self.counters["dropped_answers"] += 1
            return command in p.TERMINAL and self.registry.service_of(worker).release(worker, key)
        if command == p.CHUNK:
            request.started = True
        if not request.cancelled:
            self.wire.forward(request, command, args[0], args[1])
        if command not in p.TERMINAL:
            return False
        self.registry.service_of(worker).release(worker, key)
        worker.done += 1
        del self.requests[key]
        self.counters["answered"] += 1
        return True

    def cancel(self, key: RequestKey) -> bool:
        """Nobody waits any more: a queued request is dropped; an assigned one is skipped by
        its worker, whose answer (due in any case, to free the slot) is then dropped."""
        request = self.requests.get(key)
        if request is None:
            return False
        if request.worker is None:
            service = self.registry.services.get(request.service)
            if service is not None:
                service.queue.remove(key)
            del self.requests[key]
        elif not request.cancelled:
            request.cancelled = True
            self.wire.send_cancel(request.worker, request)
        return True

    def held_for(self, frontend: bytes) -> int:
        """How many of `frontend`'s requests are held."""
        return sum(1 for key in self.requests if key[0] == frontend)

    def drop_frontend(self, frontend: bytes) -> int:
        """A frontend left: every request of its own is cancelled."""
        mine = [key for key in self.requests if key[0] == frontend]
        for key in mine:
            self.cancel(key)
        return len(mine)

    def requeue(self, worker: WorkerRecord) -> tuple[int, int]:
        """A worker is gone (already out of the registry): what it held and had not begun to
        answer goes back to the front of its queue, in deadline order, while attempts remain;
        the rest is answered 502. Returns (requeued, failed)."""
        service = self.registry.service_of(worker)
        resent = failed = 0
        held = sorted(
            service.release_all(worker), key=lambda k: self.requests[k].deadline, reverse=True
        )
        for key in held:
            request = self.requests[key]
            request.worker = None
            if request.cancelled:
                del self.requests[key]
            elif request.started:
                failed += 1
                self._fail(request, 502, "the worker serving this stream was lost")
            elif request.attempt >= self.policy.max_attempts:
                failed += 1
                self._fail(
                    request, 502, f"the worker was lost, and {request.attempt} attempt(s) were made"
                )
            else:
                resent += 1
                service.queue.push_front(key)
        self.counters["resent"] += resent
        return resent, failed

    def expire(self, now: float) -> list[ServiceRecord]:
        """Deadlines that passed. The frontend answers its client 504 at the deadline (its own
        comes first, as the budget was counted from there), so here work is only dropped: a
        queued request at once; an assigned one is cancelled, and if its worker still holds it
        a grace period later, the slot is taken back. Returns the services that got a slot
        back (for the caller to dispatch)."""
        self._end_waits(now)
        freed: list[ServiceRecord] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, _, key = heapq.heappop(heap)
            request = self.requests.get(key)
            if request is None or deadline < request.deadline:
                continue
            if request.worker is None:
                self.counters["expired_queued"] += 1
                self.cancel(key)
            elif not request.expired:
                request.expired = True
                self.counters["expired_inflight"] += 1
                self.cancel(key)
                request.deadline = deadline + self.policy.deadline_grace_s
                heapq.heappush(heap, (request.deadline, next(self._seq), key))
            else:
                del self.requests[key]
                worker = self.registry.workers.get(request.worker)
                if worker is None:
                    continue
                service = self.registry.service_of(worker)
                if service.release(worker, key):
                    log.warning(
                        "worker %s pid %s held a request %.0f s past its deadline; slot taken back",
                        worker.host,
                        worker.pid,
                        self.policy.deadline_grace_s,
                    )
                    freed.append(service)
        return freed

    def _end_waits(self, now: float) -> None:
        """A service whose wait for a replacement worker is over and none came: what waits
        in its queue is answered 503 with Retry-After, as a new request would be."""
        for service in self.registry.services.values():
            if not 0 < service.awaiting_until <= now:
                continue
            service.awaiting_until = 0.0
            if service.has_ready_worker():
                continue
            while (key := service.queue.pop()) is not None:
                request = self.requests.get(key)
                if request is not None:
                    self._fail(request, 503, _no_worker(service.name), self.policy.retry_after_s)

    # -- helpers -----------------------------------------------------------------------

    def _fail(
        self, request: BrokerRequest, status: int, why: str, retry_after_s: float | None = None
    ) -> None:
        self.requests.pop(request.key, None)
        self.counters[f"failed_{status}"] += 1
        if not request.cancelled:
            self.wire.refuse(request.frontend, request.rid, status, why, retry_after_s)


def _no_worker(name: object) -> str:
    return f"no worker is serving {name!r} right now"
