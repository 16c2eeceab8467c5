"""`cluster status` of a broker with hundreds of workers: the snapshot outgrows a metadata
frame's bound, and still arrives whole."""

from __future__ import annotations

import json
import multiprocessing
import sys
from pathlib import Path

from cluster import ROOT, Cluster, run_cli, wait_until

# Last, so that it finds broker_scale only: benchmarks/apis.py must not hide tests/apis.py
# from the tests that share this process (pytest-xdist).
sys.path.append(str(ROOT / "benchmarks"))
from broker_scale import play_workers  # the benchmark's simulated workers

WORKERS = 400


def test_status_shows_hundreds_of_workers(cluster: Cluster, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    cluster.broker(token_file=token_file)
    token = token_file.read_text().strip()
    workers = multiprocessing.get_context("spawn").Process(
        target=play_workers,
        args=([cluster.backend_endpoint], token, WORKERS, 1, 0.2),
        daemon=True,
    )
    workers.start()
    try:
        wait_until(
            lambda: len((cluster.status() or {}).get("workers", [])) >= WORKERS,
            60,
            f"{WORKERS} workers in the broker's status",
        )
        env_token = ("--token-file", str(token_file))
        shown = run_cli("status", "--broker", cluster.frontend_endpoint, *env_token, "--json")
        assert shown.returncode == 0, shown.stderr
        snapshot = json.loads(shown.stdout)
        assert len(snapshot["workers"]) >= WORKERS
        table = run_cli("status", "--broker", cluster.frontend_endpoint, *env_token)
        assert table.returncode == 0, table.stderr
        assert table.stdout.count("bench") >= WORKERS
    finally:
        workers.kill()
        workers.join(10)
