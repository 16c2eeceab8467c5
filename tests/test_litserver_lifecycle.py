"""LitServer's own ways to end: the shutdown endpoint, and a dying worker without
``restart_workers``; either way no process of the cluster is left behind."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from cluster import start_server_py, wait_until

SERVER = """
import os, sys
import zeroserve as ls

class API(ls.LitAPI):
    def setup(self, device):
        self.model = lambda x: x * 2

    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        if x < 0:
            os._exit(1)  # the worker process dies
        return self.model(x)

    def encode_response(self, output):
        return {"output": output}

if __name__ == "__main__":
    ls.LitServer(API(), accelerator="cpu", {arguments}).run(
        host="127.0.0.1", port=int(sys.argv[1]), generate_client_file=False
    )
"""


@contextlib.contextmanager
def _server(tmp_path: Path, arguments: str, **env: str) -> Iterator[tuple[Any, str, list]]:
    """server.py run as a user runs it; yields it, its URL, and every process it started."""
    (tmp_path / "server.py").write_text(SERVER.replace("{arguments}", arguments))
    proc, base = start_server_py(tmp_path, **env)

    def healthy() -> bool:
        with contextlib.suppress(requests.ConnectionError):
            return requests.get(f"{base}/health", timeout=1).status_code == 200
        return False

    family: list[psutil.Process] = []
    try:
        wait_until(healthy, timeout_s=60, what="the server's /health")
        family = psutil.Process(proc.pid).children(recursive=True)
        yield proc, base, family
    finally:
        for member in [*family, psutil.Process(proc.pid)] if proc.poll() is None else family:
            with contextlib.suppress(psutil.Error):
                member.kill()
        proc.wait(10)


def _all_gone(family: list[psutil.Process]) -> bool:
    return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family)


def test_the_shutdown_endpoint_stops_the_whole_cluster(tmp_path: Path) -> None:
    env = {"LIT_SHUTDOWN_API_KEY": "stop-key"}
    with _server(tmp_path, "enable_shutdown_api=True, workers_per_device=2", **env) as (
        proc,
        base,
        family,
    ):
        assert requests.post(f"{base}/shutdown", timeout=5).status_code == 401
        wrong = requests.post(f"{base}/shutdown", headers={"Authorization": "Bearer x"}, timeout=5)
        assert wrong.status_code == 401
        assert wrong.json()["detail"].startswith("Invalid Bearer token for Shutdown API.")
        right = requests.post(
            f"{base}/shutdown", headers={"Authorization": "Bearer stop-key"}, timeout=5
        )
        assert (right.status_code, right.text) == (200, "Server is initiating graceful shutdown.")
        assert proc.wait(30) == 0
        wait_until(lambda: _all_gone(family), timeout_s=10, what="every process to end")


@pytest.mark.parametrize("restart", [False, True])
def test_a_dying_worker_stops_the_server_unless_restart_workers(
    tmp_path: Path, restart: bool
) -> None:
    with _server(tmp_path, f"restart_workers={restart}") as (proc, base, family):
        with contextlib.suppress(requests.RequestException):
            requests.post(f"{base}/predict", json={"input": -1}, timeout=30)
        if restart:

            def answered() -> bool:
                reply = requests.post(f"{base}/predict", json={"input": 2}, timeout=30)
                return reply.status_code == 200 and reply.json() == {"output": 4}

            wait_until(answered, timeout_s=30, what="a restarted worker's answer")
            assert proc.poll() is None
        else:
            assert proc.wait(30) != 0
            wait_until(lambda: _all_gone(family), timeout_s=10, what="every process to end")
