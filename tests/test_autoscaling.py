"""A worker launcher that grows while its service's work waits and shrinks when it idles,
every request answered right on the way."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from cluster import Cluster, run_cli, wait_until, worker_pids


def test_a_launcher_grows_under_load_and_shrinks_when_idle(cluster: Cluster) -> None:
    cluster.broker()
    launcher = cluster.worker(
        "EchoAPI", None,
        "--min-processes", "1", "--max-processes", "3", "--scale-down-after", "1",
        "--capacity", "1",
    )  # fmt: skip
    cluster.frontend()
    cluster.wait_healthy(1)
    assert len(worker_pids(launcher)) == 1
    stop = threading.Event()
    answers: list[tuple[int, int, object]] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        i = 0
        while not stop.is_set():
            value = k * 100_000 + i
            r = cluster.post({"op": "sleep", "seconds": 0.1, "value": value})
            with lock:
                answers.append((value, r.status_code, r.json().get("echo")))
            i += 1

    with ThreadPoolExecutor(6) as pool:
        clients = [pool.submit(client, k) for k in range(6)]
        try:
            # Six clients on one slot: work waits at the broker, and the launcher grows.
            wait_until(lambda: len(worker_pids(launcher)) == 3, timeout_s=40, what="3 processes")
            wait_until(lambda: len(cluster.ready_workers()) == 3, what="3 ready workers")
            launchers = (cluster.status() or {})["launchers"]
            assert [
                (r["processes"], r["min_processes"], r["max_processes"]) for r in launchers
            ] == [(3, 1, 3)]
            assert "3/3 (1-3)" in run_cli("status", "--broker", cluster.frontend_endpoint).stdout
        finally:
            stop.set()
            for f in clients:
                f.result()
    # Idle: one process leaves after each second of quiet, down to the minimum.
    wait_until(lambda: len(worker_pids(launcher)) == 1, timeout_s=30, what="back to 1 process")
    assert len(cluster.ready_workers()) == 1
    assert answers and all(code == 200 and echo == value for value, code, echo in answers), [
        a for a in answers if a[1] != 200
    ][:5]
    assert "removing process" in cluster.logs() and "added process" in cluster.logs()
