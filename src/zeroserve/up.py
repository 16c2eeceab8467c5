"""``cluster up``: broker, worker launcher and frontend on this machine, in one command.

They are the same ``cluster broker``, ``cluster worker`` and ``cluster
frontend`` commands a multi-host set-up runs, started as child processes
(each its own process, so none takes the CPU time or the GIL of another).
The broker is bound to Unix sockets in a private folder (loopback TCP on
free ports where ZeroMQ has no ``ipc://``), so two ``cluster up`` never
collide and nothing internal is exposed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import zmq

from zeroserve.common.errors import ConfigError
from zeroserve.common.exits import MEANINGS
from zeroserve.common.link import LinkConfig
from zeroserve.common.security import TOKEN_ENV
from zeroserve.common.snapshot import Snapshot
from zeroserve.common.status_client import fetch_status
from zeroserve.common.supervisor import (
    ENVIRON_LOCK,
    EXIT_REPORT_ENV,
    PARENT_ENV,
    read_exit_report,
)

log = logging.getLogger(__name__)

#: Everything is stopped within this, killed if need be.
STOP_TIMEOUT_S = 8.0
CHILD_DRAIN_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class UpConfig:
    #: ``MODULE:ATTR`` of each API; one worker launcher each.
    apis: tuple[str, ...]
    host: str
    port: int
    workers: int | None
    worker_flags: tuple[str, ...] = ()
    frontend_flags: tuple[str, ...] = ()
    #: Heartbeats and logging, handed on to every child.
    link: LinkConfig = field(default_factory=LinkConfig)
    ready_timeout_s: float = 120.0
    api_key: str | None = field(default=None, repr=False)
    #: LitServe's shutdown key: the frontend's shutdown endpoint stops this process with it.
    shutdown_key: str | None = field(default=None, repr=False)
    #: The frontend's health check, which tells when the cluster serves.
    health_path: str = "/health"
    #: Every API's routes: the health check (and so the startup line) waits for them all.
    routes: tuple[str, ...] = ()


#: Popen arguments for a child in a process group of its own, so that a stop that overruns
#: kills grandchildren too. It stays in this session: where Linux groups scheduling by
#: session (autogroup), the whole cluster then shares the CPUs as one job, instead of each
#: process being weighed like a job of its own against everything else on the machine.
OWN_PROCESS_GROUP: dict[str, Any] = (
    {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
)


def cluster_command() -> list[str]:
    return [sys.executable, "-m", "zeroserve"]


class Up:
    def __init__(self, config: UpConfig) -> None:
        self.config = config
        self.children: list[subprocess.Popen] = []
        self.stop_requested = threading.Event()
        #: Why it stopped on its own, said last.
        self.failure = ""
        #: Launcher pid -> the file where it says why it stopped for good.
        self._exit_reports: dict[int, str] = {}
        self._reports_dir: str | None = None
        remove_dead_socket_dirs()
        self._socket_dir = _private_socket_dir()
        if self._socket_dir is not None:
            self.frontend_endpoint = f"ipc://{self._socket_dir}/frontends"
            self.backend_endpoint = f"ipc://{self._socket_dir}/workers"
        else:
            self.frontend_endpoint = f"tcp://127.0.0.1:{free_port()}"
            self.backend_endpoint = f"tcp://127.0.0.1:{free_port()}"

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_requested.set()

    def run(self) -> int:
        _check_port_free(self.config.host, self.config.port)
        # SIGHUP: the terminal that runs it was closed.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        c = self.config
        common = [
            "--log-level", c.link.log_level,
            "--heartbeat-interval", str(c.link.heartbeat_interval_s),
            "--heartbeat-liveness", str(c.link.heartbeat_liveness),
        ]  # fmt: skip
        broker = [
            *cluster_command(),
            "broker",
            "--frontend-bind",
            self.frontend_endpoint,
            "--backend-bind",
            self.backend_endpoint,
            *common,
        ]
        frontend = [
            *cluster_command(),
            "frontend",
            "--broker",
            self.frontend_endpoint,
            "--host",
            c.host,
            "--port",
            str(c.port),
            *common,
            *c.frontend_flags,
            *(flag for route in c.routes for flag in ("--expect-route", route)),
        ]
        try:
            self.children = [subprocess.Popen(broker, env=self._child_env(), **OWN_PROCESS_GROUP)]
            self.children += self._start_launchers(common)
            self.children.append(
                subprocess.Popen(frontend, env=self._frontend_env(), **OWN_PROCESS_GROUP)
            )
            code = self._serve()
        finally:
            self._shutdown()
        if self.failure:
            log.error("%s", self.failure)  # the last line: what went wrong
        return code

    def _start_launchers(self, common: list[str]) -> list[Any]:
        """One `cluster worker` per API."""
        c = self.config
        launchers: list[Any] = []
        for api in c.apis:
            worker = [
                *cluster_command(),
                "worker",
                "--broker",
                self.backend_endpoint,
                "--api",
                api,
                "--drain-timeout",
                str(CHILD_DRAIN_TIMEOUT_S),
                "--exit-on-setup-failure",
                *common,
                *c.worker_flags,
            ]
            if c.workers:
                worker += ["--processes", str(c.workers)]
            report = self._exit_report_path(len(launchers))
            env = {**self._child_env(), EXIT_REPORT_ENV: report}
            launcher = subprocess.Popen(worker, env=env, **OWN_PROCESS_GROUP)
            self._exit_reports[launcher.pid] = report
            launchers.append(launcher)
        return launchers

    def _exit_report_path(self, index: int) -> str:
        """Where launcher `index` says why it stopped for good (in the private folder)."""
        if self._reports_dir is None:
            self._reports_dir = self._socket_dir or tempfile.mkdtemp(prefix="zeroserve-up-")
        return os.path.join(self._reports_dir, f"worker-{index}.exit")

    @staticmethod
    def _child_env() -> dict[str, str]:
        """Each child ends itself should this process end without stopping it (kill -9). A join
        token of another cluster in the environment is not theirs: this one's sockets are
        private."""
        with ENVIRON_LOCK:
            env = {**os.environ, PARENT_ENV: str(os.getpid())}
        env.pop(TOKEN_ENV, None)
        return env

    def _frontend_env(self) -> dict[str, str]:
        """The API key travels in the environment, where `ps` does not show it."""
        env = self._child_env()
        if self.config.api_key:
            env["ZEROSERVE_API_KEY"] = self.config.api_key
        if self.config.shutdown_key:
            env["ZEROSERVE_SHUTDOWN_KEY"] = self.config.shutdown_key
            env["ZEROSERVE_SHUTDOWN_PID"] = str(os.getpid())
        return env

    def _serve(self) -> int:
        url = f"http://{self.config.host}:{self.config.port}"
        deadline = time.monotonic() + self.config.ready_timeout_s
        ready = False
        while not self.stop_requested.is_set():
            for child in self.children:
                if child.poll() is not None:
                    name = str(child.args[3] if isinstance(child.args, list) else child.args)
                    if name == "worker" and child.returncode == 0:
                        # A launcher ends by itself, 0, only once `cluster drain` drained it.
                        log.info("its workers were drained (`cluster drain`): stopping")
                        return 0
                    said = read_exit_report(self._exit_reports.get(child.pid, ""))
                    meaning = MEANINGS.get(child.returncode)
                    why = f": it {meaning}" if meaning else ""
                    if said:
                        why = f": {said}"
                    elif why:
                        why += " (its reason is above)"
                    self.failure = (
                        f"`cluster {name}` exited with code {child.returncode}{why}; stopped"
                    )
                    return 1
            if not ready:
                if _healthy(url + self.config.health_path):
                    ready = True
                    snapshot = fetch_status(self.frontend_endpoint, timeout_s=2.0)
                    routes = ", ".join(f"POST {path}" for path in sorted(_routes(snapshot)))
                    click.echo(
                        f"zeroserve is serving on {url}  ({routes}); Ctrl-C stops it; "
                        "`cluster status` shows it",
                        err=False,
                    )
                    # Uvicorn's lines, which LitServe users' scripts and health checks wait for.
                    click.echo("INFO:     Application startup complete.")
                    click.echo(f"INFO:     Uvicorn running on {url} (Press CTRL+C to quit)")
                elif time.monotonic() > deadline:
                    self.failure = (
                        f"no worker became ready within {self.config.ready_timeout_s:.0f} s; "
                        "stopped"
                    )
                    return 1
            self.stop_requested.wait(0.1)
        return 0

    def _shutdown(self) -> None:
        """Worker launchers and frontend first (their drain needs the broker), then the broker."""
        deadline = time.monotonic() + STOP_TIMEOUT_S
        self._stop(self.children[1:], deadline)
        self._stop(self.children[:1], deadline + 2.0)
        for folder in (self._socket_dir, self._reports_dir):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _stop(children: list[subprocess.Popen], deadline: float) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                if isinstance(child, subprocess.Popen):
                    log.warning("pid %d did not stop in time; killing its process group", child.pid)
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
                else:  # a launcher thread (a daemon): its worker processes are killed
                    log.warning("%s did not stop in time; killing its processes", child.args)
                    child.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        child.wait(5.0)


def _socket_dirs() -> list[tuple[float, Path]]:
    """This user's `cluster up` socket folders on this machine, with their socket's age."""
    found = []
    for folder in Path(tempfile.gettempdir()).glob("zeroserve-*"):
        sock = folder / "frontends"
        with contextlib.suppress(OSError):
            if folder.stat().st_uid == os.getuid() and sock.is_socket():
                found.append((sock.stat().st_mtime, folder))
    return found


def _listening(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(sock))
        except OSError:
            return False
    return True


def local_cluster() -> str | None:
    """The frontend endpoint of the newest live `cluster up` of this user on this machine:
    its broker's Unix sockets are in a folder of a known name."""
    live = [(age, folder) for age, folder in _socket_dirs() if _listening(folder / "frontends")]
    return f"ipc://{max(live)[1] / 'frontends'}" if live else None


def remove_dead_socket_dirs() -> None:
    """The folders of `cluster up`s that ended without removing theirs (kill -9): nothing
    listens on their sockets any more."""
    for _, folder in _socket_dirs():
        if not _listening(folder / "frontends"):
            shutil.rmtree(folder, ignore_errors=True)


def _check_port_free(host: str, port: int) -> None:
    """A port in use is one line before anything starts, naming it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Longest Unix socket path, with room for the socket's own name.
_MAX_SOCKET_DIR = 90


def _private_socket_dir() -> str | None:
    """A folder only this user can enter, for the broker's Unix sockets.

    Unix sockets cost less than loopback TCP on every message, and the
    folder's mode keeps other local users out.
    """
    if not zmq.has("ipc"):
        return None
    path = tempfile.mkdtemp(prefix="zeroserve-")
    if len(path) > _MAX_SOCKET_DIR:
        os.rmdir(path)
        return None
    return path


def _healthy(url: str) -> bool:
    """zeroserve's key leaves the health check open; LitServe's guards it too."""
    lit_api_key = os.environ.get("LIT_SERVER_API_KEY")
    request = urllib.request.Request(url, headers={"X-API-Key": lit_api_key} if lit_api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _routes(snapshot: Snapshot) -> list[str]:
    return [route for s in snapshot["services"].values() for route in s["routes"]]
