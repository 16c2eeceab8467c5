"""One broker lost and back: no request is failed for it but one whose answer had begun, a
restarted broker is rejoined at once, and each side says so in one line."""

from __future__ import annotations

import json
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from cluster import Cluster, wait_until


def ports_of(cluster: Cluster) -> tuple[int, int]:
    return tuple(  # type: ignore[return-value]
        int(e.rsplit(":", 1)[1]) for e in (cluster.frontend_endpoint, cluster.backend_endpoint)
    )


def in_flight(cluster: Cluster) -> float:
    """The requests the frontend waits on, from its /metrics."""
    text = requests.get(cluster.url("/metrics"), timeout=5).text
    found = re.search(r"^zeroserve_http_requests_in_flight ([\d.]+)$", text, re.M)
    return float(found.group(1)) if found else -1.0


def peer_logs(cluster: Cluster) -> dict[str, str]:
    """The worker's and the frontend's logs, by name."""
    return {name: path.read_text() for name, _, path in cluster.procs if name != "broker"}


def slow(cluster: Cluster, i: int, seconds: float = 1.0) -> tuple[int, int, object]:
    r = cluster.post({"op": "sleep", "seconds": seconds, "value": i}, timeout=60)
    return i, r.status_code, r.json().get("echo")


def test_a_broker_killed_and_restarted_fails_no_request_and_holds_new_ones(
    cluster: Cluster,
) -> None:
    cluster.up("EchoAPI", 1)  # one process, four slots
    ports = ports_of(cluster)
    with ThreadPoolExecutor(12) as pool:
        # Four at the worker, two queued at the broker when it dies.
        before = [pool.submit(slow, cluster, i) for i in range(6)]
        wait_until(
            lambda: (cluster.status() or {}).get("broker", {}).get("requests_held") == 6,
            what="six requests at the broker",
        )
        cluster.stop(cluster.procs[0][1], signal.SIGKILL)
        wait_until(lambda: cluster.health() == 503, what="the frontend to see the loss")
        during = [pool.submit(slow, cluster, i, 0.1) for i in range(6, 12)]
        wait_until(lambda: in_flight(cluster) == 12, what="twelve requests held by the frontend")
        cluster.broker(ports=ports)
        results = [f.result() for f in before + during]
    assert results == [(i, 200, i) for i in range(12)]
    assert "held until a broker can take them" in cluster.logs()


def test_a_request_held_past_its_deadline_is_answered_503_with_retry_after(
    cluster: Cluster,
) -> None:
    cluster.up("EchoAPI", 1, frontend_args=("--request-timeout", "1.5"))
    cluster.stop(cluster.procs[0][1], signal.SIGKILL)
    wait_until(lambda: cluster.health() == 503, what="the frontend to see the loss")
    began = time.monotonic()
    r = cluster.post({"value": 1})
    assert (r.status_code, r.headers.get("Retry-After")) == (503, "1")
    assert r.json()["detail"] == "the broker is not reachable"
    assert time.monotonic() - began >= 1.0, "held until its deadline"


def test_a_broker_back_after_a_while_is_rejoined_within_a_heartbeat_in_one_line_each(
    cluster: Cluster,
) -> None:
    """Away for 30 heartbeats (long enough for ZeroMQ's reconnection waits to grow to seconds
    when unbounded), the broker is rejoined by its worker and its frontend within about a
    heartbeat (0.2 s here) of being back; each says so once, and no handshake is blamed."""
    cluster.up("EchoAPI", 1)
    ports = ports_of(cluster)

    def reached(count: int) -> bool:
        return all(text.count("is reachable") >= count for text in peer_logs(cluster).values())

    wait_until(lambda: reached(1), what="each peer to hear the broker")
    cluster.stop(cluster.procs[0][1], signal.SIGKILL)
    wait_until(lambda: cluster.health() == 503, what="the frontend to see the loss")
    time.sleep(6)  # the outage itself: the peers keep trying meanwhile
    cluster.broker(ports=ports)  # returns once it answers STATUS
    back_at = time.monotonic()
    wait_until(lambda: cluster.post({"value": 1}, timeout=5).status_code == 200, 10, "service")
    took_s = time.monotonic() - back_at
    wait_until(lambda: reached(2), what="each peer to say the broker is back")
    logs = peer_logs(cluster)
    for name, text in logs.items():
        assert text.count("is reachable") == 2, f"{name}: joined, then rejoined once\n{text}"
        assert "refused the handshake" not in text, text
    assert logs["worker"].count("does not know this worker") <= 1, logs["worker"]
    assert took_s < 2.0, f"rejoined {took_s:.2f} s after the broker was back"


def test_a_stream_begun_when_its_broker_dies_ends_with_an_error(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The one request a lost broker fails: its answer had begun, and cannot be sent again."""
    cluster.up("StreamAPI")
    with cluster.post({"n": 3, "gate": str(tmp_path / "never")}, stream=True) as r:
        pieces = r.iter_lines()
        assert json.loads(next(pieces))["i"] == 0
        cluster.stop(cluster.procs[0][1], signal.SIGKILL)
        rest = [json.loads(line) for line in pieces if line]
    assert len(rest) == 1
    assert rest[0]["status"] == 502
    assert "the request was lost" in rest[0]["error"]
    assert "1 answered 502 (their answer had begun)" in cluster.logs()
