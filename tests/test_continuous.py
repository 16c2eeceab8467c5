"""Continuous batching through real processes: sequences join and leave a running batch."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from cluster import ROOT, Cluster, wait_until

LITSERVE_APIS = ROOT / "tests" / "apis_litserve.py"


def lines_of(response: requests.Response) -> list[dict]:
    return [json.loads(line) for line in response.iter_lines() if line]


@dataclass
class Served:
    """The module's cluster: CountingSteps (/predict, --expose-errors, writing the sequences it
    is told to cancel to `events`), another CountingSteps of its own (service "refill",
    /refill), SlowSteps (/slow) and LitServe's two classes (/lit, /lit-default)."""

    cluster: Cluster
    events: Path

    def cancelled(self) -> int:
        """Sequences CountingSteps was told to cancel so far."""
        return self.events.read_text().count("cancel ") if self.events.exists() else 0


@pytest.fixture(scope="module")
def served(module_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Served:
    """Served to this module's tests that only send requests (none stops, restarts or
    reconfigures a process): one cluster in place of one each."""
    c = module_cluster
    events = tmp_path_factory.mktemp("continuous") / "events"
    c.broker()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ZS_TEST_EVENTS", str(events))
        c.worker("CountingSteps", 1, "--expose-errors")
    c.worker("CountingSteps", 1, "--service", "refill", "--route", "/refill")
    c.worker("SlowSteps", 1, "--route", "/slow")
    c.worker(f"{LITSERVE_APIS}:LitSteps", 1, "--route", "/lit")
    c.worker(f"{LITSERVE_APIS}:LitDefaultSteps", 1, "--route", "/lit-default")
    c.frontend()
    c.wait_healthy(5)
    return Served(c, events)


def test_a_short_stream_joins_a_long_one_and_finishes_first(served: Served) -> None:
    cluster = served.cluster
    with cluster.post({"n": 200}, stream=True) as long_stream:
        pieces = long_stream.iter_lines()
        assert json.loads(next(pieces)) == {"i": 0, "batch": 1}
        # The long sequence is running: the short one joins its batch and ends first.
        with cluster.post({"n": 3}, stream=True) as short_stream:
            short = lines_of(short_stream)
        assert [p["i"] for p in short] == [0, 1, 2]
        assert all(p["batch"] == 2 for p in short)
        rest = [json.loads(line) for line in pieces if line]
    assert [p["i"] for p in rest] == list(range(1, 200))
    # It ran alone again once the short one had left.
    assert rest[-1]["batch"] == 1


def test_a_full_batch_is_refilled_as_sequences_finish(served: Served) -> None:
    """On a CountingSteps of its own: the counts of its heartbeat are this test's."""
    cluster = served.cluster
    with cluster.post({"n": 40}, "/refill", stream=True) as long_stream:
        pieces = long_stream.iter_lines()
        head = [json.loads(next(pieces))]
        # Eleven short ones share the three other places while the long one runs.
        with ThreadPoolExecutor(11) as pool:
            shorts = list(
                pool.map(
                    lambda _: lines_of(cluster.post({"n": 4}, "/refill", stream=True)), range(11)
                )
            )
        long = head + [json.loads(line) for line in pieces if line]
    assert [p["i"] for p in long] == list(range(40))
    assert all([p["i"] for p in s] == [0, 1, 2, 3] for s in shorts)
    assert max(p["batch"] for s in shorts for p in s) == 4  # has_capacity's bound
    [worker] = wait_until(
        lambda: [w for w in cluster.ready_workers("refill") if w["reported"].get("done") == 12],
        what="a heartbeat that counts all twelve",
    )
    steps = sum(worker["reported"]["batch_sizes"].values())
    # Batch after batch would take 40 + 4 + 4 steps; refilled, the long one sets the pace.
    assert steps < 46, worker["reported"]["batch_sizes"]


def test_a_step_that_raises_ends_the_batch_and_the_loop_goes_on(served: Served) -> None:
    cluster = served.cluster
    cancelled = served.cancelled()
    with cluster.post({"n": 500}, stream=True) as running:
        pieces = running.iter_lines()
        next(pieces)
        failing = cluster.post({"n": 5, "fail": True})
        rest = [json.loads(line) for line in pieces if line]
    assert failing.status_code == 500
    assert "step failed: RuntimeError: the step fell over" in failing.json()["detail"]
    # The stream that had begun ends with an error line.
    assert rest[-1]["status"] == 500 and "the step fell over" in rest[-1]["error"]
    # The API heard of both sequences, and the next request is served.
    assert served.cancelled() - cancelled == 2
    with cluster.post({"n": 2}, stream=True) as after:
        assert [p["i"] for p in lines_of(after)] == [0, 1]


def test_a_client_that_leaves_ends_its_sequence(served: Served) -> None:
    cluster = served.cluster
    cancelled = served.cancelled()
    with cluster.post({"n": 100000}, stream=True) as r:
        pieces = r.iter_lines()
        next(pieces)
        next(pieces)
    wait_until(lambda: served.cancelled() > cancelled, what="the API to be told the sequence ended")
    wait_until(
        lambda: (cluster.status() or {}).get("broker", {}).get("requests_held") == 0,
        what="the slot to be free",
    )
    with cluster.post({"n": 2}, stream=True) as after:
        assert [p["i"] for p in lines_of(after)] == [0, 1]


def test_heartbeats_go_on_during_long_steps(served: Served) -> None:
    cluster = served.cluster
    [before] = cluster.ready_workers("SlowSteps")
    with cluster.post({"n": 3}, "/slow", stream=True) as r:
        assert [p["i"] for p in lines_of(r)] == [0, 1, 2]
    [after] = cluster.ready_workers("SlowSteps")
    assert after["id"] == before["id"]
    assert (cluster.status() or {})["counters"].get("dead_workers", 0) == 0


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("/lit", [{"token": 0}, {"token": 1}, {"token": 2}]),
        ("/lit-default", [{"token": "t0/3"}, {"token": "t1/3"}, {"token": "t2/3"}]),
    ],
    ids=["LitSteps", "LitDefaultSteps"],
)
def test_litserve_continuous_batching_classes_run_unchanged(
    served: Served, route: str, expected: list[dict]
) -> None:
    with served.cluster.post({"n": 3}, route, stream=True) as r:
        assert r.status_code == 200
        assert lines_of(r) == expected


def test_zeroserve_names_need_no_litserve() -> None:
    """The contract is recognised without litserve: an import of it would fail here."""
    code = f"""
import sys
sys.modules["litserve"] = None
from zeroserve.worker.config import WorkerConfig
from zeroserve.worker.loader import load_api, resolve_settings
api = load_api({str(ROOT / "tests" / "apis.py:CountingSteps")!r})
print(resolve_settings(api, WorkerConfig(brokers=("x",), api="x")).kind)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "continuous"
