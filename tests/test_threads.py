"""Each worker process's numeric libraries get its share of the cores, unless the user's
environment says otherwise; through real launchers and worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
import requests

from zeroserve.worker import threads
from zeroserve.worker.threads import THREAD_VARIABLES

from cluster import Cluster, run_cli, start_server_py, wait_until

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.fixture(autouse=True)
def no_thread_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The processes a test starts inherit no thread variable but those it sets; whatever
    a test sets them to is undone after it."""
    for name in (*THREAD_VARIABLES, threads.THREADS_ENV):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def serve(cluster: Cluster, *flags: str, processes: int | None = 1, running: int = 1) -> list[dict]:
    """ThreadsAPI on `processes` worker processes (None: as `flags` say), `running` of them at
    once; what each of those answers."""
    cluster.broker()
    cluster.worker("ThreadsAPI", processes, *flags)
    cluster.frontend()
    cluster.wait_healthy(running)
    answers: dict[int, dict] = {}
    for _ in range(40 * running):
        answer = cluster.post({}).json()
        answers[answer["pid"]] = answer
        if len(answers) == running:
            break
    assert len(answers) == running
    return list(answers.values())


def assert_limited(answer: dict, count: int) -> None:
    expected = {name: str(count) for name in THREAD_VARIABLES}
    assert answer["env"] == expected
    assert answer["at_import"] == expected  # set before the user's module was imported
    assert answer["threads_per_process"] == count
    if answer["pools"] is not None:  # threadpoolctl is installed: numpy's BLAS obeys
        blas = [pool["threads"] for pool in answer["pools"] if pool["api"] == "blas"]
        assert blas and set(blas) == {count}


def status_of(cluster: Cluster) -> tuple[dict, str]:
    as_json = run_cli("status", "--broker", cluster.frontend_endpoint, "--json")
    table = run_cli("status", "--broker", cluster.frontend_endpoint)
    assert as_json.returncode == 0 and table.returncode == 0, as_json.stderr + table.stderr
    return json.loads(as_json.stdout), table.stdout


def column(table: str, section: str, name: str) -> list[str]:
    """The cells of column `name` in the table under the line starting with `section`."""
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(section))
    header = lines[start + 1]
    at = header.index(name)
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(line[at:].split("  ")[0].strip())
    return rows


def test_threads_per_process_is_set_before_the_api_is_imported(cluster: Cluster) -> None:
    (answer,) = serve(cluster, "--threads-per-process", "1")
    assert_limited(answer, 1)
    snapshot, table = status_of(cluster)
    assert [w["info"]["threads_per_process"] for w in snapshot["workers"]] == [1]
    assert [r["threads_per_process"] for r in snapshot["launchers"]] == [1]
    assert column(table, "workers", "THREADS") == ["1"]
    assert column(table, "worker launchers", "THREADS") == ["1"]


def test_by_default_the_processes_share_the_cores(cluster: Cluster) -> None:
    share = max(1, CORES // 2)
    for answer in serve(cluster, processes=2, running=2):
        assert_limited(answer, share)
    _, table = status_of(cluster)
    assert column(table, "workers", "THREADS") == [str(share)] * 2
    assert column(table, "worker launchers", "THREADS") == [str(share)]


def test_an_autoscaling_launcher_shares_the_cores_by_its_maximum(cluster: Cluster) -> None:
    (answer,) = serve(cluster, "--max-processes", "2", processes=None)
    assert_limited(answer, max(1, CORES // 2))


def test_after_setup_threadpoolctl_and_an_imported_torch_are_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told: list[tuple[str, int]] = []
    fake_threadpoolctl = types.ModuleType("threadpoolctl")
    fake_threadpoolctl.threadpool_limits = lambda limits: told.append(("threadpoolctl", limits))
    fake_torch = types.ModuleType("torch")
    fake_torch.set_num_threads = lambda n: told.append(("torch", n))
    monkeypatch.setitem(sys.modules, "threadpoolctl", fake_threadpoolctl)
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    threads.limit_pools(3)
    assert told == [("threadpoolctl", 3), ("torch", 3)]


def test_a_thread_variable_the_user_set_wins(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    (answer,) = serve(cluster)
    assert answer["env"] == {name: "3" if name == "OMP_NUM_THREADS" else None
                             for name in THREAD_VARIABLES}  # fmt: skip
    assert answer["threads_per_process"] == 3
    snapshot, table = status_of(cluster)
    assert snapshot["launchers"][0]["threads_per_process"] == 0
    assert column(table, "workers", "THREADS") == ["3"]
    assert column(table, "worker launchers", "THREADS") == ["OMP_NUM_THREADS=3"]


@pytest.mark.parametrize("value", ["0", "-2"])
def test_a_count_below_one_is_refused(value: str) -> None:
    for command in (
        ("worker", "--broker", "tcp://127.0.0.1:9", "--api", "x.py:A"),
        ("up", "--port", "9"),
    ):
        out = run_cli(*command, "--threads-per-process", value)
        assert out.returncode == 2
        last = out.stderr.strip().splitlines()[-1]
        assert last == f"Error: --threads-per-process must be at least 1, not {value}"


def test_a_count_the_environment_contradicts_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MKL_NUM_THREADS", "4")
    out = run_cli("up", "--port", "9", "--threads-per-process", "2")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "Error: --threads-per-process 2 and MKL_NUM_THREADS=4 in the environment disagree; "
        "give one of them"
    )


def test_the_share_is_of_the_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    assert [threads.share(n, None) for n in (1, 3, 8, 20)] == [8, 2, 1, 1]
    assert threads.share(3, 5) == 5
    monkeypatch.setenv("NUMEXPR_NUM_THREADS", "2")
    assert threads.share(3, None) is None
    assert threads.share(3, 2) is None


def test_an_empty_thread_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", " ")
    assert threads.share(2, 4) == 4
    threads.limit_environment(4)
    assert {name: os.environ[name] for name in THREAD_VARIABLES} == dict.fromkeys(
        THREAD_VARIABLES, "4"
    )
    assert threads.threads_per_process() == 4


SERVER_PY = """
import os
import sys

import numpy  # loads its BLAS when the worker process imports this file, before all else

import zeroserve as ls
from zeroserve.worker.threads import THREAD_VARIABLES

AT_IMPORT = {name: os.environ.get(name) for name in THREAD_VARIABLES}


class ThreadsAPI(ls.LitAPI):
    def predict(self, x):
        try:
            from threadpoolctl import threadpool_info
        except ImportError:
            pools = None
        else:
            pools = [{"api": i["user_api"], "threads": i["num_threads"]} for i in threadpool_info()]
        env = {name: os.environ.get(name) for name in THREAD_VARIABLES}
        return {"pid": os.getpid(), "env": env, "at_import": AT_IMPORT,
                "threads_per_process": ls.threads_per_process(), "pools": pools}


if __name__ == "__main__":
    server = ls.LitServer(ThreadsAPI(), accelerator="cpu", workers_per_device=2)
    server.run(port=int(sys.argv[1]))
"""


def test_a_litserver_shares_the_cores_among_its_workers(tmp_path: Path) -> None:
    """Its worker processes import server.py (numpy with it) before zeroserve's code runs in
    them: the variables are in their environment from the start."""
    (tmp_path / "server.py").write_text(SERVER_PY)
    proc, url = start_server_py(tmp_path)
    try:

        def two_workers() -> bool:
            with contextlib.suppress(requests.ConnectionError):
                return requests.get(f"{url}/health?verbose=1", timeout=1).json()["workers"] >= 2
            return False

        wait_until(two_workers, timeout_s=60, what="two LitServer workers")
        answers = {}
        for _ in range(80):
            answer = requests.post(f"{url}/predict", json={}, timeout=30).json()
            answers[answer["pid"]] = answer
            if len(answers) == 2:
                break
        assert len(answers) == 2
        for answer in answers.values():
            assert_limited(answer, max(1, CORES // 2))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
