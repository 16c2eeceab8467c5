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
        "--min-processes", "1", "--max-processes", "4", "--scale-down-after", "1",
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

    with ThreadPoolExecutor(16) as pool:
        clients = [pool.submit(client, k) for k in range(16)]
        try:
            # Sixteen clients of a sync API with its default capacity (two batches): a process
            # holds what it can start soon, the rest waits at the broker, where the scaler
            # sees it, and the launcher grows to its maximum.
            wait_until(lambda: len(worker_pids(launcher)) == 4, timeout_s=40, what="4 processes")
            wait_until(lambda: len(cluster.ready_workers()) == 4, what="4 ready workers")
            launchers = (cluster.status() or {})["launchers"]
            assert [
                (r["processes"], r["min_processes"], r["max_processes"]) for r in launchers
            ] == [(4, 1, 4)]
            assert "4/4 (1-4)" in run_cli("status", "--broker", cluster.frontend_endpoint).stdout
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
