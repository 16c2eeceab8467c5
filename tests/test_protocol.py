"""The wire protocol module: frame layouts, limits, and refusals of bad frames."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import msgpack
import pytest
import zmq

from zeroserve.common import protocol as p
from zeroserve.common.errors import ProtocolError, VersionMismatch
from zeroserve.common.frames import ZERO_COPY_BYTES, recv_frames, send_frames


def test_every_table_names_known_commands() -> None:
    for table in (p.FROM_FRONTEND, p.TO_FRONTEND, p.FROM_WORKER, p.TO_WORKER, p.TO_LAUNCHER):
        for command in table:
            assert command in p.COMMAND_NAMES
    assert len(set(p.COMMAND_NAMES)) == len(p.COMMAND_NAMES)
    assert all(len(c) == 1 for c in p.COMMAND_NAMES)


def test_request_round_trip() -> None:
    meta = {"service": "s", "timeout_ms": 1500}
    frames = p.request(b"rid1", meta, b"\x00body")
    command, args = p.parse(frames, p.FROM_FRONTEND)
    assert command == p.REQUEST
    assert p.identity(args[0]) == b"rid1"
    assert p.unpack_meta(args[1]) == meta
    assert args[2] == b"\x00body"


def test_frames_may_be_zmq_frames() -> None:
    zmq = pytest.importorskip("zmq")
    frames = [zmq.Frame(f) for f in p.heartbeat({"a": 1})]
    command, args = p.parse(frames, p.TO_WORKER)
    assert command == p.HEARTBEAT
    assert p.unpack_meta(args[0]) == {"a": 1}


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [b"ZS01"],
        [b"junk", p.HEARTBEAT, b""],
        [p.SIGNATURE, b"\xff", b""],
        [p.SIGNATURE, p.REQUEST, b"rid"],
        [p.SIGNATURE, p.REQUEST, b"rid", b"", b"", b"extra"],
        [p.SIGNATURE, p.READY, b""],  # READY comes from workers, not frontends
    ],
)
def test_bad_messages_are_refused(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        p.parse(frames, p.FROM_FRONTEND)


def test_another_version_is_named() -> None:
    with pytest.raises(VersionMismatch, match="ZS01"):
        p.parse([b"ZS01", p.HEARTBEAT, b""], p.FROM_WORKER)


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({1: "non-str key"}),
        b"\x81",  # truncated map
        msgpack.packb({"x": "y" * (p.MAX_META_BYTES + 1)}),
        msgpack.packb({"x": list(range(p.MAX_ITEMS + 1))}),
    ],
)
def test_bad_metadata_is_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        p.unpack_meta(data)


def test_identities_are_bounded() -> None:
    assert p.identity(b"x") == b"x"
    with pytest.raises(ProtocolError):
        p.identity(b"")
    with pytest.raises(ProtocolError):
        p.identity(b"x" * (p.MAX_ID_BYTES + 1))


def test_deadline_travels_as_a_budget() -> None:
    deadline = p.deadline_from({"timeout_ms": 2500}, 30.0, now=100.0)
    assert deadline == pytest.approx(102.5)
    assert p.remaining_ms(deadline, now=101.0) == 1500
    assert p.remaining_ms(deadline, now=200.0) == 0
    assert p.deadline_from({}, 30.0, now=100.0) == pytest.approx(130.0)
    assert p.deadline_from({"timeout_ms": "soon"}, 5.0, now=0.0) == pytest.approx(5.0)
    assert p.deadline_from({"timeout_ms": True}, 5.0, now=0.0) == pytest.approx(5.0)


def test_an_error_carries_retry_after() -> None:
    frames = p.error(b"frontend", b"rid", 503, "full", 1.0)
    command, args = p.parse(frames[1:], p.TO_FRONTEND)
    assert (command, args[0], args[2]) == (p.ERROR, b"rid", b"")
    assert p.unpack_meta(args[1]) == {"status": 503, "error": "full", "retry_after": 1.0}
    assert p.error_answer(404, "no") == (p.ERROR, {"status": 404, "error": "no"}, b"")


# Every builder, the table its receiver parses it with, and whether a ROUTER peer leads it.
BUILT = [
    (p.ready({"service": "s"}), p.FROM_WORKER, False),
    (p.heartbeat({"worker": b"w"}), p.FROM_WORKER, False),
    (p.heartbeat(), p.TO_FRONTEND, False),
    (p.request(b"rid", {"service": "s", "ct": "application/json"}, b"{}"), p.FROM_FRONTEND, False),
    (
        p.request_to_worker(b"w", b"c", b"rid", p.EMPTY_META, b"{}", timeout_ms=900, attempt=1),
        p.TO_WORKER,
        True,
    ),
    (p.cancel(b"rid"), p.FROM_FRONTEND, False),
    (p.cancel_to_worker(b"w", b"c", b"rid"), p.TO_WORKER, True),
    (p.answer(p.REPLY, b"c", b"rid", {"status": 200}, b"ok"), p.FROM_WORKER, False),
    (p.answer(p.CHUNK, b"c", b"rid", {}, b"piece"), p.FROM_WORKER, False),
    (p.answer_to_frontend(b"f", p.END, b"rid", p.EMPTY_META, b""), p.TO_FRONTEND, True),
    (p.error(b"f", b"rid", 503, "busy"), p.TO_FRONTEND, True),
    (p.status_request(), p.FROM_FRONTEND, False),
    (p.status_reply(b"f", b"rid", {"workers": []}), p.TO_FRONTEND, True),
    (p.routes({"broker_id": "b", "services": {}}), p.TO_FRONTEND, False),
    (p.drain(), p.FROM_WORKER, False),
    (p.drain(), p.TO_WORKER, False),
    (p.refused(409, "taken"), p.TO_WORKER, False),
    (p.refused(400, "version"), p.TO_FRONTEND, False),
    (p.announce(), p.TO_WORKER, False),
    (p.disconnect("stopping"), p.FROM_FRONTEND, False),
    (p.disconnect("hung", worker=b"w"), p.FROM_WORKER, False),
    (p.disconnect(), p.TO_WORKER, False),
    (p.route(b"rid", "s", {"1": 90, "2": 10}), p.FROM_FRONTEND, False),
    (p.route_reply(b"f", b"rid", {"service": "s", "weights": {}}), p.TO_FRONTEND, True),
    (p.retire(b"rid", "s", "1"), p.FROM_FRONTEND, False),
    (p.retire_reply(b"f", b"rid", {"service": "s", "version": "1"}), p.TO_FRONTEND, True),
    (p.retire_worker(b"w"), p.TO_WORKER, True),
    (p.launcher({"service": "s", "processes": 2}), p.FROM_WORKER, False),
    (p.launcher({"queued": 1, "in_flight": 2}), p.TO_LAUNCHER, False),
    (p.refused(421, "wrong port"), p.TO_LAUNCHER, False),
]


@pytest.mark.parametrize(("frames", "table", "routed"), BUILT)
def test_every_builder_makes_what_its_receiver_parses(
    frames: list, table: dict[bytes, int], routed: bool
) -> None:
    command, args = p.parse(frames[1:] if routed else frames, table)
    assert len(args) == table[command]


def test_every_command_has_a_builder() -> None:
    built = {(frames[2] if routed else frames[1]) for frames, _, routed in BUILT}
    assert built == set(p.COMMAND_NAMES)


def test_refusals_and_goodbyes_are_parsed_in_one_place() -> None:
    assert p.parse_refusal(p.refused(409, "route taken")[2]) == (409, "route taken")
    assert p.parse_refusal(p.pack_meta({"status": True})) == (400, "no reason given")
    assert p.parse_disconnect(p.disconnect("bye", worker=b"w")[2]) == {
        "reason": "bye",
        "worker": b"w",
    }
    assert p.parse_disconnect(p.pack_meta({"reason": 5, "worker": ""})) == {"reason": ""}


def test_route_and_retire_are_parsed_in_one_place() -> None:
    assert p.parse_route(p.route(b"r", "s", {"1": 90, "2": 10})[3]) == {
        "service": "s",
        "weights": {"1": 90, "2": 10},
    }
    assert p.parse_route(p.route(b"r", "s", {})[3]) == {"service": "s", "weights": {}}
    assert p.parse_route(p.pack_meta({"error": "no"})) == {"error": "no"}
    for weights in ({"1": -1}, {"bad label!": 1}, {"1": 0, "2": 0}, {"1": True}, [1]):
        with pytest.raises(ProtocolError):
            p.parse_route(p.pack_meta({"service": "s", "weights": weights}))
    with pytest.raises(ProtocolError):
        p.parse_route(p.pack_meta({"service": "", "weights": {}}))
    assert p.parse_retire(p.retire(b"r", "s", "v2")[3]) == {"service": "s", "version": "v2"}
    answer = p.retire_reply(b"f", b"r", {"service": "s", "version": "2", "workers": 3})
    assert p.parse_retire(answer[4])["workers"] == 3
    with pytest.raises(ProtocolError):
        p.parse_retire(p.retire(b"r", "s", "a b")[3])


def test_a_request_reaches_a_worker_with_its_frame_untouched_and_the_hop_on_top() -> None:
    sent = p.request(b"rid", {"service": "s", "timeout_ms": 5000, "attempt": 9}, b"{}")
    _, (rid, meta_frame, body) = p.parse(sent, p.FROM_FRONTEND)
    frames = p.request_to_worker(b"w", b"c", rid, meta_frame, body, timeout_ms=1234, attempt=2)
    command, args = p.parse(frames[1:], p.TO_WORKER)
    assert command == p.REQUEST and args[2] is meta_frame  # passed on, never re-packed
    assert p.parse_hop(args[3]) == (1234, 2)
    meta = p.unpack_request_meta(args[2], args[3])
    assert meta == {"service": "s", "timeout_ms": 1234, "attempt": 2}  # the hop's values win
    assert p.unpack_request_meta(meta_frame)["timeout_ms"] == 5000
    assert p.parse_hop(p.hop(-5, 2**40)) == (0, 2**32 - 1)  # clamped, never a struct error


@pytest.mark.parametrize("frame", [b"", b"\x00" * (p.HOP.size - 1), b"\x00" * (p.HOP.size + 1)])
def test_a_malformed_hop_frame_is_a_protocol_error(frame: bytes) -> None:
    with pytest.raises(ProtocolError, match="hop frame"):
        p.parse_hop(frame)
    with pytest.raises(ProtocolError, match="hop frame"):
        p.unpack_request_meta(p.EMPTY_META, frame)


def test_a_launcher_frame_is_parsed_in_one_place() -> None:
    said: p.LauncherMeta = {
        "host": "h",
        "pid": 7,
        "service": "s",
        "processes": 2,
        "problem": "x" * 2000,
        "heartbeat_interval_s": 1,
    }
    parsed = p.parse_launcher(p.launcher(said)[2])
    assert parsed == {**said, "problem": "x" * 1000, "heartbeat_interval_s": 1.0}
    wrong = {"pid": -1, "processes": True, "running": 10**6, "host": 5, "queued": "many"}
    assert p.parse_launcher(p.pack_meta(wrong)) == {}
    assert "launcher" not in p.HeartbeatMeta.__annotations__


def test_an_old_peer_is_told_the_version_not_misread() -> None:
    old = [b"ZS02", p.REQUEST, b"c", b"rid", p.EMPTY_META, b"{}"]
    with pytest.raises(VersionMismatch, match="ZS02"):
        p.parse(old, p.TO_WORKER)


_PAIR_NAMES = itertools.count()


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    """Two connected PAIR sockets in this process: a sender and a receiver."""
    context = zmq.Context.instance()
    a, b = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    # A name never used before: id() of a new socket may repeat one whose close is pending.
    endpoint = f"inproc://frames-{next(_PAIR_NAMES)}"
    a.bind(endpoint)
    b.connect(endpoint)
    try:
        yield a, b
    finally:
        a.close(0)
        b.close(0)


def test_frames_round_trip_small_copied_and_large_zero_copy(
    pair: tuple[zmq.Socket, zmq.Socket],
) -> None:
    a, b = pair
    large = bytes(range(256)) * (ZERO_COPY_BYTES // 256 + 1)
    sent = [p.SIGNATURE, p.REPLY, b"rid", zmq.Frame(b"as a frame"), large]
    send_frames(a, sent)
    assert b.poll(1000)
    assert recv_frames(b) == [p.SIGNATURE, p.REPLY, b"rid", b"as a frame", large]
    with pytest.raises(zmq.Again):
        recv_frames(b)


def test_large_parts_can_be_kept_as_frames_and_forwarded_as_they_came(
    pair: tuple[zmq.Socket, zmq.Socket],
) -> None:
    a, b = pair
    large = b"x" * ZERO_COPY_BYTES
    send_frames(a, [p.SIGNATURE, p.REPLY, b"rid", p.pack_meta({}), large])
    assert b.poll(1000)
    parts = recv_frames(b, keep_large=True)
    assert parts[:4] == [p.SIGNATURE, p.REPLY, b"rid", p.pack_meta({})]  # small: bytes
    assert isinstance(parts[4], zmq.Frame) and parts[4].bytes == large
    command, args = p.parse(parts, {p.REPLY: 3})
    assert (command, p.identity(args[0]), p.unpack_meta(args[1])) == (p.REPLY, b"rid", {})
    send_frames(b, parts)  # the frame goes back out as it came
    assert a.poll(1000)
    assert recv_frames(a)[4] == large


def test_a_blocking_receive_waits_for_a_message_or_the_receive_timeout(
    pair: tuple[zmq.Socket, zmq.Socket],
) -> None:
    a, b = pair
    b.setsockopt(zmq.RCVTIMEO, 50)
    started = time.monotonic()
    with pytest.raises(zmq.Again):
        recv_frames(b, block=True)
    assert time.monotonic() - started >= 0.04
    sender = threading.Timer(0.05, send_frames, (a, [p.SIGNATURE, p.HEARTBEAT, b"{}"]))
    b.setsockopt(zmq.RCVTIMEO, 5000)
    sender.start()
    assert recv_frames(b, block=True) == [p.SIGNATURE, p.HEARTBEAT, b"{}"]
    sender.join()


def test_a_routes_table_is_parsed_once_into_typed_records() -> None:
    table: p.RoutesMeta = {
        "broker_id": "b",
        "services": {
            "svc": {
                "routes": [{"path": "/p", "methods": ["POST", "GET"]}, {"path": 3}, "junk"],
                "workers": 2,
                "models": ["m1", 7],
                "headers": True,
                "authorize": "yes",
                "request_schema": {"title": "In"},
                "mcp_tool": None,
            },
            "bare": {},
            "broken": [1, 2],
        },
    }
    services = p.parse_routes(p.routes(table)[2])
    assert services is not None and set(services) == {"svc", "bare"}
    svc = services["svc"]
    assert svc.routes == (p.RoutePath("/p", ("POST", "GET")),)
    assert (svc.workers, svc.models, svc.headers, svc.authorize) == (2, ("m1",), True, False)
    assert svc.request_schema == {"title": "In"} and svc.mcp_tool is None
    assert services["bare"] == p.ServiceRoutes()
    assert svc.describe()["routes"] == [{"path": "/p", "methods": ["POST", "GET"]}]
    assert p.parse_routes(p.pack_meta({"services": "none"})) is None
