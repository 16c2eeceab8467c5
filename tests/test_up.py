"""`cluster up` serves the built-in demo and leaves nothing behind when stopped."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from cluster import ROOT, api, free_port, run_cli, wait_until


def _read_line_with(proc: subprocess.Popen, needle: str, timeout_s: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if selector.select(timeout=0.2):
            line = proc.stdout.readline()
            if needle in line:
                return line
            if not line and proc.poll() is not None:
                break
    raise AssertionError(f"`cluster up` never printed {needle!r}")


def _dead_socket_dir(parent: Path, name: str) -> Path:
    """What a `cluster up` killed with -9 leaves: its folder, a socket nothing listens on."""
    folder = parent / name
    folder.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(folder / "frontends"))
    return folder


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary folder whose path leaves room for Unix sockets (`cluster up` falls back to
    TCP past 90 characters): pytest's own, deeper under xdist (popen-gwN), may not."""
    folder = Path(tempfile.mkdtemp(prefix="zs-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_up_serves_the_demo_and_stops_cleanly_on_sigint(tmp_path, short_tmp: Path) -> None:
    port = free_port()
    left_by_a_kill = _dead_socket_dir(short_tmp, "zeroserve-k1")
    with open(tmp_path / "up.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zeroserve", "up", "--port", str(port), "--workers", "2"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=ROOT,
            start_new_session=True,
            env={**os.environ, "TMPDIR": str(short_tmp)},
        )
    try:
        line = _read_line_with(proc, "serving on", 60)
        # The broker listens on Unix sockets in a folder only this user may enter; what a
        # killed one left was removed at start.
        assert not left_by_a_kill.exists()
        (socket_dir,) = short_tmp.glob("zeroserve-*")
        assert socket_dir.stat().st_mode & 0o777 == 0o700
        assert sorted(p.name for p in socket_dir.iterdir()) == ["frontends", "workers"]
        assert f"http://127.0.0.1:{port}" in line

        # Plain `cluster status` finds it.
        def workers_shown() -> int:
            status = subprocess.run(
                [sys.executable, "-m", "zeroserve", "status", "--json"],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "TMPDIR": str(short_tmp)},
                check=False,
            )
            return len(json.loads(status.stdout)["workers"]) if status.returncode == 0 else 0

        wait_until(lambda: workers_shown() == 2, what="plain `cluster status` to find it")
        # A newer folder of a dead one is passed over, and the text says which cluster it is.
        _dead_socket_dir(short_tmp, "zeroserve-k2")
        shown = subprocess.run(
            [sys.executable, "-m", "zeroserve", "status"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "TMPDIR": str(short_tmp)},
            check=True,
        )
        assert shown.stdout.splitlines()[0] == f"broker ipc://{socket_dir}/frontends"
        answer = requests.post(f"http://127.0.0.1:{port}/predict", json={"input": 4}, timeout=10)
        assert answer.json() == {"output": 16}
        bad = requests.post(f"http://127.0.0.1:{port}/predict", json={"input": "x"}, timeout=10)
        assert bad.status_code == 422
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) >= 4  # worker launcher, 2 workers, frontend
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0  # not the drain timeout's 30 s: nothing was held
        wait_until(
            lambda: not [p for p in family if p.is_running() and p.status() != "zombie"],
            timeout_s=5,
            what="every child of `cluster up` to exit",
        )
        assert not _port_in_use(port)
        assert not socket_dir.exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _port_in_use(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
    except requests.ConnectionError:
        return False
    return True


def _start_up(tmp_path, *args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    with open(tmp_path / "up.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zeroserve", "up", "--port", str(port), *args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        _read_line_with(proc, "serving on", 60)
    except BaseException:
        _kill_family(proc, psutil.Process(proc.pid).children(recursive=True))
        raise
    return proc, port


def _kill_family(proc: subprocess.Popen, family: list[psutil.Process]) -> None:
    """Clean-up, also when the test failed: `cluster up` and every child it had."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    for member in family:
        with contextlib.suppress(psutil.Error):
            member.kill()
    proc.wait(5)


def _gone(family: list[psutil.Process]) -> bool:
    alive = []
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.is_running() and p.status() != "zombie":
                alive.append(p)
    return not alive


def test_closing_the_terminal_of_up_stops_everything(tmp_path) -> None:
    proc, port = _start_up(tmp_path, "--workers", "1")
    family = psutil.Process(proc.pid).children(recursive=True)
    try:
        proc.send_signal(signal.SIGHUP)
        # Drains take a few seconds; a loaded machine may take a few more.
        assert proc.wait(30) == 0
        wait_until(lambda: _gone(family), timeout_s=10, what="every child to exit")
        assert not _port_in_use(port)
    finally:
        _kill_family(proc, family)


def test_up_killed_with_9_leaves_no_process_behind(tmp_path) -> None:
    proc, port = _start_up(tmp_path, "--workers", "1")
    family = psutil.Process(proc.pid).children(recursive=True)
    try:
        proc.kill()
        proc.wait(5)
        wait_until(lambda: _gone(family), timeout_s=15, what="every orphan to stop itself")
        assert not _port_in_use(port)
    finally:
        _kill_family(proc, family)


def test_up_serves_several_apis_side_by_side(tmp_path) -> None:
    proc, port = _start_up(
        tmp_path, "--api", api("EchoAPI"), "--api", api("OtherRouteAPI"), "--workers", "1"
    )
    family = psutil.Process(proc.pid).children(recursive=True)
    try:
        for path in ("/predict", "/other"):
            url = f"http://127.0.0.1:{port}{path}"
            assert requests.post(url, json={"value": path}, timeout=10).json()["echo"] == path
        info = requests.get(f"http://127.0.0.1:{port}/info", timeout=10).json()
        assert info["routes"] == {"/predict": "EchoAPI", "/other": "OtherRouteAPI"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        _kill_family(proc, family)


def test_up_refuses_two_apis_on_one_route() -> None:
    out = run_cli("up", "--api", api("EchoAPI"), "--api", api("LoggingAPI"), "--port", "1")
    assert out.returncode == 2
    assert "EchoAPI and LoggingAPI both serve /predict" in out.stderr
    assert "Traceback" not in out.stderr


def test_up_refuses_a_bad_api_in_one_line() -> None:
    out = run_cli("up", "--api", "no_such_module:API", "--port", "1")
    assert out.returncode == 2
    assert "no module named 'no_such_module'" in out.stderr
    assert "Traceback" not in out.stderr


def test_up_whose_setup_fails_stops_at_once_naming_it(tmp_path) -> None:
    out = run_cli("up", "--api", api("BadSetupAPI"), "--port", str(free_port()), "--workers", "1")
    assert out.returncode == 1
    # At once: one attempt, not retried with back-off.
    assert (
        out.stderr.count("BadSetupAPI.setup failed (RuntimeError: the model file is missing)") == 1
    )
    last = out.stderr.strip().splitlines()[-1]
    assert "setup failed: RuntimeError: the model file is missing; stopped" in last, last


def test_ctrl_c_under_load_drains_quietly(tmp_path) -> None:
    """A draining frontend takes no new connection or request, says so once, and does not log
    a 503 for each request its clients keep sending on their connections."""
    proc, port = _start_up(tmp_path, "--api", api("EchoAPI"), "--workers", "1")
    family = psutil.Process(proc.pid).children(recursive=True)
    stop = threading.Event()
    answered: list[int] = []

    def client() -> None:
        with requests.Session() as session:  # keep-alive, as a load tool's connections are
            while not stop.is_set():
                try:
                    r = session.post(f"http://127.0.0.1:{port}/predict", json={"value": 1})
                except requests.ConnectionError:
                    stop.wait(0.01)  # closed, or nothing listens any more: not in a tight loop
                    continue
                answered.append(r.status_code)

    def slow() -> None:
        """One long request keeps the stopping frontend waiting for it (its grace)."""
        with contextlib.suppress(requests.ConnectionError):
            requests.post(
                f"http://127.0.0.1:{port}/predict",
                json={"op": "sleep", "seconds": 3, "value": 0},
                timeout=20,
            )

    threads = [threading.Thread(target=client) for _ in range(4)]
    threads.append(threading.Thread(target=slow))
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: len(answered) > 100, what="load, with the slow request sent")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        _kill_family(proc, family)
    log = (tmp_path / "up.log").read_text()
    assert log.count("503 POST /predict") <= 4, log[-3000:]
    assert log.count("draining: no new connections or requests") == 1, log[-3000:]


def test_up_passes_its_version_on_and_every_answer_names_it(tmp_path) -> None:
    proc, port = _start_up(tmp_path, "--api", api("EchoAPI"), "--workers", "1", "--version", "3")
    family = psutil.Process(proc.pid).children(recursive=True)
    try:
        answer = requests.post(f"http://127.0.0.1:{port}/predict", json={"value": 1}, timeout=10)
        assert (answer.json()["echo"], answer.headers["X-Model-Version"]) == (1, "3")
        # Draining the version it runs ends `cluster up`, 0, saying why.
        (broker,) = [c.cmdline() for c in family if "broker" in c.cmdline()]
        endpoint = broker[broker.index("--frontend-bind") + 1]
        out = run_cli("drain", "EchoAPI", "--broker", endpoint, "--version", "3")
        assert out.returncode == 0 and "1 worker(s) draining" in out.stdout, out.stderr
        assert proc.wait(30) == 0
        log = (tmp_path / "up.log").read_text()
        assert "its workers were drained (`cluster drain`): stopping" in log, log[-2000:]
        assert "exited with code" not in log, log[-2000:]
    finally:
        _kill_family(proc, family)
    out = run_cli("up", "--api", api("EchoAPI"), "--version", "a b", "--port", "1")
    assert out.returncode == 2 and "--version must be" in out.stderr
