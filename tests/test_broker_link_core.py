"""The frontend's choice among brokers on its own: failover, held requests, deadlines and
late answers, without sockets or a clock (``frontend/link_core.py``).

Recording peers stand in for the broker links: what the core would send is kept in lists the
tests read, and each test moves the time by passing ``now``.
"""

from __future__ import annotations

from typing import Any

from zeroserve.common import protocol as p
from zeroserve.frontend.link_core import BROKER_UNREACHABLE, HELD, LinkCore, Waiter

TIMEOUT_S = 10.0
SETTLE_S = 3.0


class Peer:
    def __init__(self) -> None:
        self.alive = True
        self.sent: list[list[Any]] = []

    def send(self, frames: list[Any]) -> bool:
        if not self.alive:
            return False
        self.sent.append(frames)
        return True

    def requests(self) -> list[tuple[bytes, dict[str, Any]]]:
        """(rid, metadata) of each REQUEST sent."""
        return [(m[2], p.unpack_meta(m[3])) for m in self.sent if m[1] == p.REQUEST]

    def cancels(self) -> list[bytes]:
        return [m[2] for m in self.sent if m[1] == p.CANCEL]


def service_table(workers: int = 1, service: str = "svc") -> dict[str, p.ServiceRoutes]:
    """A broker's ROUTES, as the link parses it where it comes in."""
    table: p.RoutesMeta = {
        "services": {service: {"routes": [{"path": "/p", "methods": ["POST"]}], "workers": workers}}
    }
    services = p.parse_routes(p.routes(table)[2])
    assert services is not None
    return services


def core_of(brokers: int = 2, workers: tuple[int, ...] = ()) -> tuple[LinkCore, list[Peer]]:
    peers = [Peer() for _ in range(brokers)]
    core = LinkCore(peers, TIMEOUT_S, SETTLE_S)
    for index, count in enumerate(workers or (1,) * brokers):
        core.set_routes(index, service_table(count), 0.0)
    return core, peers


def submit(core: LinkCore, now: float = 0.0, service: str = "svc") -> tuple[Waiter, list[Any]]:
    """A request, and a list that receives every message of its answer."""
    got: list[Any] = []
    waiter = core.submit({"service": service, "path": "/p", "method": "POST"}, b"body", now)

    def listen(message: Any) -> None:
        got.append(message)
        waiter.listen(listen)

    waiter.listen(listen)
    return waiter, got


def statuses(got: list[Any]) -> list[tuple[bytes, int | None]]:
    return [(command, meta.get("status")) for command, meta, _ in got]


def test_requests_go_to_the_serving_brokers_in_turn() -> None:
    core, peers = core_of(3, workers=(1, 0, 1))
    for _ in range(4):
        submit(core)
    assert [len(peer.requests()) for peer in peers] == [2, 0, 2]


def test_a_request_carries_its_budget_and_the_frontends_load() -> None:
    core, peers = core_of(1)
    submit(core, now=100.0)
    submit(core, now=100.0)
    metas = [meta for _, meta in peers[0].requests()]
    assert [m["timeout_ms"] for m in metas] == [10_000, 10_000]
    assert [m["active"] for m in metas] == [1, 2]


def test_with_no_worker_anywhere_a_request_goes_to_a_live_broker() -> None:
    """The broker queues it until a worker comes (or answers 503); the frontend does not hold
    it when no broker is settling."""
    core, _ = core_of(2, workers=(0, 0))
    waiter, _ = submit(core)
    assert waiter.broker in (0, 1) and not core.held


def test_a_lost_broker_s_unbegun_requests_go_to_the_next_broker_with_what_is_left() -> None:
    core, peers = core_of(2)
    waiter, got = submit(core, now=0.0)
    first = waiter.broker
    other = 1 - first
    peers[first].alive = False
    core.lost(first, "the broker was lost", now=4.0)
    assert waiter.broker == other and got == []
    ((rid, meta),) = peers[other].requests()
    assert rid == waiter.rid and meta["timeout_ms"] == 6_000
    core.answer(other, p.REPLY, waiter.rid, {"status": 200}, b"ok")
    assert statuses(got) == [(p.REPLY, 200)] and not core.pending


def test_a_begun_stream_is_not_sent_again_but_answered_502() -> None:
    core, peers = core_of(2)
    waiter, got = submit(core)
    first = waiter.broker
    core.answer(first, p.CHUNK, waiter.rid, {"status": 200}, b"piece")
    peers[first].alive = False
    core.lost(first, "the broker was lost", now=1.0)
    assert statuses(got) == [(p.CHUNK, 200), (p.ERROR, 502)]
    assert peers[1 - first].requests() == [] and not core.pending


def test_with_every_broker_lost_a_request_is_held_then_sent_when_one_serves_again() -> None:
    core, peers = core_of(1)
    peers[0].alive = False
    core.lost(0, "the broker was lost", now=0.0)
    assert "/p" in core.routes, "a lost broker's routes still resolve"
    waiter, _ = submit(core, now=1.0)
    assert waiter.broker == HELD and waiter.rid in core.held
    peers[0].alive = True
    core.set_routes(0, service_table(0), now=2.0)  # back, but no worker yet
    core.sweep(2.5)
    assert waiter.rid in core.held and peers[0].requests() == []
    core.set_routes(0, service_table(1), now=3.0)
    assert not core.held and waiter.broker == 0
    ((rid, meta),) = peers[0].requests()
    assert rid == waiter.rid and meta["timeout_ms"] == 8_000


def test_a_held_request_past_its_deadline_is_answered_503_with_retry_after() -> None:
    core, peers = core_of(1)
    peers[0].alive = False
    core.lost(0, "the broker was lost", now=0.0)
    _, got = submit(core, now=0.0)
    core.sweep(TIMEOUT_S - 0.01)
    assert got == []
    core.sweep(TIMEOUT_S)
    ((command, meta, _),) = got
    assert (command, meta["status"], meta["error"]) == (p.ERROR, 503, BROKER_UNREACHABLE)
    assert meta["retry_after"] == 1.0
    assert not core.pending and not core.held


def test_a_request_past_its_deadline_is_answered_504_and_cancelled_at_its_broker() -> None:
    core, peers = core_of(1)
    waiter, got = submit(core, now=0.0)
    core.sweep(TIMEOUT_S)
    assert statuses(got) == [(p.ERROR, 504)]
    assert peers[0].cancels() == [waiter.rid] and not core.pending


def test_late_and_duplicate_answers_are_dropped() -> None:
    core, peers = core_of(2)
    waiter, got = submit(core)
    first = waiter.broker
    core.answer(first, p.REPLY, waiter.rid, {"status": 200}, b"ok")
    core.answer(first, p.REPLY, waiter.rid, {"status": 200}, b"again")
    core.sweep(TIMEOUT_S)  # its deadline passes after its answer: nothing more
    assert statuses(got) == [(p.REPLY, 200)] and peers[first].cancels() == []


def test_an_answer_from_a_broker_the_request_has_left_is_dropped() -> None:
    core, peers = core_of(2)
    waiter, got = submit(core)
    first = waiter.broker
    peers[first].alive = False
    core.lost(first, "the broker was lost", now=1.0)
    core.answer(first, p.REPLY, waiter.rid, {"status": 200}, b"from the lost one")
    assert got == []
    core.answer(1 - first, p.REPLY, waiter.rid, {"status": 200}, b"ok")
    assert [body for _, _, body in got] == [b"ok"]


def test_a_cancelled_request_is_cancelled_at_its_broker_and_its_answer_dropped() -> None:
    core, peers = core_of(1)
    waiter, got = submit(core)
    core.cancel(waiter)
    assert peers[0].cancels() == [waiter.rid]
    core.answer(0, p.REPLY, waiter.rid, {"status": 200}, b"ok")
    assert got == [] and not core.pending


def test_while_a_broker_settles_a_request_of_a_service_nobody_serves_is_held() -> None:
    """Back from a loss, a broker's workers get its heartbeat window to rejoin before their
    requests go to a broker that has no worker for them."""
    core, peers = core_of(2, workers=(1, 0))
    peers[0].alive = False
    core.lost(0, "the broker was lost", now=0.0)
    waiter, _ = submit(core, now=1.0)
    assert waiter.broker == HELD, "broker 1 is live but has no worker for it"
    peers[0].alive = True
    core.set_routes(0, service_table(0), now=2.0)  # settling until 5.0
    core.sweep(4.9)
    assert waiter.broker == HELD
    core.sweep(5.0)  # settled with no worker: the held request stays held (only_serving)
    assert waiter.broker == HELD
    later, _ = submit(core, now=5.1)  # nobody settles now: it goes to a live broker
    assert later.broker in (0, 1)


def test_the_merged_route_table_sums_workers_and_keeps_a_lost_broker_s_services() -> None:
    core, peers = core_of(2, workers=(2, 3))
    assert core.services["svc"].workers == 5 and core.ready_workers() == 5
    peers[1].alive = False
    core.lost(1, "the broker was lost", now=0.0)
    assert core.services["svc"].workers == 2 and "/p" in core.routes
    route = core.routes["/p"]
    assert (route.service, route.methods) == ("svc", frozenset({"POST"}))
