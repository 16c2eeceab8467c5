"""Workers that leave, join late, crash, drain or are killed under load, and clients that
leave, through real broker, worker and frontend processes: a cluster of its own each."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from cluster import Cluster, api, run_cli, wait_until, worker_pids


def test_no_worker_for_a_service_is_503(cluster: Cluster) -> None:
    cluster.broker()
    cluster.frontend()
    other = cluster.worker("OtherRouteAPI")
    cluster.worker("EchoAPI")
    cluster.wait_workers(2)
    wait_until(lambda: cluster.post({"value": 1}, "/other").status_code == 200, what="/other")
    cluster.stop(other)
    wait_until(lambda: not cluster.ready_workers("OtherRouteAPI"), what="the worker to leave")
    gone = cluster.post({"value": 1}, "/other")
    assert gone.status_code == 503
    assert "no worker" in gone.json()["detail"]
    assert cluster.post({"value": 1}).status_code == 200


def test_full_queue_is_503_with_retry_after(cluster: Cluster) -> None:
    cluster.up("EchoAPI", worker_args=("--capacity", "1"), broker_args=("--max-queue", "2"))
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: cluster.post({"op": "sleep", "seconds": 0.5}), range(8)))
    statuses = sorted(r.status_code for r in codes)
    assert statuses.count(200) >= 3, statuses
    full = [r for r in codes if r.status_code == 503]
    assert full, statuses
    assert all(r.headers.get("Retry-After") == "1" for r in full)
    assert all("full" in r.json()["detail"] for r in full)


def test_worker_that_joins_late_turns_health_green(cluster: Cluster) -> None:
    cluster.broker()
    cluster.frontend()
    assert cluster.health() == 503
    assert cluster.post({"value": 1}).status_code == 503
    cluster.worker("EchoAPI")
    wait_until(lambda: cluster.health() == 200, what="/health 200")
    assert cluster.post({"value": 1}).status_code == 200


def test_kill_9_of_a_worker_under_load_loses_no_request(cluster: Cluster) -> None:
    cluster.broker()
    launcher = cluster.worker("EchoAPI", 2)
    cluster.frontend()
    cluster.wait_healthy(2)
    victim = min(worker_pids(launcher))
    total = 120
    results = cluster.load(total, total // 3, lambda: os.kill(victim, signal.SIGKILL))
    assert [(i, 200, i) for i in range(total)] == [(i, code, echo) for i, code, echo, _ in results]
    snapshot = cluster.status()
    assert snapshot is not None
    assert snapshot["broker"]["requests_held"] == 0
    assert snapshot["counters"].get("resent", 0) >= 1


def test_large_bodies_both_ways_survive_a_worker_kill(cluster: Cluster) -> None:
    """Bodies the broker holds as frames (uncopied) are forwarded, and re-sent, whole."""
    cluster.broker()
    launcher = cluster.worker("EchoAPI", 2)
    cluster.frontend()
    cluster.wait_healthy(2)
    victim = min(worker_pids(launcher))

    def one(i: int) -> tuple[int, bool]:
        big = f"{i:06d}" * 50_000  # 300 KB each way
        answer = cluster.post({"value": big, "op": "sleep", "seconds": 0.05}, timeout=30)
        return answer.status_code, answer.ok and answer.json()["echo"] == big

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(40)]
        wait_until(lambda: sum(f.done() for f in futures) >= 8, what="the first answers")
        os.kill(victim, signal.SIGKILL)
        results = [f.result() for f in futures]
    assert results == [(200, True)] * 40
    assert (cluster.status() or {})["counters"].get("resent", 0) >= 1


@pytest.mark.parametrize("capacity", ["1", "4"], ids=["queued-in-broker", "queued-in-worker"])
def test_client_disconnect_cancels_work_not_started(
    cluster: Cluster, tmp_path, capacity: str
) -> None:
    cluster.up("EchoAPI", worker_args=("--capacity", capacity))
    mark = tmp_path / "ran"
    with ThreadPoolExecutor(2) as pool:
        busy = pool.submit(cluster.post, {"op": "sleep", "seconds": 1.0})
        wait_until(lambda: (cluster.status() or {}).get("broker", {}).get("requests_held") == 1)
        with pytest.raises(requests.Timeout):
            cluster.post({"value": 1, "mark": str(mark)}, timeout=0.3)
        assert busy.result().status_code == 200
    assert cluster.post({"value": 2}).status_code == 200
    assert not mark.exists(), "the cancelled request reached predict"
    counters = (cluster.status() or {})["counters"]
    assert counters.get("cancelled", 0) >= 1


def test_worker_drains_on_sigterm(cluster: Cluster) -> None:
    cluster.broker()
    launcher = cluster.worker("EchoAPI", 1)
    cluster.frontend()
    cluster.wait_healthy(1)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(cluster.post, {"op": "sleep", "seconds": 1.0, "value": "kept"})
        wait_until(lambda: (cluster.status() or {}).get("broker", {}).get("requests_held") == 1)
        launcher.send_signal(signal.SIGTERM)
        assert slow.result().json()["echo"] == "kept"
    assert launcher.wait(15) == 0
    wait_until(lambda: cluster.health() == 503, what="/health 503 once the worker left")


def test_worker_refuses_a_bad_api_at_start() -> None:
    out = run_cli("worker", "--broker", "tcp://127.0.0.1:9", "--api", api("NoSuchAPI"))
    assert out.returncode == 2
    assert "has no attribute 'NoSuchAPI'" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_crashed_worker_process_is_restarted_and_logged(cluster: Cluster) -> None:
    cluster.broker()
    launcher = cluster.worker("EchoAPI", 1)
    cluster.frontend()
    cluster.wait_healthy(1)
    [victim] = worker_pids(launcher)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: worker_pids(launcher) - {victim}, what="the launcher to start a new process")
    cluster.wait_healthy(1)
    assert cluster.post({"value": 1}).json()["pid"] != victim
    log = cluster.logs()
    assert f"process {victim} was killed by signal 9; restarting in" in log
