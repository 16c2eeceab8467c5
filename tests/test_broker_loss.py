"""One broker lost and back: no request is failed for it but one whose answer had begun, a
restarted broker is rejoined at once, and each side says so in one line."""

from __future__ import annotations

import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

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
