"""Faults injected under concurrent load: every accepted request still gets exactly one answer."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests
import zmq

from zeroserve.common import protocol as p

from cluster import Cluster, fake_ready, run_cli, wait_until, worker_pids


def test_kill_9_of_a_whole_launcher_loses_no_request(cluster: Cluster) -> None:
    cluster.broker()
    doomed = cluster.worker("EchoAPI", 2)
    survivor = cluster.worker("EchoAPI", 1)
    cluster.frontend()
    cluster.wait_healthy(3)
    results = cluster.load(150, 40, lambda: os.killpg(doomed.pid, signal.SIGKILL))
    assert [(i, code, echo) for i, code, echo, _ in results] == [(i, 200, i) for i in range(150)]
    # Work held by the dead was re-sent once the broker gave them up, for their silence (the
    # rule, with its clock passed in: test_broker_peers.py) or for a request that could not
    # reach them, not left to a timeout.
    snapshot = cluster.status() or {}
    assert {w["pid"] for w in snapshot["workers"]} == worker_pids(survivor)
    counters = snapshot["counters"]
    assert counters.get("dead_workers", 0) + counters.get("unreachable_workers", 0) >= 2
    assert snapshot["counters"].get("resent", 0) >= 1
    assert snapshot["broker"]["requests_held"] == 0


def test_a_stopped_worker_rejoins_on_sigcont(cluster: Cluster) -> None:
    cluster.broker()
    sleeper = cluster.worker("EchoAPI", 1)
    cluster.worker("EchoAPI", 1)
    cluster.frontend()
    cluster.wait_healthy(2)
    [frozen] = worker_pids(sleeper)

    def freeze() -> None:
        wait_until(
            lambda: any(w["pid"] == frozen and w["in_flight"] for w in cluster.ready_workers()),
            what="the worker to hold work",
        )
        os.kill(frozen, signal.SIGSTOP)

    try:
        results = cluster.load(60, 5, freeze)
        assert [(i, code, echo) for i, code, echo, _ in results] == [(i, 200, i) for i in range(60)]
        wait_until(
            lambda: len(cluster.ready_workers()) == 1, what="the stopped worker to be dropped"
        )
        counters = (cluster.status() or {})["counters"]
        assert counters.get("dead_workers", 0) >= 1 and counters.get("resent", 0) >= 1
    finally:
        os.kill(frozen, signal.SIGCONT)
    cluster.wait_workers(2)

    def served_by_it() -> bool:
        with ThreadPoolExecutor(4) as pool:
            pids = pool.map(
                lambda _: cluster.post({"op": "sleep", "seconds": 0.02}).json(), range(8)
            )
            return any(p["pid"] == frozen for p in pids)

    wait_until(served_by_it, what="the woken worker to serve again")
    assert (cluster.status() or {})["broker"]["requests_held"] == 0


def test_a_frontend_stopped_past_its_heartbeats_still_gets_its_answer(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A frontend starved of CPU (here SIGSTOP) past its heartbeat window is forgotten by the
    broker, but what it waits for is not cancelled: the answer that comes meanwhile reaches it
    once it runs again. (The broker used to cancel a silent frontend's requests; the frontend,
    reading the heartbeats queued while it was stopped, never knew, and its request ended 504
    at its deadline.)"""
    cluster.broker()
    cluster.worker("EchoAPI", 1)
    frontend = cluster.frontend("--request-timeout", "20")
    cluster.wait_healthy(1)
    gate = tmp_path / "gate"
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(cluster.post, {"value": 7, "gate": str(gate)})
        wait_until(
            lambda: any(w["in_flight"] for w in cluster.ready_workers()),
            what="the worker to hold the request",
        )
        os.killpg(frontend.pid, signal.SIGSTOP)
        try:
            wait_until(
                lambda: re.search(r"frontend (left|silent): ", cluster.logs()),
                what="the broker to forget the stopped frontend",
            )
            gate.write_text("open")
            wait_until(
                lambda: (cluster.status() or {})["broker"]["requests_held"] == 0,
                what="the worker's answer to pass the broker",
            )
        finally:
            os.killpg(frontend.pid, signal.SIGCONT)
        answer = pending.result(timeout=60)
    assert (answer.status_code, answer.json()["echo"]) == (200, 7), answer.text


def test_a_killed_frontends_requests_are_dropped_once_an_answer_cannot_reach_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The other side of the rule above: a frontend that is gone (kill -9) is forgotten by its
    silence with its requests kept, and the first answer that cannot reach it (its connection
    is gone) cancels the rest, so the broker holds nothing for it."""
    cluster.broker()
    cluster.worker("EchoAPI", 1)
    frontend = cluster.frontend()
    cluster.wait_healthy(1)
    first, rest = tmp_path / "first", tmp_path / "rest"
    clients = ThreadPoolExecutor(3)

    def held(count: int) -> None:
        wait_until(
            lambda: (cluster.status() or {})["broker"]["requests_held"] == count,
            what=f"the broker to hold {count} request(s)",
        )

    # The first alone, so that the one worker process takes it first; the others queue behind.
    clients.submit(cluster.post, {"value": 0, "gate": str(first)})
    held(1)
    for value in (1, 2):
        clients.submit(cluster.post, {"value": value, "gate": str(rest)})
    held(3)
    os.killpg(frontend.pid, signal.SIGKILL)
    wait_until(
        lambda: "frontend silent: " in cluster.logs(), what="the broker to forget the frontend"
    )
    assert (cluster.status() or {})["broker"]["requests_held"] == 3, "kept while only silent"
    first.write_text("open")  # its answer finds no connection: the other two are dropped
    wait_until(
        lambda: re.search(r"frontend unreachable: .*\(2 request\(s\) dropped\)", cluster.logs()),
        what="the broker to drop what the gone frontend waited for",
    )
    rest.write_text("open")  # a cancelled request's answer still frees its worker's slot
    held(0)
    clients.shutdown(wait=True)


def test_broker_kill_9_and_restart_under_load(cluster: Cluster) -> None:
    broker = cluster.broker()
    cluster.worker("EchoAPI", 1)
    cluster.frontend()
    cluster.wait_healthy(1)
    ports = tuple(
        int(e.rsplit(":", 1)[1]) for e in (cluster.frontend_endpoint, cluster.backend_endpoint)
    )
    stop = threading.Event()
    seen: list[tuple[float, int, float]] = []

    def client() -> None:
        while not stop.is_set():
            began = time.monotonic()
            try:
                code = cluster.post({"value": 1}, timeout=10).status_code
            except requests.Timeout:
                code = -1
            seen.append((began, code, time.monotonic() - began))

    with ThreadPoolExecutor(4) as pool:
        clients = [pool.submit(client) for _ in range(4)]
        wait_until(lambda: len(seen) > 20, what="traffic")
        cluster.stop(broker, signal.SIGKILL)
        wait_until(lambda: cluster.health() == 503, what="the frontend to see the loss")
        cluster.broker(ports=ports)  # type: ignore[arg-type]
        restarted_at = time.monotonic()
        wait_until(
            lambda: any(b > restarted_at and c == 200 for b, c, _ in seen), what="service again"
        )
        stop.set()
        for f in clients:
            f.result()
    # Nothing had begun to answer: what the broker held, and what came while it was gone,
    # waited at the frontend and was served once it was back (none hung to its client's
    # timeout, -1).
    assert {code for _, code, _ in seen} == {200}
    # The frontend, back by a request before its heartbeat, is named by that heartbeat.
    [front] = wait_until(
        lambda: [f for f in (cluster.status() or {}).get("frontends", []) if f.get("pid")],
        what="the frontend named in the restarted broker's status",
    )
    assert front["host"]


def test_a_dead_broker_is_noticed_at_once_not_after_the_heartbeat_window(
    cluster: Cluster,
) -> None:
    """With heartbeats 6 s apart in all, a killed broker is still seen at once: the socket
    monitor reports the dropped connection. What it held, and what comes while it is gone,
    waits at the frontend; when it is back everyone rejoins without a manual step and all of
    it is served."""
    slow = ("--heartbeat-interval", "2")
    broker = cluster.broker(*slow)
    cluster.worker("EchoAPI", 1, *slow)
    cluster.frontend(*slow)
    cluster.wait_healthy(1)
    ports = tuple(
        int(e.rsplit(":", 1)[1]) for e in (cluster.frontend_endpoint, cluster.backend_endpoint)
    )
    with ThreadPoolExecutor(2) as pool:
        # (A sync worker rejoins once the batch that holds it ends: keep it short.)
        held = pool.submit(cluster.post, {"op": "sleep", "seconds": 1, "value": 0}, timeout=30)
        wait_until(
            lambda: any(w["in_flight"] for w in cluster.ready_workers()), what="the held request"
        )
        cluster.stop(broker, signal.SIGKILL)
        wait_until(lambda: cluster.health() == 503, what="the frontend to see the loss")
        # The socket monitor told (heartbeats would take 6 s, 3 of 2 s, and say so in a line
        # of their own).
        frontend = cluster.procs[2][2].read_text()
        assert "the connection to the broker at" in frontend, frontend
        assert "no word from the broker" not in frontend, frontend
        came_after = pool.submit(cluster.post, {"value": 1}, timeout=30)
        cluster.broker(*slow, ports=ports)  # type: ignore[arg-type]
        cluster.wait_healthy(1)
        assert [held.result().json()["echo"], came_after.result().json()["echo"]] == [0, 1]
    assert cluster.post({"value": 2}).json()["echo"] == 2


def test_a_failing_setup_is_retried_with_back_off_not_in_a_tight_loop(cluster: Cluster) -> None:
    cluster.broker()
    # Heartbeats 5 s apart: silent, the launcher would be forgotten after 15 s.
    launcher_process = cluster.worker("BadSetupAPI", 1, "--heartbeat-interval", "5")
    cluster.frontend()
    message = "BadSetupAPI.setup failed (RuntimeError: the model file is missing); this worker"
    wait_until(lambda: cluster.logs().count(message) >= 1, what="the first attempt")
    first = time.monotonic()
    wait_until(lambda: cluster.logs().count(message) >= 3, what="a third attempt")
    # Back-off of 0.5 s, then 1 s: a tight loop would make three attempts in a blink.
    assert time.monotonic() - first >= 1.2
    assert "the model file is missing" in cluster.logs()
    assert "restarting in 1.0 s" in cluster.logs()
    assert cluster.health() == 503
    # `cluster status` says why the service has no worker: the launcher tells the broker.
    [launcher] = wait_until(
        lambda: [
            r
            for r in (cluster.status() or {}).get("launchers", [])
            if "the model file is missing" in r.get("problem", "")
        ],
        what="the launcher's problem in the broker's status",
    )
    assert launcher["service"] == "BadSetupAPI" and launcher["processes"] == 1
    assert "BadSetupAPI.setup failed: RuntimeError" in launcher["problem"]
    table = run_cli("status", "--broker", cluster.frontend_endpoint).stdout
    assert "worker launchers (1)" in table and "the model file is missing" in table
    # A launcher that stops says goodbye, and the broker forgets it at once.
    launcher_process.terminate()
    wait_until(
        lambda: (cluster.status() or {}).get("launchers") == [],
        timeout_s=10,
        what="the goodbye (its silence would take 15 s)",
    )


def test_a_hung_predict_gets_504_and_its_process_recycled(cluster: Cluster) -> None:
    cluster.broker()
    launcher = cluster.worker("EchoAPI", 2, "--hang-grace", "1")
    cluster.frontend("--request-timeout", "1")
    cluster.wait_healthy(2)
    before = worker_pids(launcher)
    with ThreadPoolExecutor(2) as pool:
        hung = pool.submit(cluster.post, {"op": "sleep", "seconds": 120})
        wait_until(
            lambda: any(w["in_flight"] for w in cluster.ready_workers()), what="the hang to start"
        )
        # The other worker keeps serving while one is stuck.
        assert cluster.post({"value": "meanwhile"}).json()["echo"] == "meanwhile"
        assert hung.result().status_code == 504
    wait_until(lambda: len(worker_pids(launcher) - before) == 1, what="a fresh process")
    assert "recycling this process" in cluster.logs()
    cluster.wait_workers(2)
    assert cluster.post({"value": "after"}).json()["echo"] == "after"


def test_a_worker_the_broker_refuses_ends_its_launcher_with_the_reason(cluster: Cluster) -> None:
    cluster.up("EchoAPI")
    refused = cluster.worker("LoggingAPI")  # another service on the same route
    assert refused.wait(30) == 77
    logs = cluster.logs()
    # One line, the launcher's: its process's reason, which names the route.
    assert "was refused by the broker: the broker refused it:" in logs and "/predict" in logs


def test_a_request_that_cannot_reach_its_worker_goes_to_the_next(cluster: Cluster) -> None:
    """A worker whose data socket is gone while its control socket still beats (one being
    replaced, say): the request the broker cannot hand it is re-queued at once, the worker
    removed, and the next worker answers it; nothing waits for its deadline."""
    cluster.broker()
    context = zmq.Context.instance()
    data = context.socket(zmq.DEALER)
    data.setsockopt(zmq.LINGER, 0)
    data.setsockopt(zmq.ROUTING_ID, b"Wgone-data")
    data.connect(cluster.backend_endpoint)
    control = context.socket(zmq.DEALER)
    control.setsockopt(zmq.LINGER, 0)
    control.connect(cluster.backend_endpoint)
    # Its request waits for the next worker as long as its heartbeats would have kept it: 30 s.
    data.send_multipart(p.ready(fake_ready("EchoAPI", "/predict", "gone", interval_s=10.0)))
    wait_until(lambda: len((cluster.status() or {}).get("workers", [])) == 1, what="READY")
    data.close()  # no connection has the worker's name now; its control socket still beats
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            control.send_multipart(p.heartbeat({"worker": b"Wgone-data"}))
            stop.wait(0.2)  # its heartbeat interval

    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    try:
        cluster.frontend()
        wait_until(lambda: cluster.health() == 200, what="the frontend to route to the worker")
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(cluster.post, {"value": "rerouted"})
            wait_until(
                lambda: (
                    (cluster.status() or {}).get("workers") == []
                    and (cluster.status() or {})["broker"]["requests_held"] == 1
                ),
                what="the unreachable worker removed, its request held",
            )
            cluster.worker("EchoAPI", 1)
            response = answer.result(30)
        assert response.status_code == 200 and response.json()["echo"] == "rerouted"
        counters = (cluster.status() or {})["counters"]
        assert counters.get("unreachable_workers") == 1 and counters.get("resent", 0) >= 1
        metrics = requests.get(cluster.url("/metrics"), timeout=10).text
        assert "zeroserve_broker_unreachable_workers_total 1.0" in metrics
        assert "removed (a request could not reach it)" in cluster.logs()
    finally:
        stop.set()
        beating.join()
        control.close()


def test_requests_wait_for_the_replacement_of_a_services_only_worker(cluster: Cluster) -> None:
    """Its only worker killed, a service's requests wait for the one its launcher starts (as
    long as the lost worker's heartbeats would have kept it: 20 x 0.2 s here), not refused
    with 503: each is answered 200."""
    cluster.up("EchoAPI", 1, broker_args=("--heartbeat-liveness", "20"))
    (pid,) = worker_pids(cluster.procs[1][1])
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not running(pid), what="the worker to be dead (its sockets closed)")
    with ThreadPoolExecutor(5) as pool:
        first = pool.submit(cluster.post, {"value": 0})
        # Found gone at the request it could not be given; or, when that request went into the
        # connection in the instant before ZeroMQ let it go, by its silence (4 s).
        wait_until(lambda: gone(cluster), what="the broker to find the worker gone")
        answers = [first, *(pool.submit(cluster.post, {"value": i}) for i in range(1, 5))]
        got = [(a.result(30).status_code, a.result().json().get("echo")) for a in answers]
    assert got == [(200, i) for i in range(5)]
    snapshot = cluster.status() or {}
    assert [w["pid"] for w in snapshot["workers"]] != [pid]
    assert gone(cluster) == 1, snapshot["counters"]


def gone(cluster: Cluster) -> int:
    """Workers the broker found gone without a goodbye."""
    counters = (cluster.status() or {}).get("counters", {})
    return counters.get("unreachable_workers", 0) + counters.get("dead_workers", 0)


def running(pid: int) -> bool:
    """Alive, not a zombie its parent has yet to reap."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
