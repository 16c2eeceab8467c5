"""A chaos run: under steady load, processes of every role of a two-broker cluster are killed
(-9) or stopped and continued, one at a time, and every request still ends exactly once with
its own answer or a retryable 503, while the processes left alone keep a flat memory."""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from collections import Counter
from typing import Any

import psutil
import requests
from ports import free_port

from zeroserve.common.status_client import BrokerUnreachable, fetch_status

from cluster import HEARTBEAT, Cluster, api, wait_until, worker_pids

SECONDS = 30.0
CLIENTS = 6
SEED = int(os.environ.get("ZEROSERVE_CHAOS_SEED", "20261206"))


class ChaosCluster:
    """Brokers a and b, a launcher of one worker process on each (registered with both), and
    two frontends given both brokers; each process restartable on its own ports."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.brokers = {name: (free_port(), free_port()) for name in ("a", "b")}
        self.http_ports = [free_port(), free_port()]
        self.procs: dict[str, Any] = {}

    def endpoints(self, side: int) -> list[str]:
        flags = []
        for ports in self.brokers.values():
            flags += ["--broker", f"tcp://127.0.0.1:{ports[side]}"]
        return flags

    def start(self, role: str) -> None:
        kind, _, name = role.partition(" ")
        if kind == "broker":
            self.procs[role] = self.cluster.broker(ports=self.brokers[name])
        elif kind == "launcher":
            self.procs[role] = self.cluster.start(
                "worker", "worker", *self.endpoints(1), "--api", api("EchoAPI"),
                "--processes", "1", *HEARTBEAT,
            )  # fmt: skip
        else:
            port = self.http_ports[int(name)]
            self.procs[role] = self.cluster.start(
                "frontend", "frontend", *self.endpoints(0), "--port", str(port), *HEARTBEAT
            )

    def healthy(self) -> bool:
        """Both brokers see the worker of each launcher running now ready, and both frontends
        answer."""
        pids = {pid for role, pid in self.targets() if role.startswith("worker")}
        if len(pids) < 2:
            return False
        for front, _ in self.brokers.values():
            try:
                snapshot = fetch_status(f"tcp://127.0.0.1:{front}", timeout_s=0.5)
            except BrokerUnreachable:
                return False
            ready = {w["pid"] for w in snapshot.get("workers", []) if w["state"] != "draining"}
            if not pids <= ready:
                return False
        for port in self.http_ports:
            try:
                requests.get(f"http://127.0.0.1:{port}/health", timeout=1).raise_for_status()
            except requests.RequestException:
                return False
        return True

    def targets(self) -> list[tuple[str, int]]:
        """Every process that may be hit: (role, pid)."""
        found = [(role, proc.pid) for role, proc in self.procs.items()]
        for role, proc in list(self.procs.items()):
            if role.startswith("launcher"):
                found += [(f"worker of {role}", pid) for pid in worker_pids(proc)]
        return found


class Load:
    """Clients that each send numbered requests in turn to either frontend, retrying a
    request whose connection failed (its frontend died) until it gets an answer."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.numbers = itertools.count()
        self.outcomes: dict[int, tuple[int, Any]] = {}
        self.slowest = 0.0
        self.retried = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def ask(self, number: int) -> tuple[int, Any]:
        body = {"value": number, "op": "sleep", "seconds": 0.005}
        for attempt in itertools.count():
            port = self.ports[(number + attempt) % len(self.ports)]
            try:
                r = requests.post(f"http://127.0.0.1:{port}/predict", json=body, timeout=60)
            except requests.ConnectionError:
                with self.lock:
                    self.retried += 1
                time.sleep(0.05)  # poll: back off before asking the other frontend
                continue
            if r.status_code == 200:
                return r.status_code, r.json()
            retry = (
                f" (Retry-After {r.headers['Retry-After']})" if "Retry-After" in r.headers else ""
            )
            return r.status_code, r.text + retry
        raise AssertionError("unreachable")

    def client(self) -> None:
        while not self.stop.is_set():
            number = next(self.numbers)
            began = time.monotonic()
            outcome = self.ask(number)
            with self.lock:
                assert number not in self.outcomes
                self.outcomes[number] = outcome
                self.slowest = max(self.slowest, time.monotonic() - began)


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def test_chaos_every_request_ends_once_with_its_own_answer(cluster: Cluster) -> None:
    rng = random.Random(SEED)
    chaos = ChaosCluster(cluster)
    roles = ["broker a", "broker b", "launcher 1", "launcher 2", "frontend 0", "frontend 1"]
    for role in roles:
        chaos.start(role)
    wait_until(chaos.healthy, 30, "the whole cluster to serve")

    load = Load(chaos.http_ports)
    threads = [threading.Thread(target=load.client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    wait_until(lambda: len(load.outcomes) > 200, 30, "the load to run")
    memory_before = {pid: rss_mb(pid) for _, pid in chaos.targets()}

    faults: Counter[str] = Counter()
    hit: set[int] = set()
    ends = time.monotonic() + SECONDS
    while time.monotonic() < ends:
        role, pid = rng.choice(chaos.targets())
        kind = role.split(" ")[0]
        hit.add(pid)
        if rng.random() < 0.5:
            faults[f"kill -9 {kind}"] += 1
            os.kill(pid, signal.SIGKILL)
            if role in chaos.procs:
                chaos.procs[role].wait(10)
                chaos.start(role)
        else:
            faults[f"stop {kind}"] += 1
            os.kill(pid, signal.SIGSTOP)
            time.sleep(rng.uniform(0.2, 1.5))  # the fault itself: stopped this long
            os.kill(pid, signal.SIGCONT)
        wait_until(chaos.healthy, 30, f"the cluster to heal after a fault of {role}")
        served = len(load.outcomes)
        wait_until(lambda s=served: len(load.outcomes) > s + 20, 30, "requests served again")

    load.stop.set()
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads), "a client never got its answer"

    codes = Counter(status for status, _ in load.outcomes.values())
    total = len(load.outcomes)
    print(
        f"\nchaos (seed {SEED}): {total} requests, faults {dict(faults)}, answers by status "
        f"{dict(codes)}, {load.retried} re-sent after a frontend died, slowest "
        f"{load.slowest * 1000:.0f} ms"
    )
    bodies = Counter(
        f"{status} {answer}" for status, answer in load.outcomes.values() if status != 200
    )
    print(f"non-2xx answers: {dict(bodies)}")
    assert sorted(load.outcomes) == list(range(total)), "a request got no answer"
    wrong = {n: answer for n, (status, answer) in load.outcomes.items()
             if status == 200 and answer["echo"] != n}  # fmt: skip
    assert not wrong, f"answers that belong to other requests: {wrong}"
    assert set(codes) <= {200, 503}, f"answers other than 200 or a retryable 503: {codes}"
    assert all("Retry-After" in body for body in bodies), f"a 503 without Retry-After: {bodies}"
    assert codes[200] >= 0.9 * total
    assert sum(faults.values()) >= 5

    survivors = {pid: mb for pid, mb in memory_before.items() if pid not in hit}
    grown = {}
    for pid, before in survivors.items():
        if psutil.pid_exists(pid):
            after = rss_mb(pid)
            if after > before + 20:
                grown[pid] = (round(before), round(after))
    assert not grown, f"processes whose memory grew (MB before, after): {grown}"
