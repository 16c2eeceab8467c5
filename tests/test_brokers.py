"""Several brokers: the frontend links to each, spreads requests over the live ones, and sends
what a lost broker held and had not begun to answer through another. No request is lost."""

from __future__ import annotations

import json
import re
import signal
from typing import Any

import requests

from cluster import Cluster, run_cli, wait_until, worker_pids


def two_brokers(cluster: Cluster) -> dict[str, Any]:
    """Brokers A and B, a worker launcher on each, one frontend given both."""
    made: dict[str, Any] = {}
    for name in ("a", "b"):
        made[name] = cluster.broker()
        made[f"{name}_ports"] = tuple(
            int(e.rsplit(":", 1)[1]) for e in (cluster.frontend_endpoint, cluster.backend_endpoint)
        )
        made[f"{name}_endpoint"] = cluster.frontend_endpoint
        made[f"{name}_workers"] = cluster.worker("EchoAPI", 1)
        cluster.wait_workers(1)
    cluster.frontend("--broker", made["a_endpoint"])  # the harness gives B's
    wait_until(lambda: workers_seen(cluster) == 2, what="both brokers' workers in the routes")
    return made


def workers_seen(cluster: Cluster) -> int:
    info = requests.get(cluster.url("/info"), timeout=5).json()
    return info["services"].get("EchoAPI", {}).get("workers", 0)


def served_by(cluster: Cluster, count: int = 20) -> set[int]:
    return {cluster.post({"value": i}).json()["pid"] for i in range(count)}


def test_kill_9_of_one_broker_under_load_loses_no_request_and_it_rejoins(
    cluster: Cluster,
) -> None:
    """Both brokers serve and `cluster status` shows each; one killed under load loses no
    request, and `cluster status` names it; restarted, it is rejoined and serves."""
    made = two_brokers(cluster)
    pids = served_by(cluster)
    assert pids & worker_pids(made["a_workers"]) and pids & worker_pids(made["b_workers"])
    info = requests.get(cluster.url("/info"), timeout=5).json()
    assert [b["connected"] for b in info["brokers"]] == [True, True]
    # `cluster status` given both shows each broker and the workers as each sees them.
    both = ("--broker", made["a_endpoint"], "--broker", made["b_endpoint"])
    out = run_cli("status", *both, "--json")
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)
    assert [e["endpoint"] for e in entries] == [made["a_endpoint"], made["b_endpoint"]]
    assert [{w["pid"] for w in e["workers"]} for e in entries] == [
        worker_pids(made["a_workers"]),
        worker_pids(made["b_workers"]),
    ]
    assert "== " + made["b_endpoint"] in run_cli("status", *both).stdout

    results = cluster.load(240, 60, lambda: cluster.stop(made["a"], signal.SIGKILL))
    assert [(i, status, echo) for i, status, echo, _ in results] == [
        (i, 200, i) for i in range(240)
    ]
    assert "sent to another broker" in cluster.logs()
    out = run_cli("status", *both, "--json", "--timeout", "0.5")
    assert out.returncode == 1
    assert "error" in json.loads(out.stdout)[0] and "workers" in json.loads(out.stdout)[1]
    # Restarted on its endpoints, it is rejoined by its workers and the frontend, and serves.
    cluster.broker(ports=made["a_ports"])
    wait_until(lambda: workers_seen(cluster) == 2, what="broker A's worker back in the routes")
    wait_until(
        lambda: served_by(cluster, 8) & worker_pids(made["a_workers"]),
        what="broker A to take traffic again",
    )


def test_a_stopped_broker_under_load_loses_no_request(cluster: Cluster) -> None:
    made = two_brokers(cluster)
    try:
        results = cluster.load(240, 60, lambda: made["b"].send_signal(signal.SIGSTOP))
    finally:
        made["b"].send_signal(signal.SIGCONT)
    assert [(i, status, echo) for i, status, echo, _ in results] == [
        (i, 200, i) for i in range(240)
    ]
    # Awake again, B's late answers were dropped, and it takes traffic once more.
    wait_until(lambda: workers_seen(cluster) == 2, what="broker B back in the routes")
    wait_until(
        lambda: served_by(cluster, 8) & worker_pids(made["b_workers"]),
        what="broker B to take traffic again",
    )


def test_workers_register_with_every_broker_and_lose_nothing_when_one_dies(
    cluster: Cluster,
) -> None:
    """One launcher given both brokers: each process registers with each, its capacity split;
    with one broker killed under load, the same processes serve everything through the
    other, and rejoin the restarted one."""
    broker_a = cluster.broker()
    a_endpoints = (cluster.frontend_endpoint, cluster.backend_endpoint)
    cluster.broker()
    launcher = cluster.worker("EchoAPI", 2, "--broker", a_endpoints[1], "--capacity", "8")
    cluster.frontend("--broker", a_endpoints[0])
    pids = wait_until(lambda: worker_pids(launcher) if len(worker_pids(launcher)) == 2 else None)
    both = ("--broker", a_endpoints[0], "--broker", cluster.frontend_endpoint)

    def seen_by_each() -> list[dict[int, int]]:
        out = run_cli("status", *both, "--json", "--timeout", "1")
        entries = json.loads(out.stdout) if out.stdout else []
        return [{w["pid"]: w["capacity"] for w in e.get("workers", [])} for e in entries]

    wait_until(lambda: seen_by_each() == [dict.fromkeys(pids, 4)] * 2, what="both registrations")
    wait_until(lambda: workers_seen(cluster) == 4, what="four registrations in the routes")
    # /metrics sums what every broker sees, and counts each worker process once.
    for i in range(10):
        assert cluster.post({"value": i}).status_code == 200
    metrics = requests.get(cluster.url("/metrics"), timeout=10).text
    assert "zeroserve_broker_up 2.0" in metrics
    assert re.search(r'^zeroserve_workers\{host="[^"]+",service="EchoAPI"\} 2\.0$', metrics, re.M)
    answered = re.findall(r"^zeroserve_worker_requests_total\{[^}]*\} ([\d.]+)$", metrics, re.M)
    assert sum(float(n) for n in answered) == 10
    ports = tuple(int(e.rsplit(":", 1)[1]) for e in a_endpoints)
    results = cluster.load(240, 60, lambda: cluster.stop(broker_a, signal.SIGKILL))
    assert [(i, status, echo) for i, status, echo, _ in results] == [
        (i, 200, i) for i in range(240)
    ]
    assert worker_pids(launcher) == pids, "the workers lived on"
    cluster.broker(ports=ports)  # type: ignore[arg-type]
    wait_until(lambda: workers_seen(cluster) == 4, what="the workers back with broker A")
