"""Hostile input on every door: HTTP, both broker sockets, and a worker's own socket."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import msgpack
import pytest
import requests
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from zeroserve.bench import BenchConfig, run_bench
from zeroserve.broker.registry import parse_ready
from zeroserve.common import protocol as p
from zeroserve.common.errors import ProtocolError

from cluster import Cluster, fake_ready, wait_until

frames = st.lists(st.binary(max_size=64), max_size=8)
commands = st.sampled_from([*p.COMMAND_NAMES, b"\x00", b"\xff", b""])


@settings(max_examples=500, deadline=None)
@given(st.one_of(frames, st.tuples(commands, frames).map(lambda t: [p.SIGNATURE, t[0], *t[1]])))
def test_the_decoder_only_ever_raises_protocol_errors(message: list[bytes]) -> None:
    for table in (p.FROM_FRONTEND, p.TO_FRONTEND, p.FROM_WORKER, p.TO_WORKER):
        try:
            command, args = p.parse(message, table)
        except ProtocolError:
            continue
        assert command in table and len(args) == table[command]
        for arg in args:
            with contextlib.suppress(ProtocolError):
                p.unpack_meta(arg)
            with contextlib.suppress(ProtocolError):
                p.identity(arg)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats()
        | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=20,
    )
)
def test_any_metadata_is_a_map_or_a_protocol_error(value: object) -> None:
    try:
        meta = p.unpack_meta(msgpack.packb(value))
    except ProtocolError:
        return
    assert isinstance(meta, dict)
    with contextlib.suppress(ProtocolError):
        parse_ready(meta)


@pytest.fixture(scope="module")
def echo(module_cluster: Cluster) -> Cluster:
    """Two echo workers behind a frontend, for the tests that send it hostile input but neither
    stop nor reconfigure it."""
    module_cluster.up("EchoAPI", 2, frontend_args=("--max-body", "4096"))
    return module_cluster


def test_hostile_http(echo: Cluster) -> None:
    url = echo.url()
    wrong_type = requests.post(
        url, data=b"hello", headers={"Content-Type": "text/plain"}, timeout=5
    )
    assert wrong_type.status_code == 422
    bad_utf8 = requests.post(
        url, data=b'{"value": "\xff\xfe"}', headers={"Content-Type": "application/json"}, timeout=5
    )
    assert bad_utf8.status_code == 400 and "malformed JSON" in bad_utf8.json()["detail"]
    not_json = requests.post(url, data=b"\x00" * 100, headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    with socket.create_connection(("127.0.0.1", echo.http_port)) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        s.settimeout(5)
        try:
            answer = s.recv(1024)
        except ConnectionResetError:
            # Closed with the rest of the header unread: the kernel resets instead of a FIN.
            answer = b""
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer
    with socket.create_connection(("127.0.0.1", echo.http_port)) as s:
        s.sendall(b"GARBAGE\r\n\r\n")
        s.settimeout(5)
        answer = s.recv(1024)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer
    assert echo.post({"value": "unharmed"}).json()["echo"] == "unharmed"


def test_many_concurrent_connections(echo: Cluster) -> None:
    summary = run_bench(
        BenchConfig(url=echo.url(), concurrency=300, duration_s=3, warmup_s=0.5)
    ).summary()
    assert summary["ok"] > 0 and set(summary["statuses"]) == {"200"}, summary
    assert not summary["errors"], summary


def _dealer(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(endpoint)
    return sock


def test_bad_frames_get_answers_where_they_can(echo: Cluster) -> None:
    front = _dealer(echo.frontend_endpoint)
    try:
        front.send_multipart([b"ZS01", p.HEARTBEAT, b""])
        assert front.poll(5000)
        command, args = p.parse(front.recv_multipart(), p.TO_FRONTEND)
        assert command == p.REFUSED and "version" in p.parse_refusal(args[0])[1]
        front.send_multipart([p.SIGNATURE, p.REQUEST, b"rid-1", b"x" * (p.MAX_META_BYTES + 1), b""])
        while True:  # the first answer may be the route table
            assert front.poll(5000)
            command, args = p.parse(front.recv_multipart(), p.TO_FRONTEND)
            if command == p.ERROR:
                break
        assert args[0] == b"rid-1" and p.unpack_meta(args[1])["status"] == 400
    finally:
        front.close()
    back = _dealer(echo.backend_endpoint)
    try:
        # A reply for a request nobody sent, from a worker nobody knows: dropped and counted;
        # that worker's heartbeat is told to announce itself.
        back.send_multipart(p.answer(p.REPLY, b"client", b"rid", {}, b"{}"))
        back.send_multipart(p.heartbeat({"worker": b"nobody"}))
        assert back.poll(5000)
        command, _ = p.parse(back.recv_multipart(), p.TO_WORKER)
        assert command == p.ANNOUNCE
    finally:
        back.close()
    counters = (echo.status() or {})["counters"]
    assert counters.get("dropped_answers", 0) >= 1
    assert echo.post({"value": "still"}).json()["echo"] == "still"


def test_random_frames_while_real_traffic_flows(echo: Cluster) -> None:
    cluster = echo
    before = (cluster.status() or {})["counters"]
    rng = random.Random(1234)
    stop = threading.Event()

    def noise(endpoint: str) -> None:
        sock = _dealer(endpoint)
        try:
            while not stop.is_set():
                parts = [rng.randbytes(rng.randint(0, 40)) for _ in range(rng.randint(1, 7))]
                if rng.random() < 0.7:
                    parts[:2] = [p.SIGNATURE, rng.choice(list(p.COMMAND_NAMES))]
                sock.send_multipart(parts)
                # Hundreds a second, not a flood: one that starves the broker of the CPU past
                # the tests' heartbeat window (0.6 s) on a loaded machine tests that instead.
                stop.wait(0.002)
        finally:
            sock.close(0)

    noisy = [
        threading.Thread(target=noise, args=(e,))
        for e in (cluster.frontend_endpoint, cluster.backend_endpoint)
    ]
    for t in noisy:
        t.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: cluster.post({"value": i}), range(300)))
    finally:
        stop.set()
        for t in noisy:
            t.join()
    assert [(a.status_code, a.json()["echo"]) for a in answers] == [(200, i) for i in range(300)]
    counters = (cluster.status() or {})["counters"]
    for side in ("bad_messages_frontend", "bad_messages_worker"):
        assert counters.get(side, 0) > before.get(side, 0), side


def test_a_worker_survives_garbage_from_its_broker(cluster: Cluster) -> None:
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    cluster.backend_endpoint = f"tcp://127.0.0.1:{port}"
    cluster.worker("EchoAPI", 1, "--heartbeat-interval", "2")
    try:
        while True:  # the launcher says LAUNCHER on a socket of its own
            assert router.poll(30_000), "no READY from the worker"
            identity, *message = router.recv_multipart()
            if p.parse(message, p.FROM_WORKER)[0] == p.READY:
                break
        for junk in (
            [b"junk"],
            [p.SIGNATURE, b"\xff"],
            [p.SIGNATURE, p.REQUEST, b"c"],
            [b"ZS99", p.HEARTBEAT, b""],
            [p.SIGNATURE, p.REQUEST, b"c", b"r", b"\xc1", p.hop(5000, 1), b"{}"],
            [p.SIGNATURE, p.REQUEST, b"c", b"r", p.EMPTY_META, b"\x00short", b"{}"],
            [p.SIGNATURE, p.REQUEST, b"c", b"r", p.EMPTY_META, b"{}"],  # the old layout
            [p.SIGNATURE, p.CANCEL, b"c", b"unknown"],
        ):
            router.send_multipart([identity, *junk])
        # The metadata's budget is spent and its attempt wrong: the hop frame's win.
        meta = p.pack_meta({"service": "EchoAPI", "timeout_ms": 0, "ct": "application/json"})
        router.send_multipart(
            p.request_to_worker(
                identity, b"client", b"rid", meta, b'{"value": 5}', timeout_ms=30_000, attempt=1
            )
        )
        heartbeat_reported: list[int] = []

        def answered() -> bool:
            if not router.poll(100):
                return False
            _, *reply = router.recv_multipart()
            command, args = p.parse(reply, p.FROM_WORKER)
            if command == p.LAUNCHER:  # the launcher's word, on a socket of its own
                return False
            if command == p.HEARTBEAT:
                heartbeat_reported.append(p.unpack_meta(args[0]).get("bad_messages", 0))
                return False
            assert command == p.REPLY, command
            assert args[:2] == [b"client", b"rid"]
            return b'"echo":5' in args[3]

        wait_until(answered, what="the worker to answer the real request")
        wait_until(
            lambda: answered() or bool(heartbeat_reported and heartbeat_reported[-1] >= 7),
            what="the worker to count the bad messages",
        )
    finally:
        router.close(0)


def test_a_worker_speaks_on_a_data_and_a_control_socket(cluster: Cluster) -> None:
    """READY and answers on the data socket; heartbeats on the control socket name the worker,
    and the broker's heartbeats go there. Only those two sockets speak for the worker."""
    cluster.broker()
    data = zmq.Context.instance().socket(zmq.DEALER)
    data.setsockopt(zmq.LINGER, 0)
    data.setsockopt(zmq.ROUTING_ID, b"Wtest-data")
    data.connect(cluster.backend_endpoint)
    control = _dealer(cluster.backend_endpoint)
    impostor = _dealer(cluster.backend_endpoint)
    try:
        data.send_multipart(p.ready(fake_ready("Fake", "/fake", "fake")))
        wait_until(lambda: len((cluster.status() or {}).get("workers", [])) == 1)
        control.send_multipart(p.heartbeat({"worker": b"Wtest-data", "done": 7}))
        assert control.poll(5000), "the broker did not greet a new control socket"
        command, _ = p.parse(control.recv_multipart(), p.TO_WORKER)
        assert command == p.HEARTBEAT
        # Until a control socket spoke, the broker's heartbeats went to the data socket.
        while data.poll(0):
            assert p.parse(data.recv_multipart(), p.TO_WORKER)[0] == p.HEARTBEAT
        (worker,) = (cluster.status() or {})["workers"]
        assert worker["reported"] == {"done": 7}
        assert b"Wtest-data".hex() not in str(worker), "status must not reveal identities"
        control.send_multipart(p.heartbeat({"worker": b"Wsomeone-else"}))
        # (The broker's heartbeats to the worker, 0.2 s apart, may come first.)
        while True:
            assert control.poll(5000)
            command, _ = p.parse(control.recv_multipart(), p.TO_WORKER)
            if command != p.HEARTBEAT:
                break
        assert command == p.ANNOUNCE
        assert not data.poll(100), "nothing for the data socket"
        # Another socket that names the worker can neither redirect nor remove it.
        impostor.send_multipart(p.heartbeat({"worker": b"Wtest-data", "done": 99}))
        impostor.send_multipart(p.disconnect("bye", worker=b"Wtest-data"))
        wait_until(
            lambda: (cluster.status() or {}).get("counters", {}).get("impostor_messages") == 2,
            what="the broker to refuse and count both",
        )
        (worker,) = (cluster.status() or {})["workers"]
        assert worker["reported"] == {"done": 7}
        assert not impostor.poll(100), "no heartbeat goes to the impostor"
        # The drain is asked and acknowledged on the data socket.
        data.send_multipart(p.drain())
        assert data.poll(5000)
        assert p.parse(data.recv_multipart(), p.TO_WORKER)[0] == p.DRAIN
        assert (cluster.status() or {})["workers"][0]["state"] == "draining"
        control.send_multipart(p.disconnect("bye", worker=b"Wtest-data"))
        wait_until(lambda: (cluster.status() or {}).get("workers") == [])
    finally:
        data.close()
        control.close()
        impostor.close()


def test_a_worker_answer_that_is_not_valid_http_is_a_502(echo: Cluster) -> None:
    """Headers a worker sets cannot split the answer; the client gets 502, nobody else is hurt."""
    fine = {"status_code": 201, "media_type": "text/plain", "headers": {"X-Model": "v2"}}
    answer = echo.post({"value": {"response": fine}})
    assert (answer.status_code, answer.headers["Content-Type"]) == (
        201,
        "text/plain; charset=utf-8",
    )
    assert answer.headers["X-Model"] == "v2"
    for bad in (
        {"media_type": "text/plain\r\nX-Injected: 1"},
        {"headers": {"X-Bad": "a\r\nX-Injected: 1"}},
        {"headers": {"Bad Name": "x"}},
        {"status_code": 99},
    ):
        answer = echo.post({"value": {"response": bad}}, timeout=5)
        assert answer.status_code == 502, bad
        assert "X-Injected" not in answer.headers
    assert echo.post({"value": "still"}).json()["echo"] == "still"
