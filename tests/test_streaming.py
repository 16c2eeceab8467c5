"""Streams through real processes: pieces arrive as they are made, and end cleanly or visibly."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from cluster import Cluster, run_cli, wait_until


def lines_of(response: requests.Response) -> list[dict]:
    return [json.loads(line) for line in response.iter_lines() if line]


@pytest.fixture(scope="module")
def served(module_cluster: Cluster) -> Cluster:
    """StreamAPI (/predict, --expose-errors) and BatchStreamAPI (/batch), served to this
    module's tests that only send requests: one cluster in place of one each."""
    module_cluster.broker()
    module_cluster.worker("StreamAPI", 1, "--expose-errors")
    module_cluster.worker("BatchStreamAPI", 1, "--route", "/batch")
    module_cluster.frontend()
    module_cluster.wait_healthy(2)
    return module_cluster


def test_first_piece_arrives_before_the_generator_finishes(served: Cluster, tmp_path: Path) -> None:
    cluster = served
    gate = tmp_path / "gate"
    with cluster.post({"n": 3, "gate": str(gate)}, stream=True) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/x-ndjson"
        pieces = response.iter_lines()
        first = json.loads(next(pieces))
        # The generator is still waiting for the gate: the piece came on its own.
        assert first["i"] == 0
        gate.touch()
        rest = [json.loads(line) for line in pieces if line]
    assert [p["i"] for p in rest] == [1, 2]


def test_a_client_that_leaves_stops_the_generator(served: Cluster, tmp_path: Path) -> None:
    cluster = served
    progress = tmp_path / "progress"
    with cluster.post({"n": 1000, "sleep": 0.05, "progress": str(progress)}, stream=True) as r:
        pieces = r.iter_lines()
        next(pieces)
        next(pieces)
    wait_until(progress.exists, timeout_s=10, what="the generator to be closed")
    stopped_after = int(progress.read_text().split()[-1])
    assert stopped_after < 100, progress.read_text()
    # The slot came back: the worker serves the next stream at once.
    with cluster.post({"n": 2}, stream=True) as r:
        assert [p["i"] for p in lines_of(r)] == [0, 1]
    assert (cluster.status() or {})["broker"]["requests_held"] == 0


def test_a_worker_killed_mid_stream_ends_it_with_an_error(cluster: Cluster, tmp_path: Path) -> None:
    cluster.up("StreamAPI")
    with cluster.post({"n": 3, "gate": str(tmp_path / "never")}, stream=True) as r:
        pieces = r.iter_lines()
        first = json.loads(next(pieces))
        os.kill(first["pid"], signal.SIGKILL)
        rest = [json.loads(line) for line in pieces if line]
    assert len(rest) == 1
    assert rest[0]["status"] == 502
    assert "lost" in rest[0]["error"]


def test_streams_are_batched_and_a_short_one_leaves_early(served: Cluster) -> None:
    cluster = served
    lengths = [2, 6, 6, 6]

    def stream(n: int) -> tuple[list[dict], float]:
        with cluster.post({"n": n}, "/batch", stream=True) as r:
            pieces = lines_of(r)
        return pieces, time.monotonic()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(stream, lengths))
    for (pieces, _), n in zip(results, lengths, strict=True):
        assert [p["step"] for p in pieces] == list(range(n))
    assert max(p["batch"] for pieces, _ in results for p in pieces) > 1
    short_done = results[0][1]
    assert all(short_done < done for _, done in results[1:])


def test_pieces_leave_at_once_on_a_kept_alive_connection(served: Cluster, tmp_path: Path) -> None:
    """Small pieces close together must not wait for the client's acknowledgements (Nagle)."""
    cluster = served
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({"n": 16, "sleep": 0.002}))
    out = run_cli(
        "bench", cluster.url(), "--duration", "2", "--concurrency", "1", "--json", "--stream",
        "--payload", str(payload),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["ok"] >= 5 and not summary["errors"]
    # Sixteen pieces 2 ms apart: the first is out some 30 ms before the last (held back,
    # it came with the last).
    assert summary["first_chunk_p50_ms"] < summary["p50_ms"] - 15, summary


def test_a_predict_that_raises_mid_stream_is_named_in_the_error(served: Cluster) -> None:
    cluster = served
    with cluster.post({"n": 5, "fail_at": 2}, stream=True) as r:
        pieces = lines_of(r)
    assert [p.get("i") for p in pieces[:2]] == [0, 1]
    assert pieces[-1]["status"] == 500
    assert pieces[-1]["error"].startswith("predict failed: RuntimeError: the model broke")
