"""The broker's peer rules on their own: joins, heartbeats, expiry, impostors, launchers,
frontends, drain and retire, without sockets and with the clock passed in.

A recording wire stands in for the broker's sockets (as dramatiq's stub broker stands in for a
server): what the rules would send is kept in lists the tests read.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from zeroserve.broker.inflight import Inflight, Policy
from zeroserve.broker.peers import Peers
from zeroserve.broker.registry import Registry
from zeroserve.common import protocol as p
from zeroserve.common.link import LinkConfig

LINK = LinkConfig(heartbeat_interval_s=1.0, heartbeat_liveness=3)
DATA, CONTROL, OTHER = b"worker-data", b"worker-control", b"stranger"


class RecordingWire:
    def __init__(self) -> None:
        self.worker_port: list[list[Any]] = []
        self.wrong: list[tuple[str, bytes, str]] = []
        self.routes_to: list[bytes] = []

    def to_worker_port(self, frames: list[Any]) -> None:
        self.worker_port.append(frames)

    def wrong_port(self, port: str, peer: bytes, role: str) -> None:
        self.wrong.append((port, peer, role))

    def send_routes(self, frontend: bytes) -> None:
        self.routes_to.append(frontend)

    def commands_to(self, peer: bytes) -> list[bytes]:
        return [f[2] for f in self.worker_port if f[0] == peer]

    # The request table's wire: these tests send no requests.
    def send_request(self, *args: Any) -> None:
        raise AssertionError("no request expected")

    send_cancel = forward = refuse = send_request


def peers() -> tuple[Peers, RecordingWire]:
    registry = Registry(10)
    wire = RecordingWire()
    counters: Counter[str] = Counter()
    inflight = Inflight(registry, wire, Policy(), counters)
    return Peers(registry, inflight, wire, counters, link=LINK, broker_id="b1"), wire


def say(peers: Peers, sender: bytes, frames: list[Any], now: float) -> None:
    command, args = p.parse(frames, p.FROM_WORKER)
    peers.on_worker_message(sender, command, args, now)


def join(peers: Peers, now: float = 0.0, version: str = "1") -> None:
    meta = {
        "service": "svc",
        "routes": [{"path": "/p", "methods": ["POST"]}],
        "capacity": 2,
        "heartbeat_interval_s": 2.0,
        "model_version": version,
    }
    say(peers, DATA, p.ready(meta), now)  # type: ignore[arg-type]


def beat(worker: bytes = DATA, **meta: Any) -> list[Any]:
    return p.heartbeat({"worker": worker, **meta})


def test_a_worker_joins_heartbeats_and_expires_by_its_announced_interval() -> None:
    rules, wire = peers()
    join(rules)
    worker = rules.registry.workers[DATA]
    assert rules.routes_dirty and worker.expiry_s == 6.0  # its 2 s interval, 3 missed
    say(rules, CONTROL, beat(capacity=5), now=5.0)
    assert worker.control == CONTROL and worker.capacity == 5
    assert wire.commands_to(CONTROL) == [p.HEARTBEAT]  # it hears the broker at once
    rules.expire(10.9)
    assert DATA in rules.registry.workers
    rules.expire(11.1)
    assert DATA not in rules.registry.workers and rules.counters["dead_workers"] == 1


def test_a_heartbeat_naming_an_unknown_worker_is_asked_to_announce_itself() -> None:
    rules, wire = peers()
    say(rules, CONTROL, beat(), now=0.0)
    assert wire.commands_to(CONTROL) == [p.ANNOUNCE]


def test_a_control_socket_naming_another_worker_is_refused_and_counted() -> None:
    rules, wire = peers()
    join(rules)
    say(rules, CONTROL, beat(), now=1.0)
    say(rules, OTHER, beat(capacity=1, healthy=False), now=2.0)
    say(rules, OTHER, p.disconnect("bye", worker=DATA), now=2.0)
    worker = rules.registry.workers[DATA]
    assert rules.counters["impostor_messages"] == 2
    assert worker.capacity == 2 and worker.healthy and worker.last_seen == 1.0
    assert wire.commands_to(OTHER) == []
    say(rules, CONTROL, p.disconnect("bye", worker=DATA), now=3.0)
    assert DATA not in rules.registry.workers


def test_a_frontend_heartbeat_on_the_worker_port_is_sent_to_its_port() -> None:
    rules, wire = peers()
    say(rules, OTHER, p.heartbeat({"host": "h", "pid": 1}), now=0.0)
    assert wire.wrong == [("worker", OTHER, "frontend")]
    rules.on_frontend_heartbeat(OTHER, {"worker": DATA}, now=0.0)
    assert wire.wrong[-1] == ("frontend", OTHER, "worker") and not rules.registry.frontends


def test_a_launcher_is_told_apart_by_its_command_hears_the_load_and_expires() -> None:
    rules, wire = peers()
    join(rules)
    launcher = b"launcher"
    meta: p.LauncherMeta = {"service": "svc", "processes": 2, "heartbeat_interval_s": 1.0}
    say(rules, launcher, p.launcher(meta), now=0.0)
    record = rules.registry.launchers[launcher]
    assert (record.service, record.processes, record.problem) == ("svc", 2, "")
    assert list(rules.registry.workers) == [DATA] and not wire.wrong
    assert wire.commands_to(launcher) == [p.LAUNCHER]
    command, args = p.parse(wire.worker_port[-1][1:], p.TO_LAUNCHER)
    assert command == p.LAUNCHER
    assert p.parse_launcher(args[0]) == {
        "broker_id": "b1",
        "heartbeat_interval_s": 1.0,
        "queued": 0,
        "in_flight": 0,
    }
    rules.expire(2.9)
    assert launcher in rules.registry.launchers
    rules.expire(3.1)
    assert launcher not in rules.registry.launchers


def test_a_heartbeat_is_never_a_launcher_s() -> None:
    """What was a launcher's word (a HEARTBEAT flagged ``launcher``) is a frontend's now: it
    names no worker, so it is sent to the frontend port."""
    rules, wire = peers()
    say(rules, OTHER, p.heartbeat({"launcher": True, "service": "svc"}), now=0.0)
    assert not rules.registry.launchers
    assert wire.wrong == [("worker", OTHER, "frontend")]


def test_a_launcher_goodbye_forgets_it_and_touches_no_worker() -> None:
    rules, _ = peers()
    join(rules)
    say(rules, b"launcher", p.launcher({}), now=0.0)
    assert b"launcher" in rules.registry.launchers
    say(rules, b"launcher", p.disconnect("bye"), now=1.0)
    assert not rules.registry.launchers and DATA in rules.registry.workers


def test_a_frontend_joins_is_named_and_expires() -> None:
    rules, wire = peers()
    rules.touch_frontend(b"f", None, now=0.0)  # joined by a request
    assert wire.routes_to == [b"f"] and rules.registry.frontends[b"f"].pid == 0
    rules.on_frontend_heartbeat(b"f", {"host": "h", "pid": 7, "heartbeat_interval_s": 2.0}, 1.0)
    record = rules.registry.frontends[b"f"]
    assert (record.host, record.pid, record.expires_at) == ("h", 7, 7.0)
    assert wire.routes_to == [b"f"]
    rules.expire(6.9)
    assert b"f" in rules.registry.frontends
    rules.expire(7.1)
    assert not rules.registry.frontends


def test_a_silent_frontend_keeps_its_requests_until_an_answer_cannot_reach_it() -> None:
    """A frontend starved of CPU past its heartbeat window is alive: forgetting it must not
    cancel what it waits for (it did, and the chaos run saw a request answered 504 after its
    frontend came back). Only an answer that cannot reach it (`drop_frontend`, "unreachable")
    cancels them."""
    rules, wire = peers()
    sent: list[Any] = []
    wire.send_request = wire.send_cancel = lambda *args: sent.append(args)  # type: ignore[method-assign]
    join(rules)
    rules.on_frontend_heartbeat(b"f", {"host": "h", "pid": 7}, now=0.0)
    meta: p.RequestMeta = {"service": "svc", "timeout_ms": 60_000}
    rules.inflight.accept(b"f", b"r1", meta, b"body", 0.0, meta_frame=p.pack_meta(meta))
    assert len(sent) == 1 and (b"f", b"r1") in rules.inflight.requests  # at its worker
    say(rules, CONTROL, beat(), now=9.0)  # the worker stays
    rules.expire(10.0)
    assert b"f" not in rules.registry.frontends
    assert (b"f", b"r1") in rules.inflight.requests, "its request is kept"
    rules.on_frontend_heartbeat(b"f", {"host": "h", "pid": 7}, now=10.5)  # back: joins again
    assert b"f" in rules.registry.frontends and wire.routes_to == [b"f", b"f"]
    rules.drop_frontend(b"f", "unreachable")
    assert rules.inflight.requests[(b"f", b"r1")].cancelled and len(sent) == 2  # its worker told
    assert b"f" not in rules.registry.frontends
    rules.drop_frontend(b"f", "unreachable")  # twice: nothing left, nothing raised


def test_a_draining_worker_takes_no_new_work_and_is_acknowledged() -> None:
    rules, wire = peers()
    join(rules)
    rules.routes_dirty = False
    say(rules, DATA, p.drain(), now=1.0)
    worker = rules.registry.workers[DATA]
    assert worker.draining and rules.routes_dirty and not worker.serves
    assert wire.commands_to(DATA) == [p.DRAIN]


def test_retire_tells_every_worker_of_the_version_through_its_control_socket() -> None:
    rules, wire = peers()
    join(rules)
    say(rules, CONTROL, beat(), now=1.0)
    assert rules.retire("svc", "2") == 0
    assert rules.retire("svc", "1") == 1
    assert rules.registry.workers[DATA].draining
    assert wire.commands_to(CONTROL)[-1] == p.RETIRE


def test_announcing_again_replaces_the_worker() -> None:
    rules, _ = peers()
    join(rules, version="1")
    join(rules, now=1.0, version="2")
    assert rules.registry.workers[DATA].model_version == "2"


def test_a_new_session_of_a_worker_ends_its_earlier_one_and_no_other() -> None:
    """A worker's READY from a fresh data socket (a new session number) ends its earlier
    session at once, not after its silence; a late READY of a session it replaced is dropped;
    another worker's sessions are untouched."""
    rules, _ = peers()
    meta = {"service": "svc", "routes": [{"path": "/p", "methods": ["POST"]}], "capacity": 2}
    first, second, third = (p.session_name(b"Wone", n) for n in (1, 2, 3))
    other = p.session_name(b"Wtwo", 1)
    say(rules, first, p.ready(meta), 0.0)  # type: ignore[arg-type]
    say(rules, other, p.ready(meta), 0.0)  # type: ignore[arg-type]
    say(rules, second, p.ready(meta), 0.1)  # type: ignore[arg-type]
    assert set(rules.registry.workers) == {second, other}
    say(rules, first, p.ready(meta), 0.2)  # type: ignore[arg-type]
    assert set(rules.registry.workers) == {second, other}
    assert rules.counters["stale_ready"] == 1
    say(rules, third, p.ready(meta), 0.3)  # type: ignore[arg-type]
    assert set(rules.registry.workers) == {third, other}
    say(rules, third, p.ready(meta), 0.4)  # type: ignore[arg-type]  # the same session again
    assert set(rules.registry.workers) == {third, other}


def test_a_worker_a_request_cannot_reach_is_removed_and_its_service_waits_for_another() -> None:
    """Its service's requests wait for a replacement as long as its heartbeats would have kept
    it (its 2 s interval, 3 missed), not refused at once."""
    rules, _ = peers()
    join(rules)
    rules.unreachable_worker(DATA, now=10.0)
    assert DATA not in rules.registry.workers and rules.counters["unreachable_workers"] == 1
    assert rules.registry.services["svc"].awaiting_until == 16.0
    rules.unreachable_worker(DATA, now=11.0)  # already gone: nothing more
    assert rules.counters["unreachable_workers"] == 1
