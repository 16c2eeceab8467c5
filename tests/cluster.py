"""Starting real ``cluster`` processes for tests, waiting on their readiness, and cleaning up.

Every process gets its own process group, so that teardown ends a worker
launcher together with its children, also when the test failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import requests
from ports import free_port

from zeroserve.common.protocol import ReadyMeta
from zeroserve.common.security import CurveKeys, peer_token_keys
from zeroserve.common.status_client import BrokerUnreachable, fetch_status

ROOT = Path(__file__).resolve().parent.parent
APIS = Path(__file__).resolve().parent / "apis.py"
HEARTBEAT = ["--heartbeat-interval", "0.2", "--heartbeat-liveness", "3"]


def run_cli(*args: str, timeout_s: float = 30) -> subprocess.CompletedProcess:
    """Run one `cluster` command to its end and capture what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "zeroserve", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
        check=False,
    )


def wait_until(predicate: Callable[[], Any], timeout_s: float = 20.0, what: str = "") -> Any:
    """Poll a readiness condition until it holds; fail with `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(0.05)  # poll


def api(name: str) -> str:
    """A class of tests/apis.py by name, or any MODULE:ATTR given whole."""
    return name if ":" in name else f"{APIS}:{name}"


class Cluster:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        self.frontend_endpoint = ""
        self.backend_endpoint = ""
        self.http_port = 0
        #: CurveZMQ keys the test's own status requests use, when the broker wants them.
        self.keys: CurveKeys | None = None

    # -- processes -------------------------------------------------------------

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log_path = self.tmp_path / f"{name}-{len(self.procs)}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "zeroserve", *args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
            )
        self.procs.append((name, proc, log_path))
        return proc

    def broker(
        self, *extra: str, ports: tuple[int, int] | None = None, token_file: Path | None = None
    ) -> subprocess.Popen:
        """A broker on loopback; with `token_file`, secured by the token it makes or reads
        there, which this harness's own status requests then give."""
        if token_file is not None:
            extra = ("--token-file", str(token_file), *extra)
        front, back = ports or (free_port(), free_port())
        self.frontend_endpoint = f"tcp://127.0.0.1:{front}"
        self.backend_endpoint = f"tcp://127.0.0.1:{back}"
        proc = self.start(
            "broker",
            "broker",
            "--frontend-bind",
            self.frontend_endpoint,
            "--backend-bind",
            self.backend_endpoint,
            *HEARTBEAT,
            *extra,
        )
        if token_file is not None:
            wait_until(token_file.exists, what="the token file")
            self.keys = peer_token_keys(token_file.read_text().strip())
        wait_until(self.status, what="the broker to answer STATUS")
        return proc

    def worker(
        self, api_name: str = "EchoAPI", processes: int | None = 1, *extra: str
    ) -> subprocess.Popen:
        """A worker launcher; `processes` None leaves the count to `extra` (autoscaling)."""
        count = ("--processes", str(processes)) if processes is not None else ()
        return self.start(
            "worker",
            "worker",
            "--broker",
            self.backend_endpoint,
            "--api",
            api(api_name),
            *count,
            *HEARTBEAT,
            *extra,
        )

    def frontend(self, *extra: str) -> subprocess.Popen:
        self.http_port = free_port()
        proc = self.start(
            "frontend",
            "frontend",
            "--broker",
            self.frontend_endpoint,
            "--port",
            str(self.http_port),
            *HEARTBEAT,
            *extra,
        )
        if "--certfile" in extra:  # HTTPS: its log line tells, as a plain request cannot
            listening = f"frontend listening on https://127.0.0.1:{self.http_port}"
            wait_until(lambda: listening in self.logs(), what="the frontend to listen")
        else:
            wait_until(self._http_up, what="the frontend to listen")
        return proc

    def up(
        self,
        api_name: str = "EchoAPI",
        processes: int = 1,
        worker_args: tuple[str, ...] = (),
        frontend_args: tuple[str, ...] = (),
        broker_args: tuple[str, ...] = (),
    ) -> None:
        """Broker, one worker launcher and a frontend, ready to serve."""
        self.broker(*broker_args)
        self.worker(api_name, processes, *worker_args)
        self.frontend(*frontend_args)
        self.wait_healthy(processes)

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 15) -> int:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        return proc.wait(timeout_s)

    def stop_all(self) -> None:
        for _, proc, _ in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc, _ in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)

    def logs(self) -> str:
        parts = []
        for name, _, path in self.procs:
            text = path.read_text(errors="replace")[-6000:]
            parts.append(f"----- {name} ({path.name}) -----\n{text}")
        return "\n".join(parts)

    # -- looking at it ---------------------------------------------------------

    def url(self, path: str = "/predict") -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def post(self, payload: Any, path: str = "/predict", **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return requests.post(self.url(path), json=payload, **kwargs)

    def load(
        self, total: int, fault_at: int, fault: Callable[[], object], seconds: float = 0.03
    ) -> list[tuple[int, int, Any, float]]:
        """`total` requests from 8 clients, each (index, status, echo, seconds); `fault()` runs
        when request `fault_at` starts."""

        def call(i: int) -> tuple[int, int, Any, float]:
            if i == fault_at:
                fault()
            began = time.monotonic()
            r = self.post({"op": "sleep", "seconds": seconds, "value": i})
            return i, r.status_code, r.json().get("echo"), time.monotonic() - began

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(call, range(total)))

    def status(self) -> dict[str, Any] | None:
        try:
            return fetch_status(self.frontend_endpoint, timeout_s=0.5, keys=self.keys)
        except BrokerUnreachable:
            return None

    def _http_up(self) -> bool:
        try:
            requests.get(self.url("/health"), timeout=1)
        except (requests.ConnectionError, requests.Timeout):  # not listening, or still starting
            return False
        return True

    def health(self) -> int:
        """The health check's status (with LitServe's key, when one is in the environment)."""
        key = os.environ.get("LIT_SERVER_API_KEY")
        headers = {"X-API-Key": key} if key else {}
        try:
            return requests.get(self.url("/health"), headers=headers, timeout=2).status_code
        except (requests.ConnectionError, requests.Timeout):
            return 0

    def ready_workers(self, service: str | None = None) -> list[dict[str, Any]]:
        snapshot = self.status() or {}
        return [
            w
            for w in snapshot.get("workers", [])
            if w["state"] != "draining" and (service is None or w["service"] == service)
        ]

    def wait_workers(self, count: int, service: str | None = None, timeout_s: float = 30) -> None:
        wait_until(
            lambda: len(self.ready_workers(service)) >= count,
            timeout_s,
            f"{count} ready worker(s) of {service or 'any service'}",
        )

    def wait_healthy(self, workers: int = 1) -> None:
        self.wait_workers(workers)
        wait_until(lambda: self.health() == 200, what="/health to answer 200")


def start_server_py(folder: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """`python server.py PORT` in `folder`, as a user runs it, its output in server.log there,
    in a session of its own; returns it and its URL."""
    port = free_port()
    with open(folder / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "server.py", str(port)],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env},
        )
    return proc, f"http://127.0.0.1:{port}"


def fake_ready(service: str, path: str, host: str, interval_s: float = 1.0) -> ReadyMeta:
    """READY's metadata for a worker a test plays on raw sockets (heartbeats `interval_s`
    apart, it says)."""
    return {
        "service": service,
        "routes": [{"path": path, "methods": ["POST"]}],
        "capacity": 2,
        "pid": 1,
        "host": host,
        "version": "0",
        "heartbeat_interval_s": interval_s,
    }


def worker_pids(launcher: subprocess.Popen) -> set[int]:
    """The launcher's worker processes (not multiprocessing's resource tracker)."""
    pids = set()
    try:
        children = psutil.Process(launcher.pid).children()
    except psutil.NoSuchProcess:
        return pids
    for child in children:
        with contextlib.suppress(psutil.Error):
            if any("spawn_main" in part for part in child.cmdline()):
                pids.add(child.pid)
    return pids
