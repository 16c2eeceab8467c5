"""LitServe as the oracle: one script, run as written under LitServe and with its import
renamed under zeroserve, asked the same requests; the answers must agree.

A script is written for LitServe (``import litserve as ls``) and takes its port as its
first argument. Both servers run as a user runs them (``python server.py PORT``) from a
folder of their own, and are ready when they print uvicorn's startup line and their
health check says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests
from ports import free_port

from cluster import wait_until

APPS = Path(__file__).resolve().parent / "oracle_apps"
STARTUP_LINE = "Application startup complete."
#: Headers whose values must agree besides status, content type and body.
COMPARED_HEADERS = ("www-authenticate",)


def renamed(source: str) -> str:
    """The script with only its imports of litserve (and their uses) renamed."""
    return re.sub(r"\blitserve\b", "zeroserve", source)


@dataclass
class Server:
    base: str
    process: subprocess.Popen
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "".join(self.lines)


@contextlib.contextmanager
def serve_pair(
    script: Path, folder: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[Server, Server]]:
    """`script` under LitServe and under zeroserve (in `folder`'s ``litserve`` and
    ``zeroserve``), started side by side, until the block ends."""
    flavours = ("litserve", "zeroserve")
    started: list[tuple[Server, threading.Event]] = []
    try:
        for flavour in flavours:
            started.append(_start(script, flavour, folder / flavour, env))
        for (server, ready), flavour in zip(started, flavours, strict=True):
            _wait_ready(server, ready, flavour, env)
        yield started[0][0], started[1][0]
    finally:
        for server, _ in started:
            _stop(server.process)


def _start(
    script: Path, flavour: str, folder: Path, env: dict[str, str] | None
) -> tuple[Server, threading.Event]:
    """The server's process, and an event set once it printed uvicorn's startup line."""
    folder.mkdir(parents=True, exist_ok=True)
    source = script.read_text()
    (folder / "server.py").write_text(renamed(source) if flavour == "zeroserve" else source)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "server.py", str(port)],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    server = Server(f"http://127.0.0.1:{port}", process)
    started = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.lines.append(line)
            if STARTUP_LINE in line:
                started.set()

    threading.Thread(target=read, daemon=True).start()
    return server, started


def _wait_ready(
    server: Server, started: threading.Event, flavour: str, env: dict[str, str] | None
) -> None:
    """Its startup line, then its health check's 200."""
    process = server.process
    key = (env or {}).get("LIT_SERVER_API_KEY")
    headers = {"X-API-Key": key} if key else {}

    def healthy() -> bool:
        with contextlib.suppress(requests.ConnectionError):
            return requests.get(f"{server.base}/health", headers=headers, timeout=2).ok
        return False

    wait_until(
        lambda: started.is_set() or process.poll() is not None,
        timeout_s=120,
        what=f"{flavour}'s startup line",
    )
    assert process.poll() is None, f"{flavour} exited:\n{server.output()}"
    wait_until(healthy, timeout_s=60, what=f"{flavour}'s health check")


def _stop(process: subprocess.Popen) -> None:
    """The server and everything it started, whatever process groups they moved to."""
    family: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        family = psutil.Process(process.pid).children(recursive=True)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    for member in family:
        with contextlib.suppress(psutil.Error):
            member.kill()
    process.wait(10)


@dataclass(frozen=True)
class Answer:
    """What a client sees of an answer: status, content type, body, the compared headers."""

    status: int
    content_type: str | None
    body: Any
    headers: tuple[tuple[str, str], ...]


def answer_of(response: requests.Response) -> Answer:
    content_type = response.headers.get("content-type")
    body: Any = response.text
    if content_type and "json" in content_type:
        with contextlib.suppress(ValueError):
            body = json.loads(response.text)
    headers = tuple(
        (name, response.headers[name]) for name in COMPARED_HEADERS if name in response.headers
    )
    return Answer(response.status_code, content_type, body, headers)


def ask(base: str, method: str, path: str, **kwargs: Any) -> Answer:
    return answer_of(requests.request(method, base + path, timeout=30, **kwargs))
