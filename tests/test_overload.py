"""Overload and slow clients: bounded memory, answers at once, nobody stalled."""

from __future__ import annotations

import socket
import threading
import time

import psutil
import requests

from zeroserve.bench import BenchConfig, run_bench

from cluster import Cluster, wait_until

#: Growth of broker or frontend memory allowed over the overload run.
RSS_BOUND_BYTES = 40 * 1024 * 1024


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def test_overload_is_answered_503_at_once_and_memory_stays_bounded(cluster: Cluster) -> None:
    broker = cluster.broker("--max-queue", "16")
    cluster.worker("EchoAPI", 1, "--capacity", "2")
    frontend = cluster.frontend()
    cluster.wait_healthy(1)
    before = {"broker": rss(broker.pid), "frontend": rss(frontend.pid)}
    retry_after: list[str | None] = []

    def probe() -> None:
        while len(retry_after) < 5:
            r = cluster.post({"op": "sleep", "seconds": 0.02})
            if r.status_code == 503:
                retry_after.append(r.headers.get("Retry-After"))

    prober = threading.Thread(target=probe)
    prober.start()
    # About 50 requests a second can be served; 96 clients offer far more, for 6 s.
    result = run_bench(
        BenchConfig(
            url=cluster.url(),
            concurrency=96,
            duration_s=6,
            warmup_s=0.5,
            payload=b'{"op": "sleep", "seconds": 0.02}',
        )
    )
    prober.join(30)
    summary = result.summary()
    assert set(summary["statuses"]) <= {"200", "503"}, summary
    assert summary["statuses"].get("503", 0) > summary["statuses"].get("200", 0), summary
    assert not summary["errors"], summary
    assert summary["p99_ms"] < 2000, "overload must be refused at once, not queued"
    assert retry_after and all(value == "1" for value in retry_after)
    after = {"broker": rss(broker.pid), "frontend": rss(frontend.pid)}
    for name, start in before.items():
        assert after[name] - start < RSS_BOUND_BYTES, (name, before, after)
    print(f"RSS before {before}, after {after}: {summary}")
    wait_until(lambda: (cluster.status() or {})["broker"]["requests_held"] == 0)
    assert cluster.post({"value": "fine"}).json()["echo"] == "fine"


def test_slow_clients_do_not_stall_others(cluster: Cluster) -> None:
    cluster.up("EchoAPI", frontend_args=("--idle-timeout", "1"))
    slow = []
    for i in range(21):
        s = socket.create_connection(("127.0.0.1", cluster.http_port))
        # Headers that never end; a body that never comes, on a service's path and on one
        # of the frontend's own.
        if i % 3 == 0:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: applic")
        elif i % 3 == 1:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        else:
            s.sendall(b"POST /info HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        slow.append(s)
    began = time.monotonic()
    for i in range(20):
        assert cluster.post({"value": i}, timeout=5).json()["echo"] == i
    assert time.monotonic() - began < 5
    # Only the client is held to the idle timeout, never the answer.
    slow_answer = cluster.post({"op": "sleep", "seconds": 2.5, "value": "late"}, timeout=10)
    assert slow_answer.json()["echo"] == "late"

    for s in slow:
        s.settimeout(5)
        try:
            data = s.recv(1024)
        except ConnectionResetError:
            data = b""
        # The server gave up on it: closed, or answered and closed.
        assert data == b"" or data.startswith(b"HTTP/1.1 4"), data
        s.close()
    assert requests.get(cluster.url("/health"), timeout=5).status_code == 200
