"""The broker's queue and registry on their own."""

from __future__ import annotations

import pytest

from zeroserve.broker.queue import ServiceQueue
from zeroserve.broker.registry import Registry, parse_ready
from zeroserve.common.errors import ProtocolError


def ready(service: str = "svc", path: str = "/predict", capacity: int = 2) -> dict:
    return parse_ready(
        {"service": service, "routes": [{"path": path, "methods": ["POST"]}], "capacity": capacity}
    )


def test_queue_is_bounded_but_takes_resends_in_front() -> None:
    queue = ServiceQueue(2)
    queue.push("a")
    queue.push("b")
    assert queue.full()
    queue.push_front("resent")
    assert [queue.pop(), queue.pop(), queue.pop(), queue.pop()] == ["resent", "a", "b", None]
    queue.push("c")
    assert queue.remove("c") and not queue.remove("c")


@pytest.mark.parametrize(
    "meta",
    [
        {},
        {"service": "bad name!", "routes": [{"path": "/p"}], "capacity": 1},
        {"service": "s", "routes": [], "capacity": 1},
        {"service": "s", "routes": [{"path": "no-slash"}], "capacity": 1},
        {"service": "s", "routes": [{"path": "/p", "methods": ["BREW"]}], "capacity": 1},
        {"service": "s", "routes": [{"path": "/p"}], "capacity": 0},
        {"service": "s", "routes": [{"path": "/p"}], "capacity": True},
        {"service": "s", "routes": [{"path": "/p"}], "capacity": 1, "heartbeat_interval_s": -1},
    ],
)
def test_bad_ready_is_refused(meta: dict) -> None:
    with pytest.raises(ProtocolError):
        parse_ready(meta)


def test_credit_picks_the_freest_worker_then_rotates() -> None:
    registry = Registry(max_queue=10)
    a = registry.add_worker(b"a", ready(capacity=2), {}, 0.0)
    b = registry.add_worker(b"b", ready(capacity=2), {}, 0.0)
    service = registry.services["svc"]
    picks = []
    for key in range(4):
        worker = registry.pick_worker(service)
        assert worker is not None
        worker.assigned.add((b"f", bytes([key])))
        picks.append(worker.identity)
    assert sorted(picks) == [b"a", b"a", b"b", b"b"]
    assert registry.pick_worker(service) is None
    a.assigned.clear()
    assert registry.pick_worker(service) is a
    b.draining = True
    b.assigned.clear()
    assert b.credit == 0
    assert service.has_ready_worker() and service.ready_workers() == 1
    a.draining = True
    assert not service.has_ready_worker() and service.ready_workers() == 0


def test_routes_belong_to_one_service() -> None:
    registry = Registry(max_queue=10)
    registry.add_worker(b"a", ready("one", "/x"), {}, 0.0)
    assert registry.route_conflict("two", ready("two", "/x")["routes"])
    assert registry.route_conflict("one", ready("one", "/y")["routes"])
    assert registry.route_conflict("one", ready("one", "/x")["routes"]) is None
    registry.remove_worker(b"a")
    # A service with no worker left gives its routes up.
    assert registry.route_conflict("two", ready("two", "/x")["routes"]) is None
    registry.add_worker(b"b", ready("two", "/x"), {}, 0.0)
    table = registry.route_table()
    assert list(table) == ["two"]
