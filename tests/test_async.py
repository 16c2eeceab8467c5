"""async def APIs through real processes: requests overlap, leave, expire and block visibly."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from cluster import Cluster, wait_until, worker_pids


def timed_posts(cluster: Cluster, payloads: list[dict]) -> tuple[list[requests.Response], float]:
    began = time.monotonic()
    with ThreadPoolExecutor(len(payloads)) as pool:
        answers = list(pool.map(cluster.post, payloads))
    return answers, time.monotonic() - began


def test_awaits_of_one_process_overlap(cluster: Cluster) -> None:
    cluster.up("AsyncSleepAPI")
    answers, took_s = timed_posts(cluster, [{"value": i, "seconds": 0.3} for i in range(32)])
    assert [a.status_code for a in answers] == [200] * 32
    assert [a.json()["echo"] for a in answers] == list(range(32))
    assert len({a.json()["pid"] for a in answers}) == 1
    # The process says how many of its predicts awaited at once; one after the other, they
    # would take 9.6 s (half of it: a bound with room for a loaded machine).
    assert max(a.json()["most_awaiting"] for a in answers) >= 4
    assert took_s < 4.8, took_s


def test_async_streams_overlap(cluster: Cluster) -> None:
    cluster.up("AsyncStreamAPI")

    def stream(i: int) -> list[dict]:
        with cluster.post({"n": 4, "seconds": 0.2, "value": i}, stream=True) as r:
            assert r.status_code == 200
            return [json.loads(line) for line in r.iter_lines() if line]

    began = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        streams = list(pool.map(stream, range(8)))
    took_s = time.monotonic() - began
    assert streams == [[{"i": k, "value": i} for k in range(4)] for i in range(8)]
    assert took_s < 3.2, took_s  # one after the other: 6.4 s (half: room for a loaded machine)


def test_async_batches_form_while_others_run(cluster: Cluster) -> None:
    cluster.up("AsyncBatchAPI")
    answers, _ = timed_posts(cluster, [{"value": i} for i in range(16)])
    assert [a.json()["value"] for a in answers] == list(range(16))
    assert max(a.json()["batch"] for a in answers) > 1
    # At least four batches, and the process says that some of them awaited at once.
    assert max(a.json()["most"] for a in answers) > 1


def test_a_client_that_leaves_cancels_its_awaiting_predict(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.up("AsyncSleepAPI")
    progress = tmp_path / "progress"
    with pytest.raises(requests.Timeout):
        cluster.post({"seconds": 60, "progress": str(progress)}, timeout=0.5)
    wait_until(progress.exists, timeout_s=10, what="predict to see CancelledError")
    assert progress.read_text() == "cancelled"
    wait_until(
        lambda: (cluster.status() or {}).get("broker", {}).get("requests_held") == 0,
        what="the slot to be free",
    )
    assert cluster.post({"value": 7}).json()["echo"] == 7


def test_a_passed_deadline_cancels_the_task(cluster: Cluster, tmp_path: Path) -> None:
    cluster.up("AsyncSleepAPI", frontend_args=("--request-timeout", "1"))
    progress = tmp_path / "progress"
    late = cluster.post({"seconds": 60, "progress": str(progress)})
    assert late.status_code == 504
    wait_until(progress.exists, timeout_s=10, what="predict to see CancelledError")
    assert progress.read_text() == "cancelled"
    assert cluster.post({"value": 1}).status_code == 200


def test_a_blocking_coroutine_is_named_and_does_not_silence_the_worker(
    cluster: Cluster,
) -> None:
    cluster.up("AsyncSleepAPI")
    [before] = cluster.ready_workers()
    # 2 s is over three heartbeat windows (0.2 s x 3).
    blocked = cluster.post({"block": 2.0, "value": "b"})
    assert blocked.status_code == 200
    [after] = cluster.ready_workers()
    assert after["id"] == before["id"]
    assert (cluster.status() or {})["counters"].get("dead_workers", 0) == 0
    wait_until(
        lambda: (
            "AsyncSleepAPI.predict (apis.py:" in cluster.logs()
            and "has blocked the event loop for" in cluster.logs()
        ),
        what="the log to name the blocking stage",
    )
    assert cluster.post({"value": 2}).json()["echo"] == 2


def test_an_async_predict_that_raises_costs_one_request(cluster: Cluster) -> None:
    cluster.up("AsyncSleepAPI", worker_args=("--expose-errors",))
    answers, _ = timed_posts(
        cluster, [{"op": "fail"}, {"value": 1, "seconds": 0.1}, {"value": 2}, "not an object"]
    )
    assert [a.status_code for a in answers] == [500, 200, 200, 422]
    assert "ValueError: boom" in answers[0].json()["detail"]


def test_a_coroutine_blocked_past_every_deadline_gets_its_process_recycled(
    cluster: Cluster,
) -> None:
    cluster.broker()
    launcher = cluster.worker("AsyncSleepAPI", 1, "--hang-grace", "1")
    cluster.frontend("--request-timeout", "1")
    cluster.wait_healthy(1)
    before = worker_pids(launcher)
    assert cluster.post({"block": 120}).status_code == 504
    fresh = wait_until(lambda: worker_pids(launcher) - before, what="a fresh process")
    assert "recycling this process" in cluster.logs()
    # The broker may list the recycled process a moment longer: wait for the fresh one.
    wait_until(
        lambda: any(w["pid"] in fresh for w in cluster.ready_workers()),
        what="the fresh process to serve",
    )
    assert cluster.post({"value": "after"}).json()["echo"] == "after"
