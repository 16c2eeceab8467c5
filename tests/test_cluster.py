"""The whole request path through real broker, worker and frontend processes: one cluster,
shared by the module's tests, as they only send it requests (tests/test_lifecycle.py has those
that stop, kill or reconfigure processes)."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests

from cluster import Cluster, run_cli, wait_until, worker_pids


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
            [b"ZS03", b"\xff"],
            [b"ZS03", b"\x03", b"id"],
            [b"ZS99", b"\x02", b""],
        ):
            sock.send_multipart(junk)
        sock.send_multipart([b"ZS03", b"\x03", b"rid", b"\xc1not msgpack", b"{}"])
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
