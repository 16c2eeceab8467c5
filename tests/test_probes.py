"""Kubernetes' probes on the frontend, through real processes: /livez, /readyz, /startupz."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import requests

from cluster import Cluster, wait_until

KEY = "probe-test-key"


def probe(cluster: Cluster, path: str) -> tuple[int, str]:
    answer = requests.get(cluster.url(path), timeout=5)
    return answer.status_code, answer.text


def test_probes_follow_the_workers_and_need_no_key(cluster: Cluster) -> None:
    """Before any worker: alive, not ready, not started. With one: all 200. With it killed:
    not ready, naming the route, yet still alive and started. No probe asks for the keys set,
    and without them a 503 says nothing but 'not ready'."""
    cluster.broker()
    cluster.frontend("--api-key", KEY, "--litserve-api-key", KEY)
    assert probe(cluster, "/livez") == (200, "ok")
    assert probe(cluster, "/readyz")[0] == 503
    assert probe(cluster, "/startupz")[0] == 503
    assert requests.get(cluster.url("/health"), timeout=5).status_code == 401  # LitServe's rule

    worker = cluster.worker("EchoAPI")
    wait_until(lambda: probe(cluster, "/readyz")[0] == 200, what="/readyz to answer 200")
    assert requests.get(cluster.url("/readyz"), timeout=5).json() == {"status": "ready"}
    assert probe(cluster, "/startupz")[0] == 200

    cluster.stop(worker, signal.SIGKILL)
    wait_until(lambda: probe(cluster, "/readyz")[0] == 503, what="/readyz to answer 503")
    assert requests.get(cluster.url("/readyz"), timeout=5).json() == {"status": "not ready"}
    keyed = requests.get(cluster.url("/readyz"), headers={"X-API-Key": KEY}, timeout=5)
    assert keyed.status_code == 503
    assert keyed.json() == {"status": "not ready", "waiting": ["/predict"]}
    assert probe(cluster, "/startupz")[0] == 200  # started once: readiness's business now
    assert probe(cluster, "/livez") == (200, "ok")


def test_readyz_names_the_route_without_workers_and_the_lost_broker(cluster: Cluster) -> None:
    cluster.broker()
    cluster.frontend("--expect-route", "/other")
    cluster.worker("EchoAPI")
    cluster.wait_workers(1)
    wait_until(
        lambda: requests.get(cluster.url("/readyz"), timeout=5).json().get("waiting") == ["/other"],
        what="/readyz to name /other",
    )
    assert probe(cluster, "/readyz")[0] == 503
    broker = cluster.procs[0][1]
    cluster.stop(broker, signal.SIGKILL)
    wait_until(
        lambda: "not reachable" in probe(cluster, "/readyz")[1], what="the lost broker in /readyz"
    )
    assert probe(cluster, "/livez") == (200, "ok")


def test_readyz_leaves_out_an_unhealthy_worker(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose health() fails is registered but not healthy: not ready."""
    flag = tmp_path / "unhealthy"
    monkeypatch.setenv("ZS_TEST_UNHEALTHY", str(flag))
    cluster.up("HealthFileAPI")
    assert probe(cluster, "/readyz")[0] == 200
    flag.touch()
    wait_until(lambda: probe(cluster, "/readyz")[0] == 503, what="/readyz to answer 503")
    assert requests.get(cluster.url("/readyz"), timeout=5).json()["waiting"] == ["/predict"]
    flag.unlink()
    wait_until(lambda: probe(cluster, "/readyz")[0] == 200, what="/readyz to answer 200 again")
