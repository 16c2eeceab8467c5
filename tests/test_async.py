"""async def APIs through real processes: requests overlap, leave, expire and block visibly."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from cluster import Cluster, wait_until, worker_pids


@dataclass
class Served:
    """The module's cluster: AsyncSleepAPI (/predict, --expose-errors), AsyncStreamAPI
    (/stream) and AsyncBatchAPI (/batch), behind a frontend (`cluster.url`) and one with
    --request-timeout 1 (`short_url`)."""

    cluster: Cluster
    short_port: int

    def short_url(self, path: str = "/predict") -> str:
        return f"http://127.0.0.1:{self.short_port}{path}"


@pytest.fixture(scope="module")
def served(module_cluster: Cluster) -> Served:
    """Served to this module's tests that only send requests (none stops, restarts or
    reconfigures a process): one cluster in place of one each."""
    c = module_cluster
    c.broker()
    c.worker("AsyncSleepAPI", 1, "--expose-errors")
    c.worker("AsyncStreamAPI", 1, "--route", "/stream")
    c.worker("AsyncBatchAPI", 1, "--route", "/batch")
    c.frontend("--request-timeout", "1")
    short_port = c.http_port
    c.frontend()
    c.wait_healthy(3)
    return Served(c, short_port)


def posts(cluster: Cluster, payloads: list[Any], path: str = "/predict") -> list[requests.Response]:
    """All at once, one thread each."""
    with ThreadPoolExecutor(len(payloads)) as pool:
        return list(pool.map(lambda payload: cluster.post(payload, path), payloads))


def test_awaits_of_one_process_overlap(served: Served) -> None:
    answers = posts(served.cluster, [{"value": i, "seconds": 0.3} for i in range(32)])
    assert [a.status_code for a in answers] == [200] * 32
    assert [a.json()["echo"] for a in answers] == list(range(32))
    assert len({a.json()["pid"] for a in answers}) == 1
    # The process says how many of its predicts awaited when each began: one after the
    # other, always one.
    assert max(a.json()["awaiting"] for a in answers) >= 4


def test_async_streams_overlap(served: Served) -> None:
    def stream(i: int) -> list[dict]:
        with served.cluster.post({"n": 4, "seconds": 0.2, "value": i}, "/stream", stream=True) as r:
            assert r.status_code == 200
            return [json.loads(line) for line in r.iter_lines() if line]

    with ThreadPoolExecutor(8) as pool:
        streams = list(pool.map(stream, range(8)))
    assert [[(p["i"], p["value"]) for p in s] for s in streams] == [
        [(k, i) for k in range(4)] for i in range(8)
    ]
    # Each piece says how many generators of the process were running when it was made:
    # one after the other, always one.
    assert max(p["running"] for s in streams for p in s) >= 4


def test_async_batches_form_while_others_run(served: Served) -> None:
    answers = posts(served.cluster, [{"value": i} for i in range(16)], "/batch")
    assert [a.json()["value"] for a in answers] == list(range(16))
    assert max(a.json()["batch"] for a in answers) > 1
    # At least four batches, and the process says that some of them awaited at once.
    assert max(a.json()["most"] for a in answers) > 1


def test_a_client_that_leaves_cancels_its_awaiting_predict(served: Served, tmp_path: Path) -> None:
    cluster = served.cluster
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


def test_a_passed_deadline_cancels_the_task(served: Served, tmp_path: Path) -> None:
    """Through the frontend with --request-timeout 1."""
    progress = tmp_path / "progress"
    late = requests.post(
        served.short_url(), json={"seconds": 60, "progress": str(progress)}, timeout=30
    )
    assert late.status_code == 504
    wait_until(progress.exists, timeout_s=10, what="predict to see CancelledError")
    assert progress.read_text() == "cancelled"
    assert requests.post(served.short_url(), json={"value": 1}, timeout=30).status_code == 200


def test_a_blocking_coroutine_is_named_and_does_not_silence_the_worker(served: Served) -> None:
    cluster = served.cluster
    [before] = cluster.ready_workers("AsyncSleepAPI")
    # 2 s is over three heartbeat windows (0.2 s x 3).
    blocked = cluster.post({"block": 2.0, "value": "b"})
    assert blocked.status_code == 200
    [after] = cluster.ready_workers("AsyncSleepAPI")
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


def test_an_async_predict_that_raises_costs_one_request(served: Served) -> None:
    answers = posts(
        served.cluster,
        [{"op": "fail"}, {"value": 1, "seconds": 0.1}, {"value": 2}, "not an object"],
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
