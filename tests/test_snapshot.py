"""The STATUS answer's schema: built by the broker from its registry alone, checked once where
it is read, and read field by field by ``cluster status`` and ``/metrics``."""

from __future__ import annotations

import copy
from typing import Any, TypedDict

import pytest

from zeroserve.broker.registry import FrontendRecord, Registry, parse_ready
from zeroserve.broker.snapshot import build
from zeroserve.common import protocol as p
from zeroserve.common.errors import ProtocolError
from zeroserve.common.snapshot import BrokerStatus, Snapshot, _checker
from zeroserve.frontend.metrics import merge_snapshots
from zeroserve.status import format_status, throughput

BROKER: BrokerStatus = {
    "id": "b1",
    "version": "0.1.0",
    "host": "here",
    "pid": 7,
    "uptime_s": 10.0,
    "frontend_endpoint": "tcp://127.0.0.1:1",
    "backend_endpoint": "tcp://127.0.0.1:2",
    "requests_held": 0,
}


def snapshot(now: float = 10.0, done: int = 0) -> Snapshot:
    registry = Registry(max_queue=10)
    ready = parse_ready(
        {
            "service": "svc",
            "routes": [{"path": "/predict", "methods": ["POST"]}],
            "capacity": 2,
            "host": "h1",
            "pid": 11,
            "device": "cpu",
        }
    )
    worker = registry.add_worker(b"w1", ready, {"api": "Echo", "max_models": 0}, 0.0)
    worker.done, worker.joined_at = done, 0.0
    registry.frontends[b"f1"] = FrontendRecord(b"f1", "h2", 12, expires_at=9.0, last_seen=8.5)
    registry.touch_launcher(b"l1", {"host": "h1", "pid": 13, "service": "svc"}, 9.0, 3.0)
    return build(
        registry, {**BROKER, "uptime_s": now}, {"requests": done}, model_routing=True, now=now
    )


def roundtrip(data: Any) -> Snapshot:
    return p.unpack_status(p.status_reply(b"c", b"r", data)[-1])


def test_the_built_snapshot_is_the_schema_and_crosses_the_wire_whole() -> None:
    built = snapshot()
    assert roundtrip(built) == built
    (worker,) = built["workers"]
    assert (worker["host"], worker["pid"], worker["device"], worker["capacity"]) == (
        "h1",
        11,
        "cpu",
        2,
    )
    assert (worker["free"], worker["state"], worker["uptime_s"]) == (2, "ready", 10.0)
    assert built["services"]["svc"]["routes"] == ["/predict"]
    assert built["frontends"] == [{"host": "h2", "pid": 12, "last_heartbeat_s": 1.5}]
    assert built["launchers"][0]["service"] == "svc"


@pytest.mark.parametrize(
    ("spoil", "named"),
    [
        (lambda s: s.pop("workers"), "has no 'workers'"),
        (lambda s: s["workers"][0].update(pid="11"), "status.workers[0].pid is str, not int"),
        (lambda s: s["workers"][0].update(pid=True), "status.workers[0].pid is bool"),
        (lambda s: s["services"]["svc"].update(routes="/p"), "routes is str"),
        (lambda s: s["broker"].update(uptime_s=None), "uptime_s is NoneType"),
        (lambda s: s.update(frontends={}), "status.frontends is dict, not a list"),
    ],
)
def test_a_malformed_answer_is_one_protocol_error(spoil: Any, named: str) -> None:
    spoilt = copy.deepcopy(snapshot())
    spoil(spoilt)
    with pytest.raises(ProtocolError, match="malformed status answer") as caught:
        roundtrip(spoilt)
    assert named in str(caught.value)


def test_an_int_where_a_float_is_declared_and_no_device_are_fine() -> None:
    data = copy.deepcopy(snapshot())
    data["broker"]["uptime_s"] = 3
    data["workers"][0]["device"] = None
    assert roundtrip(data)["broker"]["uptime_s"] == 3


def test_a_field_declared_optional_is_checked_only_when_present() -> None:
    class Later(TypedDict, total=False):
        added: int

    class Record(Later):
        name: str

    check = _checker(Record)
    check({"name": "x"}, "status")
    check({"name": "x", "added": 1}, "status")
    with pytest.raises(ProtocolError, match=r"status\.added is str, not int"):
        check({"name": "x", "added": "1"}, "status")
    with pytest.raises(ProtocolError, match="status has no 'name'"):
        check({"added": 1}, "status")


def test_status_table_and_rates_read_the_records() -> None:
    before, after = snapshot(10.0, done=0), snapshot(12.0, done=8)
    rates = throughput(before, after)
    assert rates == {after["workers"][0]["id"]: 4.0}
    table = format_status(after, rates)
    assert "broker b1 on here pid 7, version 0.1.0, up 12 s" in table
    row = (
        "h1    11   svc      1        cpu     -        ready  2/2   0          8     12.0 s ago"
        "  4.0"
    )
    assert row in table.splitlines()


def test_merged_snapshots_count_each_worker_once_and_sum_its_answers() -> None:
    one, two = snapshot(done=3), snapshot(done=4)
    two["broker"] = {**two["broker"], "id": "b2"}
    merged = merge_snapshots([one, two])
    assert merged is not None
    assert [b["id"] for b in merged["brokers"]] == ["b1", "b2"]
    (worker,) = merged["workers"]
    assert (worker["done"], worker["capacity"]) == (7, 4)
    assert merged["counters"] == {"requests": 7}
    assert one["workers"][0]["done"] == 3  # the broker's own record is left as it was
