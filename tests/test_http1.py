"""The frontend's HTTP/1.1 connections (httptools under Tornado's IOStream), byte by byte."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from cluster import Cluster, wait_until


def post(body: bytes, *headers: str, path: str = "/predict", version: str = "1.1") -> bytes:
    lines = [f"POST {path} HTTP/{version}", "Host: x", "Content-Type: application/json", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_answers(sock: socket.socket, count: int, timeout_s: float = 10) -> list[tuple[int, dict]]:
    """`count` whole answers (Content-Length or chunked), as (status, JSON body)."""
    sock.settimeout(timeout_s)
    data = b""
    answers = []
    while len(answers) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            chunk = sock.recv(65536)
            assert chunk, f"the connection closed after {len(answers)} answer(s)"
            data += chunk
            continue
        head = data[:head_end].decode("latin1").split("\r\n")
        status = int(head[0].split()[1])
        fields = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        rest = data[head_end + 4 :]
        if "content-length" in fields:
            size = int(fields["content-length"])
            while len(rest) < size:
                rest += sock.recv(65536)
            body, data = rest[:size], rest[size:]
        else:
            assert fields.get("transfer-encoding") == "chunked"
            body = b""
            while True:
                while b"\r\n" not in rest:
                    rest += sock.recv(65536)
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                while len(rest) < size + 2:
                    rest += sock.recv(65536)
                body, rest = body + rest[:size], rest[size + 2 :]
                if size == 0:
                    break
            data = rest
        answers.append((status, {"_headers": fields, **json.loads(body or b"{}")}))
    return answers


def read_to_close(sock: socket.socket, timeout_s: float = 10) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails)."""
    sock.settimeout(timeout_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def closed_by_server(sock: socket.socket, timeout_s: float = 10) -> bool:
    read_to_close(sock, timeout_s)
    return True


@pytest.fixture(scope="module")
def frontend(module_cluster: Cluster) -> Cluster:
    """One cluster for the tests that only talk to its frontend."""
    module_cluster.up("EchoAPI", frontend_args=("--idle-timeout", "2", "--max-body", "100000"))
    return module_cluster


def connect(cluster: Cluster) -> socket.socket:
    return socket.create_connection(("127.0.0.1", cluster.http_port), timeout=10)


def test_pipelined_requests_are_answered_in_order(cluster: Cluster) -> None:
    cluster.up("EchoAPI", processes=2)  # the later requests could be answered first
    with connect(cluster) as s:
        # Three requests in one write; the first takes longest, yet answers keep their order.
        s.sendall(
            post(b'{"op": "sleep", "seconds": 0.3, "value": 1}')
            + post(b'{"value": 2}')
            + post(b'{"value": 3}')
        )
        answers = read_answers(s, 3)
        assert [(status, a["echo"]) for status, a in answers] == [(200, 1), (200, 2), (200, 3)]
        # The connection stays open for more.
        s.sendall(post(b'{"value": 4}'))
        assert read_answers(s, 1)[0][1]["echo"] == 4


def test_request_bodies_in_pieces_chunked_and_after_100_continue(frontend: Cluster) -> None:
    with connect(frontend) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each write a segment
        whole = post(b'{"value": "split"}')
        for i in range(0, len(whole), 7):  # a request in many small writes
            s.sendall(whole[i : i + 7])
        assert read_answers(s, 1)[0][1]["echo"] == "split"
        body = b'{"value": "chunked"}'
        s.sendall(
            post(b"", "Transfer-Encoding: chunked") + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        )
        assert read_answers(s, 1)[0][1]["echo"] == "chunked"
        body = b'{"value": "expected"}'
        s.sendall(post(b"", "Expect: 100-continue", f"Content-Length: {len(body)}"))
        s.settimeout(5)
        interim = s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        s.sendall(body)
        assert read_answers(s, 1)[0][1]["echo"] == "expected"


def test_connection_close_and_http_1_0(frontend: Cluster) -> None:
    with connect(frontend) as s:
        s.sendall(post(b'{"value": 1}', "Connection: close"))
        ((status, answer),) = read_answers(s, 1)
        assert status == 200 and answer["_headers"]["connection"] == "close"
        assert closed_by_server(s)
    with connect(frontend) as s:
        s.sendall(post(b'{"value": 1}', version="1.0"))
        assert read_answers(s, 1)[0][0] == 200
        assert closed_by_server(s)
    with connect(frontend) as s:
        s.sendall(post(b'{"value": 1}', "Connection: keep-alive", version="1.0"))
        ((_, answer),) = read_answers(s, 1)
        assert answer["_headers"]["connection"].lower() == "keep-alive"
        s.sendall(post(b'{"value": 2}', "Connection: keep-alive", version="1.0"))
        assert read_answers(s, 1)[0][1]["echo"] == 2


def test_a_stream_is_chunked(cluster: Cluster) -> None:
    cluster.up("StreamAPI")
    with connect(cluster) as s:
        s.sendall(post(b'{"n": 3}'))
        s.settimeout(10)
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            assert chunk
            data += chunk
        assert b"Transfer-Encoding: chunked" in data
        assert data.count(b'"i"') == 3


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            400,
        ),
        # An upgrade is not made: the request is answered as it is, and the connection closed.
        (b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", 404),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (post(b"", "Content-Length: 5000000"), 413),
        # As LitServe's MaxSizeMiddleware, which acts when the body is read: routes first.
        (post(b"", "Content-Length: 5000000", path="/nowhere"), 404),
        # The frontend's own endpoints: the same limit, the same 413, from the connection.
        (post(b"", "Content-Length: 5000000", path="/mcp"), 413),
    ],
)
def test_unreadable_requests_are_refused_and_the_frontend_serves_on(
    frontend: Cluster, request_bytes: bytes, status: int
) -> None:
    with connect(frontend) as s:
        s.sendall(request_bytes)
        answer = read_to_close(s)
        assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer[:200]
    assert frontend.post({"value": "still here"}).json()["echo"] == "still here"


@pytest.mark.parametrize("length", [200_000, 20_000_000])
def test_a_client_that_sends_a_body_too_large_whole_reads_its_413(
    frontend: Cluster, length: int
) -> None:
    """The answer comes before the body is read; the rest is read and dropped (a lingering
    close), so a client that writes it all before reading gets the 413, not a reset."""
    piece = b"a" * 65536
    with connect(frontend) as s:
        s.sendall(post(b"", f"Content-Length: {length}"))
        for _ in range(length // len(piece)):
            s.sendall(piece)
        s.sendall(piece[: length % len(piece)])
        answer = read_to_close(s)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert answer.endswith(b'\r\n\r\n{"detail":"Payload too large"}'), answer[-200:]
    assert b"\r\nX-Request-Id: " in answer.split(b"\r\n\r\n")[0], "written as every answer is"
    assert frontend.post({"value": 1}).ok


def test_a_body_too_large_without_a_length_is_cut(frontend: Cluster) -> None:
    piece = b"a" * 60_000
    with connect(frontend) as s:
        s.sendall(post(b"", "Transfer-Encoding: chunked"))
        try:
            for _ in range(5):
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_to_close(s)
        assert answer.startswith(b"HTTP/1.1 413") or answer == b""
    assert frontend.post({"value": 1}).ok


def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(frontend: Cluster) -> None:
    with connect(frontend) as s:
        s.sendall(post(b'{"value": 1}'))
        assert read_answers(s, 1)[0][0] == 200
        began = time.monotonic()
        assert closed_by_server(s, timeout_s=10)
        assert time.monotonic() - began >= 1.5  # --idle-timeout 2, swept each half second


def left_mid_answer(cluster: Cluster) -> float:
    """The frontend's count of /predict answers its client did not wait for (499)."""
    text = requests.get(cluster.url("/metrics"), timeout=5).text
    line = 'zeroserve_http_requests_total{route="/predict",status="499"} '
    counts = [float(row[len(line) :]) for row in text.splitlines() if row.startswith(line)]
    return counts[0] if counts else 0.0


def test_a_client_that_leaves_mid_answer_is_counted_as_499(frontend: Cluster) -> None:
    before = left_mid_answer(frontend)
    with connect(frontend) as s:
        s.sendall(post(b'{"op": "sleep", "seconds": 1.5, "value": 1}'))
        wait_until(
            lambda: (frontend.status() or {}).get("broker", {}).get("requests_held") == 1,
            what="the request to reach the worker before its client goes",
        )
    wait_until(
        lambda: left_mid_answer(frontend) == before + 1,
        what="the frontend to count the client that left",
    )
    assert frontend.post({"value": 2}).json()["echo"] == 2
