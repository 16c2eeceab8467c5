"""The broker's request life cycle on its own: every transition, and invariant 1, without sockets.

A recording wire stands in for the broker's sockets, as dramatiq's stub broker stands in for a
server: what the table would send is kept in lists the tests read.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zeroserve.broker.inflight import Inflight, Policy
from zeroserve.broker.registry import Registry, WorkerRecord, parse_ready
from zeroserve.broker.requests import BrokerRequest
from zeroserve.common import protocol as p
from zeroserve.common.errors import ProtocolError

F = b"frontend"


class RecordingWire:
    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes, int]] = []  # (worker, rid, attempt)
        self.cancels: list[tuple[bytes, bytes]] = []  # (worker, rid)
        #: Everything the frontends were told: (rid, command, status or None).
        self.to_frontend: list[tuple[bytes, bytes, int | None]] = []
        #: The Retry-After of each refusal, by request id.
        self.retry_after: dict[bytes, float | None] = {}

    def send_request(self, worker: WorkerRecord, request: BrokerRequest) -> None:
        self.requests.append((worker.identity, request.rid, request.attempt))

    def send_cancel(self, worker: bytes, request: BrokerRequest) -> None:
        self.cancels.append((worker, request.rid))

    def forward(self, request: BrokerRequest, command: bytes, meta: Any, body: Any) -> None:
        self.to_frontend.append((request.rid, command, None))

    def refuse(
        self, frontend: bytes, rid: bytes, status: int, why: str, retry_after_s: float | None = None
    ) -> None:
        self.to_frontend.append((rid, p.ERROR, status))
        self.retry_after[rid] = retry_after_s

    def terminal(self, rid: bytes) -> list[tuple[bytes, int | None]]:
        return [(c, s) for r, c, s in self.to_frontend if r == rid and c in p.TERMINAL]


def table(
    capacity: int = 1, workers: int = 1, max_queue: int = 10, **policy: Any
) -> tuple[Inflight, RecordingWire, list[WorkerRecord]]:
    registry = Registry(max_queue)
    ready = parse_ready(
        {"service": "svc", "routes": [{"path": "/p", "methods": ["POST"]}], "capacity": capacity}
    )
    added = [registry.add_worker(bytes([65 + i]), ready, {}, 0.0) for i in range(workers)]
    wire = RecordingWire()
    return Inflight(registry, wire, Policy(**policy), Counter()), wire, added


def offer(
    inflight: Inflight, rid: bytes, meta: dict[str, Any], frontend: bytes = F, now: float = 0.0
) -> None:
    """A frontend's request as the broker accepts it: its metadata and the frame it came in."""
    inflight.accept(frontend, rid, meta, b"body", now, meta_frame=p.pack_meta(meta))


def accept(inflight: Inflight, rid: bytes, timeout_ms: int = 1000, now: float = 0.0) -> None:
    offer(inflight, rid, {"service": "svc", "timeout_ms": timeout_ms}, now=now)


def reply(inflight: Inflight, worker: WorkerRecord, rid: bytes, command: bytes = p.REPLY) -> bool:
    return inflight.answer(worker, command, (F, rid), [p.EMPTY_META, b"ok"])


def test_accept_assigns_by_credit_and_queues_the_rest() -> None:
    inflight, wire, (a,) = table(capacity=1)
    accept(inflight, b"1")
    accept(inflight, b"2")
    assert wire.requests == [(b"A", b"1", 1)]
    assert a.assigned == {(F, b"1")} and len(inflight) == 2
    assert reply(inflight, a, b"1")
    inflight.dispatch(inflight.registry.services["svc"])
    assert wire.requests[-1] == (b"A", b"2", 1)
    assert wire.terminal(b"1") == [(p.REPLY, None)]


def test_accept_refuses_without_a_worker_a_full_queue_and_a_reused_id() -> None:
    inflight, wire, (a,) = table(capacity=1, max_queue=1)
    offer(inflight, b"x", {"service": "nobody"})
    accept(inflight, b"1")
    accept(inflight, b"2")  # queued
    accept(inflight, b"3")  # the queue is full
    assert wire.terminal(b"x") == [(p.ERROR, 503)]
    assert wire.terminal(b"3") == [(p.ERROR, 503)]
    # Both pass: a client is told when to try again.
    assert wire.retry_after[b"x"] and wire.retry_after[b"3"]
    assert inflight.counters["rejected_no_worker"] == inflight.counters["rejected_queue_full"] == 1
    with pytest.raises(ProtocolError, match="in use"):
        accept(inflight, b"1")
    inflight.registry.service_of(a).set_serving(a, draining=True)
    accept(inflight, b"4")
    assert wire.terminal(b"4") == [(p.ERROR, 503)]


def test_a_stream_is_forwarded_piece_by_piece_and_ends_once() -> None:
    inflight, wire, (a,) = table()
    accept(inflight, b"s")
    assert not reply(inflight, a, b"s", p.CHUNK)
    assert inflight.requests[(F, b"s")].started
    assert reply(inflight, a, b"s", p.END)
    assert not reply(inflight, a, b"s", p.END)  # a second end is dropped
    assert [c for _, c, _ in wire.to_frontend] == [p.CHUNK, p.END]
    assert inflight.counters["dropped_answers"] == 1 and not a.assigned


def test_cancel_drops_queued_work_and_tells_the_worker_of_assigned_work() -> None:
    inflight, wire, (a,) = table(capacity=1)
    accept(inflight, b"1")
    accept(inflight, b"2")
    assert inflight.cancel((F, b"2"))
    assert len(inflight.registry.services["svc"].queue) == 0 and (F, b"2") not in inflight.requests
    assert inflight.cancel((F, b"1")) and inflight.cancel((F, b"1"))
    assert wire.cancels == [(b"A", b"1")], "the worker is told once"
    # Its answer still comes (it frees the slot) but nobody is told.
    assert reply(inflight, a, b"1", p.ERROR)
    assert wire.to_frontend == [] and not a.assigned and len(inflight) == 0
    assert not inflight.cancel((F, b"unknown"))


def test_a_frontend_that_leaves_takes_its_requests_with_it() -> None:
    inflight, wire, _ = table(capacity=1)
    accept(inflight, b"1")
    accept(inflight, b"2")
    offer(inflight, b"1", {"service": "svc"}, b"other")
    assert inflight.drop_frontend(F) == 2
    # The assigned one stays until its worker gives the slot back; the queued one is gone.
    assert set(inflight.requests) == {(F, b"1"), (b"other", b"1")}
    assert inflight.requests[(F, b"1")].cancelled
    assert wire.cancels == [(b"A", b"1")]


def test_a_lost_worker_s_unstarted_work_goes_to_the_front_and_its_stream_fails() -> None:
    inflight, wire, (a, _) = table(capacity=2, workers=2)
    for rid in (b"1", b"2", b"3", b"4"):
        accept(inflight, rid)
    accept(inflight, b"5")  # queued behind
    held = {rid for _, rid in a.assigned}
    started = sorted(held)[0]
    reply(inflight, a, started, p.CHUNK)
    inflight.registry.remove_worker(a.identity)
    assert inflight.requeue(a) == (1, 1)
    assert wire.terminal(started) == [(p.ERROR, 502)]
    queue = inflight.registry.services["svc"].queue
    assert [queue.pop(), queue.pop()] == [(F, (held - {started}).pop()), (F, b"5")]
    assert not a.assigned


def test_attempts_are_bounded() -> None:
    inflight, wire, workers = table(capacity=1, workers=3, max_attempts=2)
    accept(inflight, b"1")
    for _ in range(2):
        holder = next(w for w in workers if (F, b"1") in w.assigned)
        inflight.registry.remove_worker(holder.identity)
        inflight.requeue(holder)
        inflight.dispatch(inflight.registry.services["svc"])
    assert [attempt for _, _, attempt in wire.requests] == [1, 2]
    assert wire.terminal(b"1") == [(p.ERROR, 502)] and len(inflight) == 0


def test_deadlines_drop_queued_work_cancel_assigned_work_and_take_back_the_slot() -> None:
    inflight, wire, (a,) = table(capacity=1, deadline_grace_s=5.0)
    accept(inflight, b"held", timeout_ms=1000)
    accept(inflight, b"queued", timeout_ms=500)
    assert inflight.expire(0.4) == []
    assert inflight.expire(0.6) == [] and (F, b"queued") not in inflight.requests
    assert inflight.expire(1.0) == []
    assert wire.cancels == [(b"A", b"held")] and (F, b"held") in a.assigned
    assert inflight.expire(5.9) == []
    (freed,) = inflight.expire(6.0)
    assert freed.name == "svc" and not a.assigned and len(inflight) == 0
    # The frontend answers 504 itself: nothing is sent from here, and a late answer is dropped.
    assert wire.to_frontend == []
    assert not reply(inflight, a, b"held")
    assert inflight.counters["expired_queued"] == inflight.counters["expired_inflight"] == 1


def test_an_answer_from_a_worker_that_does_not_hold_the_request_is_dropped() -> None:
    inflight, wire, (a, b) = table(capacity=1, workers=2)
    accept(inflight, b"1")
    holder, other = (a, b) if a.assigned else (b, a)
    assert not reply(inflight, other, b"1")
    assert wire.to_frontend == [] and holder.assigned == {(F, b"1")}


OPS = st.lists(
    st.tuples(
        st.sampled_from(["accept", "answer", "chunk", "cancel", "lose", "join", "tick", "late"]),
        st.integers(0, 7),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_every_request_ends_once_and_credit_never_drifts(ops: list[tuple[str, int]]) -> None:
    """Any order of arrivals, answers, cancels, lost workers and deadlines: no request is told
    two terminal answers, no worker is given more than its capacity, and once time runs out
    the table is empty."""
    inflight, wire, _ = table(capacity=2, workers=2, max_queue=4, max_attempts=2)
    registry = inflight.registry
    now, joined = 0.0, 2
    sent: list[bytes] = []
    for op, n in ops:
        rid = sent[n % len(sent)] if sent else b"none"
        live = list(registry.workers.values())
        if op == "accept":
            sent.append(str(len(sent)).encode())
            accept(inflight, sent[-1], timeout_ms=1000 + 100 * n, now=now)
        elif op in ("answer", "chunk", "late") and live:
            worker = live[n % len(live)]
            held = sorted(worker.assigned)
            if op == "late":
                reply(inflight, worker, rid)
            elif held:
                command = p.CHUNK if op == "chunk" else p.REPLY
                if inflight.answer(worker, command, held[0], [p.EMPTY_META, b""]):
                    inflight.dispatch(registry.services["svc"])
        elif op == "cancel":
            inflight.cancel((F, rid))
        elif op == "lose" and live:
            worker = live[n % len(live)]
            registry.remove_worker(worker.identity)
            inflight.requeue(worker)
            inflight.dispatch(registry.services["svc"])
        elif op == "join":
            ready = parse_ready({"service": "svc", "routes": [{"path": "/p"}], "capacity": 2})
            registry.add_worker(bytes([65 + joined]), ready, {}, now)
            joined += 1
            inflight.dispatch(registry.services["svc"])
        elif op == "tick":
            now += 0.5
            for service in inflight.expire(now):
                inflight.dispatch(service)
        for worker in registry.workers.values():
            assert len(worker.assigned) <= worker.capacity
            assert all(inflight.requests[key].worker == worker.identity for key in worker.assigned)
    for service in inflight.expire(now + 3600.0):
        inflight.dispatch(service)
    inflight.expire(now + 7200.0)
    for rid in {r for r, _, _ in wire.to_frontend}:
        assert len(wire.terminal(rid)) <= 1, wire.to_frontend
    assert len(inflight) == 0
    assert not any(worker.assigned for worker in registry.workers.values())


def versioned(*versions: str, capacity: int = 1) -> tuple[Inflight, RecordingWire, Registry]:
    """One worker of each version, in that order (identities A, B, ...)."""
    registry = Registry(10)
    for i, version in enumerate(versions):
        ready = parse_ready(
            {
                "service": "svc",
                "routes": [{"path": "/p", "methods": ["POST"]}],
                "capacity": capacity,
                "model_version": version,
            }
        )
        registry.add_worker(bytes([65 + i]), ready, {}, 0.0)
    wire = RecordingWire()
    return Inflight(registry, wire, Policy(), Counter()), wire, registry


def test_a_pinned_version_goes_to_its_workers_or_is_refused_naming_it() -> None:
    inflight, wire, registry = versioned("1", "2", capacity=4)
    for rid, pinned in ((b"1", "1"), (b"2", "2"), (b"3", "3")):
        offer(inflight, rid, {"service": "svc", "version": pinned})
    assert [(w, r) for w, r, _ in wire.requests] == [(b"A", b"1"), (b"B", b"2")]
    assert wire.terminal(b"3") == [(p.ERROR, 404)]
    service = registry.services["svc"]
    service.set_serving(registry.workers[b"A"], draining=True)
    offer(inflight, b"4", {"service": "svc", "version": "1"})
    assert wire.terminal(b"4") == [(p.ERROR, 503)]


def test_without_weights_the_newest_version_takes_new_requests() -> None:
    inflight, wire, _ = versioned("9", "10", capacity=4)
    for rid in (b"1", b"2", b"3"):
        accept(inflight, rid)
    assert {w for w, _, _ in wire.requests} == {b"B"}  # "10" is newer than "9"


def test_a_busy_version_does_not_hold_up_another_and_a_drained_one_hands_its_queue_on() -> None:
    inflight, wire, registry = versioned("1", "2", capacity=1)
    service = registry.services["svc"]
    registry.set_weights("svc", {"1": 1, "2": 1})
    for rid in (b"1", b"2", b"3", b"4"):
        accept(inflight, rid)  # 1 -> A, 2 -> B, 3 and 4 wait (A and B are full)
    assert len(wire.requests) == 2 and len(service.queue) == 2
    waiting = [inflight.requests[k].version for k in service.queue.front(2)]
    b = registry.workers[b"B"]
    # B answers: the next request of version 2 goes, even if the oldest waits for version 1.
    assert reply(inflight, b, wire.requests[1][1])
    inflight.dispatch(service)
    assert wire.requests[-1][0] == b"B" and len(service.queue) == 1
    assert waiting.count("2") == 1
    # Version 1 drains: its waiting request moves to version 2 (it pinned none).
    service.set_serving(registry.workers[b"A"], draining=True)
    assert reply(inflight, b, wire.requests[-1][1])
    inflight.dispatch(service)
    assert wire.requests[-1][0] == b"B" and not len(service.queue)


def _lose_only_worker(inflight: Inflight, worker: WorkerRecord, until: float) -> None:
    service = inflight.registry.service_of(worker)
    inflight.registry.remove_worker(worker.identity)
    service.awaiting_until = until


def test_a_service_waiting_for_a_replacement_queues_then_answers_503_with_retry_after() -> None:
    inflight, wire, (a,) = table(capacity=1)
    _lose_only_worker(inflight, a, until=2.0)
    accept(inflight, b"1", timeout_ms=10_000, now=1.0)
    assert wire.terminal(b"1") == [] and (F, b"1") in inflight.requests
    assert inflight.expire(1.9) == [] and wire.terminal(b"1") == []
    inflight.expire(2.0)  # the wait is over, and no worker came
    assert wire.terminal(b"1") == [(p.ERROR, 503)] and wire.retry_after[b"1"]
    assert (F, b"1") not in inflight.requests
    accept(inflight, b"2", now=2.1)
    assert wire.terminal(b"2") == [(p.ERROR, 503)]


def test_a_replacement_that_comes_in_time_takes_what_waited() -> None:
    inflight, wire, (a,) = table(capacity=1)
    _lose_only_worker(inflight, a, until=2.0)
    accept(inflight, b"1", timeout_ms=10_000, now=1.0)
    ready = parse_ready(
        {"service": "svc", "routes": [{"path": "/p", "methods": ["POST"]}], "capacity": 1}
    )
    inflight.registry.add_worker(b"B", ready, {}, 1.5)
    inflight.dispatch(inflight.registry.services["svc"])
    assert wire.requests == [(b"B", b"1", 1)]
    inflight.expire(2.5)
    assert wire.terminal(b"1") == []
