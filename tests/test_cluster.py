"""The whole request path through real broker, worker and frontend processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests

from cluster import Cluster, api, run_cli, wait_until, worker_pids


@dataclass
class Served:
    """The module's cluster: EchoAPI on two launchers of one process each (/predict),
    BatchAPI (/batch) and ShortUnbatchAPI (/short), behind a frontend of two processes
    (`cluster.url`) and a second one with tight limits (`tight_url`)."""

    cluster: Cluster
    echo_launchers: tuple[subprocess.Popen, subprocess.Popen]
    frontend: subprocess.Popen
    tight_port: int

    def tight_url(self, path: str = "/predict") -> str:
        return f"http://127.0.0.1:{self.tight_port}{path}"


@pytest.fixture(scope="module")
def served(module_cluster: Cluster) -> Served:
    """Served to this module's tests that only send requests (none stops, restarts or
    reconfigures a process): one cluster in place of one each."""
    c = module_cluster
    c.broker()
    echo = (c.worker("EchoAPI", 1), c.worker("EchoAPI", 1))
    c.worker("BatchAPI", 1, "--route", "/batch")
    c.worker("ShortUnbatchAPI", 1, "--route", "/short")
    c.frontend("--max-body", "1000", "--request-timeout", "1")
    tight_port = c.http_port
    frontend = c.frontend("--processes", "2", "--request-timeout", "12", "--max-body", "2048")
    processes = wait_until(lambda: len(worker_pids(frontend)) == 2 and worker_pids(frontend))
    wait_until(
        lambda: processes <= {f["pid"] for f in (c.status() or {}).get("frontends", [])},
        what="both processes of the frontend in the broker's status",
    )
    c.wait_healthy(4)
    return Served(c, echo, frontend, tight_port)


def test_separate_processes_serve_a_test_api(served: Served) -> None:
    cluster = served.cluster
    answer = cluster.post({"value": "hello"})
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json()["echo"] == "hello"
    info = requests.get(cluster.url("/info"), timeout=5).json()
    assert info["routes"] == {
        "/predict": "EchoAPI",
        "/batch": "BatchAPI",
        "/short": "ShortUnbatchAPI",
    }
    assert info["services"]["EchoAPI"]["workers"] == 2
    # LitServe's "server" block; LitServer fills it with its settings (tests/test_oracle_answers).
    assert info["server"] == {"timeout": 12.0, "max_payload_size": 2048}


def test_user_errors_keep_the_worker_serving(served: Served) -> None:
    cluster = served.cluster
    failing = cluster.post({"op": "fail"})
    # What the code raised stays in the log; the client gets LitServe's answer.
    assert (failing.status_code, failing.json()) == (500, {"detail": "Internal server error"})
    wait_until(lambda: failing.headers["X-Request-Id"] in cluster.logs(), what="the log line")
    malformed = requests.post(
        cluster.url(), data=b"{not json", headers={"Content-Type": "application/json"}, timeout=10
    )
    assert malformed.status_code == 400
    assert "malformed JSON" in malformed.json()["detail"]
    teapot = cluster.post({"op": "http", "status": 418})
    assert teapot.status_code == 418
    assert teapot.json() == {"detail": "asked for it"}
    assert cluster.post({"value": 1}).json()["echo"] == 1


def test_http_errors(served: Served) -> None:
    """Through the frontend with --max-body 1000 and --request-timeout 1."""
    url = served.tight_url
    unknown = requests.post(url("/nowhere"), json={}, timeout=5)
    assert unknown.status_code == 404
    assert "detail" in unknown.json()
    wrong_method = requests.get(url(), timeout=5)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["Allow"] == "POST"
    too_big = requests.post(url(), json={"value": "x" * 2000}, timeout=5)
    assert too_big.status_code == 413
    chunked_too_big = requests.post(
        url(), data=iter([b'{"value": "', b"x" * 1500, b'"}']), timeout=5
    )
    assert chunked_too_big.status_code == 413
    slow = requests.post(url(), json={"op": "sleep", "seconds": 3}, timeout=30)
    assert slow.status_code == 504
    assert "deadline" in slow.json()["detail"] or "timeout" in slow.json()["detail"]
    assert requests.post(url(), json={"value": 2}, timeout=30).status_code == 200


def test_two_launchers_both_receive_work(served: Served) -> None:
    cluster = served.cluster
    first, second = served.echo_launchers
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda i: cluster.post({"op": "sleep", "seconds": 0.02}), range(40))
        )
    assert all(a.status_code == 200 for a in answers)
    served_by = {a.json()["pid"] for a in answers}
    assert served_by & worker_pids(first)
    assert served_by & worker_pids(second)


def test_status_json_lists_workers_with_hosts_and_pids(served: Served) -> None:
    cluster = served.cluster
    first, second = served.echo_launchers
    snapshot = json.loads(run_cli("status", "--broker", cluster.frontend_endpoint, "--json").stdout)
    echo = {w["pid"] for w in snapshot["workers"] if w["service"] == "EchoAPI"}
    assert echo == worker_pids(first) | worker_pids(second)
    assert len(snapshot["workers"]) == 4
    assert all(w["host"] for w in snapshot["workers"])
    assert {w["service"] for w in snapshot["workers"]} == {"EchoAPI", "BatchAPI", "ShortUnbatchAPI"}
    assert snapshot["services"]["EchoAPI"]["routes"] == ["/predict"]
    assert snapshot["services"]["BatchAPI"]["routes"] == ["/batch"]
    assert len(snapshot["frontends"]) == 3  # the tight one, and two processes of the other
    table = run_cli("status", "--broker", cluster.frontend_endpoint).stdout
    for w in snapshot["workers"]:
        assert str(w["pid"]) in table
    assert "SquareAPI" not in table and "EchoAPI" in table


def test_batching_really_batches(served: Served) -> None:
    cluster = served.cluster
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: cluster.post({"value": i}, "/batch"), range(64)))
    assert [a.json()["value"] for a in answers] == list(range(64))
    sizes = [a.json()["batch"] for a in answers]
    assert max(sizes) > 1, sizes


def test_unbatch_of_the_wrong_length_answers_500(served: Served) -> None:
    cluster = served.cluster
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: cluster.post({"value": i}, "/short"), range(16)))
    failed = [a for a in answers if a.status_code == 500]
    assert failed, [a.status_code for a in answers]
    assert all("ShortUnbatchAPI" in a.json()["detail"] for a in failed)
    assert {a.status_code for a in answers} <= {200, 500}


def test_garbage_on_broker_sockets_hurts_no_one(served: Served) -> None:
    import zmq

    cluster = served.cluster
    context = zmq.Context.instance()
    for endpoint in (cluster.frontend_endpoint, cluster.backend_endpoint):
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 2000)
        sock.connect(endpoint)
        for junk in (
            [b"junk"],
            [b"ZS02", b"\xff"],
            [b"ZS02", b"\x03", b"id"],
            [b"ZS99", b"\x02", b""],
        ):
            sock.send_multipart(junk)
        sock.send_multipart([b"ZS02", b"\x03", b"rid", b"\xc1not msgpack", b"{}"])
        sock.close()

    def counted() -> bool:
        counters = (cluster.status() or {}).get("counters", {})
        return counters.get("bad_messages_frontend", 0) >= 4 and (
            counters.get("bad_messages_worker", 0) >= 4
        )

    wait_until(counted, what="the broker to count every bad message")
    assert cluster.post({"value": "still"}).json()["echo"] == "still"
    assert cluster.post({"value": 1}, "/batch").json()["value"] == 1


def test_several_frontend_processes_share_the_port(served: Served) -> None:
    cluster = served.cluster
    processes = worker_pids(served.frontend)
    assert len(processes) == 2
    # (The module's fixture waited for both to link to the broker.)
    assert processes <= {f["pid"] for f in (cluster.status() or {})["frontends"]}
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: cluster.post({"value": i}), range(20)))
    assert [a.json()["echo"] for a in answers] == list(range(20))


def test_no_worker_for_a_service_is_503(cluster: Cluster) -> None:
    cluster.broker()
    cluster.frontend()
    other = cluster.worker("OtherRouteAPI")
    cluster.worker("EchoAPI")
    cluster.wait_workers(2)
    wait_until(lambda: cluster.post({"value": 1}, "/other").status_code == 200, what="/other")
    cluster.stop(other)
    wait_until(lambda: not cluster.ready_workers("OtherRouteAPI"), what="the worker to leave")
    gone = cluster.post({"value": 1}, "/other")
    assert gone.status_code == 503
    assert "no worker" in gone.json()["detail"]
    assert cluster.post({"value": 1}).status_code == 200


def test_full_queue_is_503_with_retry_after(cluster: Cluster) -> None:
    cluster.up("EchoAPI", worker_args=("--capacity", "1"), broker_args=("--max-queue", "2"))
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: cluster.post({"op": "sleep", "seconds": 0.5}), range(8)))
    statuses = sorted(r.status_code for r in codes)
    assert statuses.count(200) >= 3, statuses
    full = [r for r in codes if r.status_code == 503]
    assert full, statuses
    assert all(r.headers.get("Retry-After") == "1" for r in full)
    assert all("full" in r.json()["detail"] for r in full)


def test_worker_that_joins_late_turns_health_green(cluster: Cluster) -> None:
    cluster.broker()
    cluster.frontend()
    assert cluster.health() == 503
    assert cluster.post({"value": 1}).status_code == 503
    cluster.worker("EchoAPI")
    wait_until(lambda: cluster.health() == 200, what="/health 200")
    assert cluster.post({"value": 1}).status_code == 200


def test_kill_9_of_a_worker_under_load_loses_no_request(cluster: Cluster) -> None:
    cluster.broker()
    launcher = cluster.worker("EchoAPI", 2)
    cluster.frontend()
    cluster.wait_healthy(2)
    victim = min(worker_pids(launcher))
    total = 120
    results = cluster.load(total, total // 3, lambda: os.kill(victim, signal.SIGKILL))
    assert [(i, 200, i) for i in range(total)] == [(i, code, echo) for i, code, echo, _ in results]
    snapshot = cluster.status()
    assert snapshot is not None
    assert snapshot["broker"]["requests_held"] == 0
    assert snapshot["counters"].get("resent", 0) >= 1


def test_large_bodies_both_ways_survive_a_worker_kill(cluster: Cluster) -> None:
    """Bodies the broker holds as frames (uncopied) are forwarded, and re-sent, whole."""
    cluster.broker()
    launcher = cluster.worker("EchoAPI", 2)
    cluster.frontend()
    cluster.wait_healthy(2)
    victim = min(worker_pids(launcher))

    def one(i: int) -> tuple[int, bool]:
        big = f"{i:06d}" * 50_000  # 300 KB each way
        answer = cluster.post({"value": big, "op": "sleep", "seconds": 0.05}, timeout=30)
        return answer.status_code, answer.ok and answer.json()["echo"] == big

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(40)]
        wait_until(lambda: sum(f.done() for f in futures) >= 8, what="the first answers")
        os.kill(victim, signal.SIGKILL)
        results = [f.result() for f in futures]
    assert results == [(200, True)] * 40
    assert (cluster.status() or {})["counters"].get("resent", 0) >= 1


@pytest.mark.parametrize("capacity", ["1", "4"], ids=["queued-in-broker", "queued-in-worker"])
def test_client_disconnect_cancels_work_not_started(
    cluster: Cluster, tmp_path, capacity: str
) -> None:
    cluster.up("EchoAPI", worker_args=("--capacity", capacity))
    mark = tmp_path / "ran"
    with ThreadPoolExecutor(2) as pool:
        busy = pool.submit(cluster.post, {"op": "sleep", "seconds": 1.0})
        wait_until(lambda: (cluster.status() or {}).get("broker", {}).get("requests_held") == 1)
        with pytest.raises(requests.Timeout):
            cluster.post({"value": 1, "mark": str(mark)}, timeout=0.3)
        assert busy.result().status_code == 200
    assert cluster.post({"value": 2}).status_code == 200
    assert not mark.exists(), "the cancelled request reached predict"
    counters = (cluster.status() or {})["counters"]
    assert counters.get("cancelled", 0) >= 1


def test_worker_drains_on_sigterm(cluster: Cluster) -> None:
    cluster.broker()
    launcher = cluster.worker("EchoAPI", 1)
    cluster.frontend()
    cluster.wait_healthy(1)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(cluster.post, {"op": "sleep", "seconds": 1.0, "value": "kept"})
        wait_until(lambda: (cluster.status() or {}).get("broker", {}).get("requests_held") == 1)
        launcher.send_signal(signal.SIGTERM)
        assert slow.result().json()["echo"] == "kept"
    assert launcher.wait(15) == 0
    wait_until(lambda: cluster.health() == 503, what="/health 503 once the worker left")


def test_worker_refuses_a_bad_api_at_start() -> None:
    out = run_cli("worker", "--broker", "tcp://127.0.0.1:9", "--api", api("NoSuchAPI"))
    assert out.returncode == 2
    assert "has no attribute 'NoSuchAPI'" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_crashed_worker_process_is_restarted_and_logged(cluster: Cluster) -> None:
    cluster.broker()
    launcher = cluster.worker("EchoAPI", 1)
    cluster.frontend()
    cluster.wait_healthy(1)
    [victim] = worker_pids(launcher)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: worker_pids(launcher) - {victim}, what="the launcher to start a new process")
    cluster.wait_healthy(1)
    assert cluster.post({"value": 1}).json()["pid"] != victim
    log = cluster.logs()
    assert f"process {victim} was killed by signal 9; restarting in" in log
