"""The broker's queue and registry on their own."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zeroserve.broker.queue import ServiceQueue
from zeroserve.broker.registry import Registry, WorkerRecord, parse_ready, version_order
from zeroserve.common.errors import ProtocolError


def ready(
    service: str = "svc", path: str = "/predict", capacity: int = 2, version: str | None = None
) -> dict:
    meta = {"service": service, "routes": [{"path": path, "methods": ["POST"]}]}
    meta["capacity"] = capacity
    if version is not None:
        meta["model_version"] = version
    return parse_ready(meta)


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
        worker = service.pick()
        assert worker is not None
        service.assign(worker, (b"f", bytes([key])))
        picks.append(worker.identity)
    assert picks == [b"a", b"b", b"a", b"b"]
    assert service.pick() is None
    assert service.release_all(a) == {(b"f", b"\x00"), (b"f", b"\x02")}
    assert service.pick() is a
    service.set_serving(b, draining=True)
    service.release_all(b)
    assert b.credit == 0
    assert service.has_ready_worker() and service.ready_workers() == 1
    service.set_serving(a, draining=True)
    assert not service.has_ready_worker() and service.ready_workers() == 0
    assert service.pick() is None


def test_a_heartbeat_that_changes_a_workers_capacity_changes_its_credit() -> None:
    registry = Registry(max_queue=10)
    a = registry.add_worker(b"a", ready(capacity=1), {}, 0.0)
    service = registry.services["svc"]
    service.assign(a, (b"f", b"1"))
    assert service.pick() is None
    service.set_capacity(a, 2)
    assert a.credit == 1 and service.pick() is a
    service.set_capacity(a, 1)
    assert a.credit == 0 and service.pick() is None


class ReferencePicker:
    """Today's rule, the plain way: a walk in round-robin order (joined or last picked first)
    for the most free slots, the first of equals."""

    def __init__(self) -> None:
        self.order: list[bytes] = []

    def add(self, identity: bytes) -> None:
        self.order.append(identity)

    def remove(self, identity: bytes) -> None:
        self.order.remove(identity)

    def pick(self, workers: dict[bytes, WorkerRecord], version: str | None = None) -> bytes | None:
        best = None
        for identity in self.order:
            if version is not None and workers[identity].model_version != version:
                continue
            if workers[identity].credit > 0 and (
                best is None or workers[identity].credit > workers[best].credit
            ):
                best = identity
        if best is not None:
            self.order.remove(best)
            self.order.append(best)
        return best


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["pick", "pick", "pick", "answer", "answer", "drain", "sick", "well", "join", "leave"]
        ),
        st.integers(0, 15),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(OPS, st.integers(1, 4))
def test_the_ready_heap_picks_as_a_walk_over_every_worker_would(
    ops: list[tuple[str, int]], capacity: int
) -> None:
    """Any order of assignments, answers, drains, health changes, joins and departures: the
    pick is always the one of a walk over every worker (the most free slots; among equals,
    the one picked least recently), and the counts of status agree with the workers."""
    registry = Registry(max_queue=10)
    reference = ReferencePicker()
    keys = iter(range(10**6))
    joined = 0

    def join(size: int) -> None:
        nonlocal joined
        identity = b"w%d" % joined
        joined += 1
        registry.add_worker(identity, ready(capacity=size), {}, 0.0)
        reference.add(identity)

    for _ in range(3):
        join(capacity)
    service = registry.services["svc"]
    for op, n in ops:
        live = list(service.workers.values())
        worker = live[n % len(live)] if live else None
        if op == "pick":
            expected = reference.pick(service.workers)
            picked = service.pick()
            assert (picked.identity if picked else None) == expected
            if picked is not None:
                service.assign(picked, (b"f", b"%d" % next(keys)))
        elif op == "answer" and worker is not None and worker.assigned:
            assert service.release(worker, sorted(worker.assigned)[n % len(worker.assigned)])
        elif op == "drain" and worker is not None:
            service.set_serving(worker, draining=True)
        elif op in ("sick", "well") and worker is not None:
            service.set_serving(worker, healthy=op == "well")
        elif op == "join":
            join(1 + n % 4)
        elif op == "leave" and worker is not None:
            registry.remove_worker(worker.identity)
            reference.remove(worker.identity)
            assert worker.identity not in service.workers
            service.release_all(worker)
        serving = [w for w in service.workers.values() if w.serves]
        assert service.ready_workers() == len(serving)
        assert service.has_ready_worker() == bool(serving)
        assert all(len(w.assigned) <= w.capacity for w in service.workers.values())
    while (expected := reference.pick(service.workers)) is not None:
        picked = service.pick()
        assert picked is not None and picked.identity == expected
        service.assign(picked, (b"f", b"%d" % next(keys)))
    assert service.pick() is None


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


VERSIONED_OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["pick", "pick", "pick", "answer", "drain", "sick", "well", "join", "leave"]
        ),
        st.integers(0, 15),
        st.sampled_from(["1", "2", "10"]),
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(VERSIONED_OPS)
def test_each_versions_heap_picks_as_a_walk_over_its_workers_would(
    ops: list[tuple[str, int, str]],
) -> None:
    """Workers of several versions: a pick for a version is the one of a walk over that
    version's workers, and the per-version counts agree with the workers."""
    registry = Registry(max_queue=10)
    reference = ReferencePicker()
    keys = iter(range(10**6))
    joined = 0

    def join(size: int, version: str) -> None:
        nonlocal joined
        identity = b"w%d" % joined
        joined += 1
        registry.add_worker(identity, ready(capacity=size, version=version), {}, 0.0)
        reference.add(identity)

    for version in ("1", "2"):
        join(2, version)
    service = registry.services["svc"]
    for op, n, version in ops:
        live = list(service.workers.values())
        worker = live[n % len(live)] if live else None
        if op == "pick":
            expected = reference.pick(service.workers, version)
            picked = service.pick(None, version)
            assert (picked.identity if picked else None) == expected
            if picked is not None:
                service.assign(picked, (b"f", b"%d" % next(keys)))
        elif op == "answer" and worker is not None and worker.assigned:
            assert service.release(worker, sorted(worker.assigned)[n % len(worker.assigned)])
        elif op == "drain" and worker is not None:
            service.set_serving(worker, draining=True)
        elif op in ("sick", "well") and worker is not None:
            service.set_serving(worker, healthy=op == "well")
        elif op == "join":
            join(1 + n % 3, version)
        elif op == "leave" and worker is not None:
            registry.remove_worker(worker.identity)
            reference.remove(worker.identity)
            service.release_all(worker)
        members = {w.model_version for w in service.workers.values()}
        expected_counts = {
            v: sum(w.serves for w in service.workers.values() if w.model_version == v)
            for v in members
        }
        assert service.versions() == expected_counts
        serving = [v for v, count in expected_counts.items() if count]
        assert service.newest() == (max(serving, key=version_order) if serving else None)


def test_newest_compares_digit_runs_as_numbers() -> None:
    ordered = ["1", "1.9", "1.10", "2", "10", "v2", "v10"]
    assert sorted(reversed(ordered), key=version_order) == ordered


def test_weights_split_requests_exactly_between_versions_with_ready_workers() -> None:
    registry = Registry(max_queue=10)
    a = registry.add_worker(b"a", ready(capacity=100, version="1"), {}, 0.0)
    registry.add_worker(b"b", ready(capacity=100, version="2"), {}, 0.0)
    service = registry.services["svc"]
    assert [service.choose_version() for _ in range(3)] == ["2", "2", "2"]  # newest takes all
    registry.set_weights("svc", {"1": 90, "2": 10})
    chosen = [service.choose_version() for _ in range(100)]
    assert chosen.count("2") == 10
    # One in ten, spread out: never two of version 2 in a row.
    assert "2,2" not in ",".join(chosen)
    registry.set_weights("svc", {"1": 0, "2": 1})
    assert {service.choose_version() for _ in range(10)} == {"2"}
    registry.set_weights("svc", {"3": 1})  # no worker of the weighted one: the newest
    assert service.choose_version() == "2"
    service.set_serving(registry.workers[b"b"], draining=True)
    assert service.choose_version() == "1" and service.newest() == "1"
    service.set_serving(a, healthy=False)
    assert service.choose_version() is None and not service.has_ready_worker()


def test_weights_set_before_any_worker_wait_for_it() -> None:
    registry = Registry(max_queue=10)
    registry.set_weights("svc", {"1": 1, "2": 3})
    assert registry.route_table() == {}
    registry.add_worker(b"a", ready(capacity=4, version="1"), {}, 0.0)
    registry.add_worker(b"b", ready(capacity=4, version="2"), {}, 0.0)
    service = registry.services["svc"]
    assert [service.choose_version() for _ in range(4)].count("2") == 3
    assert list(registry.route_table()) == ["svc"]
