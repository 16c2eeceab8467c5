"""A rollout through real processes: version 1 serves, version 2 starts, 10% then 100% of the
traffic shifts to it, version 1 drains, all under continuous load, with one broker of two
killed on the way in the second test. No answer may fail, every answer must be right, and
each must name the version the weights at the time send it to."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

from cluster import Cluster, run_cli, wait_until

SERVICE = "EchoAPI"
#: Answers to requests sent within this long of a change may follow the split before it
#: (a heartbeat of the test clusters, and then some for the CLI's round trips).
SETTLE_S = 0.5
#: Each client's pause between its requests: a steady load that leaves the machine's cores to
#: the cluster's processes (the assertions count answers, never their rate).
PACE_S = 0.01


@dataclass
class Answer:
    began: float
    status: int
    right: bool
    version: str


@dataclass
class Load:
    """Clients posting one request after another until stopped, each answer recorded."""

    cluster: Cluster
    clients: int = 4
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for k in range(self.clients):
            thread = threading.Thread(target=self._client, args=(k,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[Answer]:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        return self.answers

    def _client(self, k: int) -> None:
        session = requests.Session()
        i = k
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                r = session.post(self.cluster.url(), json={"value": i}, timeout=30)
                answer = Answer(
                    began,
                    r.status_code,
                    r.status_code == 200 and r.json().get("echo") == i,
                    r.headers.get("X-Model-Version", ""),
                )
            except requests.RequestException as exc:
                answer = Answer(began, 0, False, repr(exc))
            with self._lock:
                self.answers.append(answer)
            i += self.clients
            self._stop.wait(PACE_S)

    def since(self, t: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.began >= t]

    def collect(self, count: int, after: float | None = None) -> tuple[float, list[Answer]]:
        """Wait for `count` answers to requests sent from `after` (default: a settle from
        now); returns that start and the answers."""
        start = (time.monotonic() + SETTLE_S) if after is None else after
        wait_until(lambda: len(self.since(start)) >= count, 60, f"{count} answers")
        return start, self.since(start)


def versions(answers: list[Answer]) -> dict[str, int]:
    seen: dict[str, int] = {}
    for a in answers:
        seen[a.version] = seen.get(a.version, 0) + 1
    return seen


def share_of(version: str, answers: list[Answer]) -> float:
    return sum(a.version == version for a in answers) / len(answers)


def route(*args: str) -> None:
    out = run_cli("route", SERVICE, *args)
    assert out.returncode == 0, out.stderr


def workers_of(cluster: Cluster, version: str, endpoint: str | None = None) -> int:
    """Workers of `version` that take new work, as the broker (its frontend side) sees them."""
    from zeroserve.common.status_client import BrokerUnreachable, fetch_status

    try:
        snapshot = fetch_status(endpoint or cluster.frontend_endpoint, timeout_s=0.5)
    except BrokerUnreachable:
        return 0
    return sum(
        w["model_version"] == version and w["state"] != "draining" for w in snapshot["workers"]
    )


def test_without_weights_the_newest_version_takes_all_and_a_request_may_pin_one(
    cluster: Cluster,
) -> None:
    cluster.up("EchoAPI", 1, worker_args=("--version", "9"))
    assert cluster.post({"value": 1}).headers["X-Model-Version"] == "9"
    cluster.worker("EchoAPI", 1, "--version", "10")
    wait_until(lambda: workers_of(cluster, "10") == 1, what="version 10 ready")
    # "10" is newer than "9": digit runs compare as numbers.
    assert {cluster.post({"value": i}).headers["X-Model-Version"] for i in range(10)} == {"10"}
    pinned = cluster.post({"value": 2}, headers={"X-Model-Version": "9"})
    assert (pinned.status_code, pinned.json(), pinned.headers["X-Model-Version"]) == (
        200,
        {"echo": 2, **{k: pinned.json()[k] for k in ("pid", "host")}},
        "9",
    )
    missing = cluster.post({"value": 3}, headers={"X-Model-Version": "7"})
    assert missing.status_code == 404 and "'7'" in missing.json()["detail"]
    bad = cluster.post({"value": 3}, headers={"X-Model-Version": "a b"})
    assert bad.status_code == 400
    # A worker's error names its version too.
    refused = cluster.post({"op": "http", "status": 418})
    assert (refused.status_code, refused.headers["X-Model-Version"]) == (418, "10")
    table = run_cli("status", "--broker", cluster.frontend_endpoint)
    assert "9:1 10:1 (newest 10)" in table.stdout, table.stdout
    # A misspelt service: a drain says so and fails; a split is kept for it, with a word.
    broker = ("--broker", cluster.frontend_endpoint)
    typo = run_cli("drain", "EchoAP", *broker, "--version", "9")
    assert typo.returncode == 1 and "no service 'EchoAP' here (services: EchoAPI)" in typo.stderr
    nothing = run_cli("drain", "EchoAPI", *broker, "--version", "8")
    assert nothing.returncode == 1 and "no worker of 'EchoAPI' has version '8'" in nothing.stderr
    kept = run_cli("route", "EchoAP", *broker, "--weights", "1=100")
    assert kept.returncode == 0 and "no worker of it has joined" in kept.stdout, kept.stderr


def test_the_version_is_the_flag_else_the_apis_attribute_else_1() -> None:
    from zeroserve.common.errors import ConfigError
    from zeroserve.worker.config import WorkerConfig
    from zeroserve.worker.loader import resolve_settings

    from apis import EchoAPI

    class Versioned(EchoAPI):
        version = 3

    def version(api: object, flag: str | None = None) -> str:
        return resolve_settings(api, WorkerConfig(brokers=(), api="x", version=flag)).version

    assert (version(EchoAPI()), version(Versioned()), version(Versioned(), "2026-01")) == (
        "1",
        "3",
        "2026-01",
    )
    Versioned.version = None  # type: ignore[assignment]
    assert version(Versioned()) == "1"
    Versioned.version = "a b"  # type: ignore[assignment]
    with pytest.raises(ConfigError, match=r"Versioned\.version must be"):
        version(Versioned())


def test_a_rollout_under_load_fails_nothing_and_follows_the_weights(cluster: Cluster) -> None:
    cluster.up("EchoAPI", 2, worker_args=("--version", "1"))
    v1 = cluster.procs[1][1]
    route("--broker", cluster.frontend_endpoint, "--weights", "1=100")
    load = Load(cluster).start()
    try:
        _, before = load.collect(100)
        cluster.worker("EchoAPI", 1, "--version", "2")
        wait_until(lambda: workers_of(cluster, "2") == 1, what="version 2 ready")
        _, ready = load.collect(100)
        route("--broker", cluster.frontend_endpoint, "--weights", "1=90,2=10")
        _, tenth = load.collect(300)
        route("--broker", cluster.frontend_endpoint, "--weights", "2=100")
        _, whole = load.collect(100)
        # Requests pinned to version 1 that it holds when it drains are finished.
        held = [
            threading.Thread(
                target=lambda i=i: pinned.append(
                    cluster.post(
                        {"op": "sleep", "seconds": 1.0, "value": i},
                        headers={"X-Model-Version": "1"},
                    )
                )
            )
            for i in range(2)
        ]
        pinned: list[requests.Response] = []
        for thread in held:
            thread.start()
        wait_until(
            lambda: (
                sum(
                    w["in_flight"]
                    for w in (cluster.status() or {}).get("workers", [])
                    if w["model_version"] == "1"
                )
                >= 2
            ),
            what="the pinned requests at version 1",
        )
        out = run_cli("drain", SERVICE, "--broker", cluster.frontend_endpoint, "--version", "1")
        assert out.returncode == 0 and "2 worker(s) draining" in out.stdout, out.stderr
        assert v1.wait(30) == 0, "the launcher of version 1 exits 0 once drained"
        for thread in held:
            thread.join(30)
        _, after = load.collect(100)
    finally:
        answers = load.stop()
    assert [(r.status_code, r.headers["X-Model-Version"]) for r in pinned] == [(200, "1")] * 2
    assert all(a.status == 200 and a.right for a in answers), [a for a in answers if not a.right][
        :5
    ]
    assert versions(before) == {"1": len(before)}
    assert versions(ready) == {"1": len(ready)}, "a weight of 100 keeps all on version 1"
    assert 0.02 <= share_of("2", tenth) <= 0.25, versions(tenth)
    assert versions(whole) == {"2": len(whole)}
    assert versions(after) == {"2": len(after)}
    assert workers_of(cluster, "1") == 0


def test_a_rollout_over_two_brokers_survives_one_killed_in_the_middle(
    cluster: Cluster,
) -> None:
    cluster.broker("--weights", f"{SERVICE}:1=100")
    a_front, a_back = cluster.frontend_endpoint, cluster.backend_endpoint
    cluster.broker("--weights", f"{SERVICE}:1=100")
    b_front, b_back = cluster.frontend_endpoint, cluster.backend_endpoint
    b_ports = tuple(int(e.rsplit(":", 1)[1]) for e in (b_front, b_back))
    broker_b = cluster.procs[1][1]
    v1 = cluster.worker("EchoAPI", 2, "--broker", a_back, "--version", "1")
    cluster.frontend("--broker", a_front)
    wait_until(lambda: workers_of(cluster, "1", a_front) == 2, what="version 1 at broker A")
    cluster.wait_healthy(2)
    both = ("--broker", a_front, "--broker", b_front)
    load = Load(cluster).start()
    try:
        _, before = load.collect(100)
        cluster.worker("EchoAPI", 1, "--broker", a_back, "--version", "2")
        wait_until(
            lambda: workers_of(cluster, "2", a_front) == workers_of(cluster, "2", b_front) == 1,
            what="version 2 ready at both brokers",
        )
        route(*both, "--weights", "1=90,2=10")
        _, tenth = load.collect(300)
        cluster.stop(broker_b, signal.SIGKILL)
        _, tenth_one_broker = load.collect(200)
        # A broker that is down is named, and the split is set at the others.
        out = run_cli("route", SERVICE, *both, "--weights", "2=100", "--timeout", "0.5")
        assert out.returncode == 1 and f"{b_front}: error" in out.stderr, out.stderr
        _, whole = load.collect(100)
        # Back with the split on its command line, it sends nothing to version 1 either.
        cluster.broker("--weights", f"{SERVICE}:2=100", ports=b_ports)  # type: ignore[arg-type]
        wait_until(
            lambda: workers_of(cluster, "2", b_front) == 1 and workers_of(cluster, "1", b_front),
            what="the workers back at broker B",
        )
        _, whole_again = load.collect(200)
        out = run_cli("drain", SERVICE, *both, "--version", "1")
        assert out.returncode == 0, out.stderr
        assert v1.wait(30) == 0
        _, after = load.collect(100)
    finally:
        answers = load.stop()
    assert all(a.status == 200 and a.right for a in answers), [a for a in answers if not a.right][
        :5
    ]
    assert versions(before) == {"1": len(before)}
    assert 0.02 <= share_of("2", tenth) <= 0.25, versions(tenth)
    assert 0.02 <= share_of("2", tenth_one_broker) <= 0.25, versions(tenth_one_broker)
    assert versions(whole) == {"2": len(whole)}
    assert versions(whole_again) == {"2": len(whole_again)}
    assert versions(after) == {"2": len(after)}
