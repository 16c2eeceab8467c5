"""The wire protocol module: frame layouts, limits, and refusals of bad frames."""

from __future__ import annotations

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
    for table in (p.FROM_FRONTEND, p.TO_FRONTEND, p.FROM_WORKER, p.TO_WORKER):
        for command in table:
            assert command in p.COMMAND_NAMES
    assert len(set(p.COMMAND_NAMES)) == len(p.COMMAND_NAMES)
    assert all(len(c) == 1 for c in p.COMMAND_NAMES)


def test_request_round_trip() -> None:
    meta = {"service": "s", "timeout_ms": 1500}
    frames = p.message(p.REQUEST, b"rid1", p.pack_meta(meta), b"\x00body")
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
    with pytest.raises(VersionMismatch, match="ZS02"):
        p.parse([b"ZS02", p.HEARTBEAT, b""], p.FROM_WORKER)


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


def test_error_meta_carries_retry_after() -> None:
    assert p.unpack_meta(p.error_meta(503, "full", 1.0)) == {
        "status": 503,
        "error": "full",
        "retry_after": 1.0,
    }


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    """Two connected PAIR sockets in this process: a sender and a receiver."""
    context = zmq.Context.instance()
    a, b = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    endpoint = f"inproc://frames-{id(a)}"
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
