"""Many hosts for real: broker, worker hosts, frontend and client, each with its own network."""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import Topology, unavailable_reason

from cluster import api, wait_until

REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no test hosts here: {REASON}")

HEARTBEAT = ("--heartbeat-interval", "0.2", "--heartbeat-liveness", "3")


@pytest.fixture
def hosts(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Topology]:
    topology = Topology(tmp_path)
    # The brokers listen beyond loopback (inside the namespaces): peers join with a token.
    token = tmp_path / "token"
    token.write_text(secrets.token_urlsafe(32))
    token.chmod(0o600)
    joined = ("--token-file", str(token))
    try:
        for name in ("broker", "host-b", "host-c", "frontend", "client"):
            topology.add_host(name)
        broker = topology.address("broker")
        topology.cluster(
            "broker",
            "broker",
            "broker",
            "--frontend-bind",
            f"tcp://{broker}:5555",
            "--backend-bind",
            f"tcp://{broker}:5556",
            *joined,
            *HEARTBEAT,
        )
        for worker_host in ("host-b", "host-c"):
            topology.cluster(
                worker_host,
                "worker",
                "worker",
                "--broker",
                f"tcp://{broker}:5556",
                "--api",
                api("EchoAPI"),
                "--processes",
                "2",
                *joined,
                *HEARTBEAT,
            )
        topology.cluster(
            "frontend",
            "frontend",
            "frontend",
            "--broker",
            f"tcp://{broker}:5555",
            "--host",
            topology.address("frontend"),
            "--port",
            "8000",
            *joined,
            *HEARTBEAT,
        )
        yield topology
    finally:
        close(topology, request)


def close(topology: Topology, request: pytest.FixtureRequest) -> None:
    """Tear the hosts down; the logs of every process are printed when the test failed."""
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(topology.logs_text())
    topology.close()


def status(hosts: Topology) -> dict:
    endpoint = f"tcp://{hosts.address('broker')}:5555"
    return hosts.status("client", endpoint, hosts.logs / "token") or {}


def workers_by_host(hosts: Topology) -> dict[str, set[int]]:
    by_host: dict[str, set[int]] = {}
    for worker in status(hosts).get("workers", []):
        if worker["state"] != "draining":
            by_host.setdefault(worker["host"], set()).add(worker["pid"])
    return by_host


def url(hosts: Topology) -> str:
    return f"http://{hosts.address('frontend')}:8000/predict"


def load(hosts: Topology, count: int, concurrency: int = 8, seconds: float = 0.02) -> list[dict]:
    return hosts.client("client", "load", url(hosts), str(count), str(concurrency), str(seconds))


def wait_for_both_hosts(hosts: Topology) -> None:
    wait_until(
        lambda: (
            {h: len(p) for h, p in workers_by_host(hosts).items()} == {"host-b": 2, "host-c": 2}
        ),
        timeout_s=60,
        what="two workers on each worker host",
    )
    wait_until(lambda: len(status(hosts).get("frontends", [])) == 1, what="the frontend")


def test_requests_are_served_by_workers_of_both_hosts(hosts: Topology) -> None:
    wait_for_both_hosts(hosts)
    results = load(hosts, 200)
    assert [(r["status"], r["echo"]) for r in results] == [(200, i) for i in range(200)]
    served = Counter(r["host"] for r in results)
    assert set(served) == {"host-b", "host-c"}, served
    # What an operator types, from a host of its own.
    printed = hosts.run_cli(
        "client",
        "status",
        "--broker",
        f"tcp://{hosts.address('broker')}:5555",
        "--json",
        "--token-file",
        str(hosts.logs / "token"),
    )
    snapshot = json.loads(printed)
    by_host: dict[str, set[int]] = {}
    for worker in snapshot["workers"]:
        by_host.setdefault(worker["host"], set()).add(worker["pid"])
    assert set(by_host) == {"host-b", "host-c"} and all(len(p) == 2 for p in by_host.values())
    assert {r["pid"] for r in results} == by_host["host-b"] | by_host["host-c"]
    assert snapshot["broker"]["host"] == "broker"
    assert {f["host"] for f in snapshot["frontends"]} == {"frontend"}
    print(f"requests served per host: {dict(served)}")


def test_a_host_whose_link_goes_down_loses_no_request_and_rejoins(hosts: Topology) -> None:
    wait_for_both_hosts(hosts)
    # 400 requests of 50 ms on four processes: seconds of load, for a status (a process
    # started in the client's namespace each time) to see host-b at work.
    background = hosts.client_background("client", "load", url(hosts), "400", "8", "0.05")
    wait_until(
        lambda: any(w["host"] == "host-b" and w["in_flight"] for w in status(hosts)["workers"]),
        what="host-b to hold work",
    )
    hosts.set_link("host-b", up=False)
    out, err = background.communicate(timeout=120)
    results = json.loads(out)
    assert [(r["status"], r["echo"]) for r in results] == [(200, i) for i in range(400)], err
    # What host-b held moved to host-c once the broker gave its workers up for their missed
    # heartbeats (the rule, clock passed in: test_broker_peers.py), and was re-sent.
    snapshot = status(hosts)
    assert "host-b" not in {w["host"] for w in snapshot["workers"]}
    assert snapshot["counters"].get("dead_workers", 0) >= 2, snapshot["counters"]
    assert snapshot["counters"].get("resent", 0) >= 1, snapshot["counters"]
    slowest = max(r["seconds"] for r in results)
    print(f"link down: 400/400 answered, slowest {slowest:.2f} s")

    hosts.set_link("host-b", up=True)
    wait_for_both_hosts(hosts)

    def host_b_serves() -> bool:
        return any(r["host"] == "host-b" for r in load(hosts, 40))

    wait_until(host_b_serves, what="host-b to get work again")


def test_a_slow_link_gets_less_work(hosts: Topology) -> None:
    wait_for_both_hosts(hosts)
    shaping = hosts.shape("host-c")
    results = load(hosts, 300, concurrency=16, seconds=0.005)
    assert all(r["status"] == 200 for r in results)
    served = Counter(r["host"] for r in results)
    print(f"with host-c shaped by {shaping}: requests per host {dict(served)}")
    assert served["host-c"] < served["host-b"], served


@pytest.fixture
def two_brokers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Topology]:
    """Brokers on two hosts, a worker host and a frontend given both, and a client."""
    topology = Topology(tmp_path)
    token = tmp_path / "token"
    token.write_text(secrets.token_urlsafe(32))
    token.chmod(0o600)
    joined = ("--token-file", str(token), *HEARTBEAT)
    try:
        for name in ("broker", "broker-2", "host-b", "frontend", "client"):
            topology.add_host(name)
        brokers = [topology.address(name) for name in ("broker", "broker-2")]
        for name, address in zip(("broker", "broker-2"), brokers, strict=True):
            binds = ("--frontend-bind", f"tcp://{address}:5555", "--backend-bind")
            topology.cluster(name, name, "broker", *binds, f"tcp://{address}:5556", *joined)
        each = [flag for address in brokers for flag in ("--broker", f"tcp://{address}:5556")]
        topology.cluster(
            "host-b", "worker", "worker", *each, "--api", api("EchoAPI"), "--processes", "2",
            *joined,
        )  # fmt: skip
        each = [flag for address in brokers for flag in ("--broker", f"tcp://{address}:5555")]
        frontend = ("--host", topology.address("frontend"), "--port", "8000")
        topology.cluster("frontend", "frontend", "frontend", *each, *frontend, *joined)
        yield topology
    finally:
        close(topology, request)


def test_a_broker_host_whose_link_goes_down_loses_no_request(two_brokers: Topology) -> None:
    hosts = two_brokers

    def workers_of(broker: str) -> list[dict]:
        endpoint = f"tcp://{hosts.address(broker)}:5555"
        snapshot = hosts.status("client", endpoint, hosts.logs / "token") or {}
        return snapshot.get("workers", [])

    wait_until(
        lambda: len(workers_of("broker")) == len(workers_of("broker-2")) == 2,
        timeout_s=60,
        what="both worker processes registered with both brokers",
    )
    background = hosts.client_background("client", "load", url(hosts), "400", "8", "0.02")
    wait_until(
        lambda: any(w["in_flight"] for w in workers_of("broker")), what="the broker to hold work"
    )
    hosts.set_link("broker", up=False)
    out, err = background.communicate(timeout=120)
    results = json.loads(out)
    assert [(r["status"], r["echo"]) for r in results] == [(200, i) for i in range(400)], err
    slowest = max(r["seconds"] for r in results)
    print(f"broker host's link down: 400/400 answered through the other, slowest {slowest:.2f} s")
