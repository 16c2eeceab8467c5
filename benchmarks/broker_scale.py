"""The broker at a thousand workers: what a request costs the broker as workers are added.

    python benchmarks/broker_scale.py           # 1, 10, 100 and 1000 workers; 1, 2 and 4 brokers
    python benchmarks/broker_scale.py --workers 1,1000 --brokers 1 --duration 5

Each run starts real `cluster broker` processes on free loopback ports, secured by a join
token (CurveZMQ) as `cluster broker --token-file` makes one. A second process plays the
workers: for every worker identity a data socket to each broker, opened as a real worker
opens it (``open_dealer`` with its routing id and the token's keys), that says READY with its
capacity split between the brokers, heartbeats at the broker's interval, and answers each
REQUEST at once with a REPLY. This process plays the frontends: a DEALER to each broker that
heartbeats as a frontend does and keeps --window requests outstanding there (new ones go
as answers come back), so the brokers, not the workers, are the limit.

For each count it prints the requests answered per second, the brokers' CPU time (user +
system, psutil) per request over the measured run, and that cost against the 1-worker run's;
the same for the brokers' main threads alone (where requests are dispatched; ZeroMQ's I/O
threads do the rest). Every message is built and parsed by common/protocol.py, as in the
real processes. First, without sockets, what the broker's request table (broker/inflight.py)
spends on a request (accepted, dispatched, answered) in this process: the best of several
batches, so that a busy machine disturbs it least.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import zmq

from zeroserve.broker.inflight import Inflight, Policy
from zeroserve.broker.registry import MAX_CAPACITY, Registry, WorkerRecord, parse_ready
from zeroserve.broker.requests import BrokerRequest
from zeroserve.common import protocol as p
from zeroserve.common.connection import open_dealer
from zeroserve.common.security import (
    TOKEN_ENV,
    CurveKeys,
    broker_token_keys,
    peer_token_keys,
    token_from_file,
)
from zeroserve.up import free_port

SERVICE = "bench"
ROUTE = {"path": "/predict", "methods": ["POST"]}
BODY = b'{"input": 4.0}'
ANSWER = b'{"output": 16.0}'
#: The heartbeat interval of every process here by default, as of the real ones.
HEARTBEAT_S = 1.0


# -- the request table alone -------------------------------------------------------------------


class _Wire:
    """The request table's wire, keeping only what went to workers."""

    def __init__(self) -> None:
        self.sent: collections.deque[tuple[WorkerRecord, tuple[bytes, bytes]]] = collections.deque()

    def send_request(self, worker: WorkerRecord, request: BrokerRequest) -> None:
        self.sent.append((worker, request.key))

    def send_cancel(self, worker: bytes, request: BrokerRequest) -> None:
        pass

    def forward(self, request: BrokerRequest, command: bytes, meta: Any, body: Any) -> None:
        pass

    def refuse(self, frontend: bytes, rid: bytes, status: int, why: str, *_: Any) -> None:
        raise AssertionError(why)


def table_alone(workers: int, window: int, seconds: float = 0.5) -> float:
    """Seconds the request table spends per request with `workers` workers and `window`
    requests held, answered in the order sent: the best batch of 500 over about `seconds`."""
    registry = Registry(max_queue=window)
    ready = parse_ready({"service": SERVICE, "routes": [ROUTE], "capacity": window})
    for n in range(workers):
        registry.add_worker(b"W%d" % n, ready, {}, 0.0)
    wire = _Wire()
    table = Inflight(registry, wire, Policy(), collections.Counter())
    service = registry.services[SERVICE]
    meta = {"service": SERVICE, "timeout_ms": 10**9}
    frame = p.pack_meta(meta)  # as it came from the frontend
    rids = (b"%d" % n for n in itertools.count())
    for _ in range(window):
        table.accept(b"F", next(rids), meta, BODY, 0.0, meta_frame=frame)
    best, end, batches = float("inf"), time.monotonic() + seconds, 0
    while batches < 3 or time.monotonic() < end:
        start = time.perf_counter()
        for _ in range(500):
            worker, key = wire.sent.popleft()
            if table.answer(worker, p.REPLY, key, [p.EMPTY_META, ANSWER]):
                table.dispatch(service)
            table.accept(b"F", next(rids), meta, BODY, 0.0, meta_frame=frame)
        best, batches = min(best, (time.perf_counter() - start) / 500), batches + 1
    return best


# -- the workers (a process of their own) ----------------------------------------------------


def play_workers(
    endpoints: list[str], token: str, count: int, capacity: int, heartbeat_s: float
) -> None:
    """`count` workers, each with a data socket to every broker; runs until killed."""
    context = zmq.Context()
    context.MAX_SOCKETS = count * len(endpoints) + 64
    keys = peer_token_keys(token)
    ready = p.ready(
        {
            "service": SERVICE,
            "routes": [ROUTE],
            # As a real worker splits its slots between the brokers.
            "capacity": max(1, -(-capacity // len(endpoints))),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "loop": "sync",
            "device": "cpu",
            "heartbeat_interval_s": heartbeat_s,
        }
    )
    socks: dict[int, zmq.Socket] = {}
    #: Each worker's heartbeat names it, as a real worker's does.
    beats: dict[int, list[Any]] = {}

    def beat_all() -> None:
        for fd, sock in socks.items():
            sock.send_multipart(beats[fd])

    poller = select.epoll()
    next_beat = time.monotonic() + heartbeat_s / 2
    for n in range(count):
        identity = b"W" + n.to_bytes(4, "big") + os.urandom(11)
        for endpoint in endpoints:
            sock = open_dealer(context, endpoint, keys, routing_id=identity, reconnect_max_s=0.0)
            sock.send_multipart(ready)
            socks[sock.FD] = sock
            beats[sock.FD] = p.heartbeat({"worker": identity, "in_flight": 0, "healthy": True})
            poller.register(sock.FD, select.EPOLLIN)
        if time.monotonic() >= next_beat:  # those that joined stay while the rest join
            next_beat = time.monotonic() + heartbeat_s / 2
            beat_all()
    reply_meta: p.AnswerMeta = {"ct": "application/json"}
    next_beat = time.monotonic() + heartbeat_s
    dirty = list(socks.values())  # sockets to read until empty (their FD is edge-triggered)
    while True:
        for sock in dirty:
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                command, args = p.parse(frames, p.TO_WORKER)
                if command == p.REQUEST:
                    client, rid = args[0], args[1]
                    sock.send_multipart(p.answer(p.REPLY, client, rid, reply_meta, ANSWER))
                elif command == p.ANNOUNCE:  # the broker forgot this worker: join again
                    sock.send_multipart(ready)
                elif command == p.REFUSED:
                    sys.exit(f"a broker refused a worker: {p.parse_refusal(args[0])[1]}")
        now = time.monotonic()
        if now >= next_beat:
            next_beat = now + heartbeat_s
            beat_all()
            dirty = list(socks.values())
            continue
        dirty = [socks[fd] for fd, _ in poller.poll(max(0.0, next_beat - now))]


# -- the baseline: the least a relay on the same sockets can do (a process of its own) --------


def play_relay(front: str, back: str, token: str) -> None:
    """A relay with none of the broker's rules: the same two ROUTERs, keys and frames, each
    request sent to the next worker in turn (every worker has a window's slots, as in the
    broker runs). What it costs is what ZeroMQ and the frames cost; what the broker spends
    beyond it is the broker's own. Runs until killed."""
    context = zmq.Context()
    keys = broker_token_keys(token)
    frontends, backends = context.socket(zmq.ROUTER), context.socket(zmq.ROUTER)
    for sock, endpoint in ((frontends, front), (backends, back)):
        sock.setsockopt(zmq.LINGER, 0)
        keys.apply_server(sock)
        sock.bind(endpoint)
    workers: list[bytes] = []
    known: set[bytes] = set()
    turn = 0
    poller = zmq.Poller()
    poller.register(frontends, zmq.POLLIN)
    poller.register(backends, zmq.POLLIN)
    while True:
        for sock, _ in poller.poll():
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                peer = frames[0]
                if sock is frontends:
                    command, args = p.parse(frames[1:], p.FROM_FRONTEND)
                    if command == p.REQUEST and workers:
                        worker = workers[turn % len(workers)]
                        turn += 1
                        meta = p.unpack_request_meta(args[1])  # as a broker reads it
                        frames = p.request_to_worker(
                            worker, peer, args[0], args[1], args[2],
                            timeout_ms=meta.get("timeout_ms", 0), attempt=1,
                        )  # fmt: skip
                        backends.send_multipart(frames)
                    elif command == p.HEARTBEAT:
                        table: p.RoutesMeta = {"services": {SERVICE: {"workers": len(workers)}}}
                        frontends.send_multipart([peer, *p.routes(table)])
                    continue
                command, args = p.parse(frames[1:], p.FROM_WORKER)
                if command in p.ANSWERS:
                    frontends.send_multipart(p.answer_to_frontend(args[0], command, *args[1:]))
                elif command == p.READY and peer not in known:
                    known.add(peer)
                    workers.append(peer)


# -- the brokers -------------------------------------------------------------------------------


class Brokers:
    """`count` `cluster broker` processes sharing one token, each in its own process group."""

    def __init__(self, count: int, folder: Path, heartbeat_s: float, bare: bool = False) -> None:
        self.bare = bare
        self.procs: list[subprocess.Popen] = []
        self.frontends: list[str] = []
        self.backends: list[str] = []
        self.token_file = folder / "token"
        self.logs = [folder / f"broker-{n}.log" for n in range(count)]
        try:
            self._start(count, heartbeat_s)
        except BaseException:
            self.stop()
            raise
        self.token = token_from_file(str(self.token_file))
        self.ps = [psutil.Process(proc.pid) for proc in self.procs]

    def _start(self, count: int, heartbeat_s: float) -> None:
        for n in range(count):
            front = f"tcp://127.0.0.1:{free_port()}"
            back = f"tcp://127.0.0.1:{free_port()}"
            if self.bare:
                token = token_from_file(str(self.token_file), create=True)
                command = [sys.executable, __file__, "--play-relay", f"{front},{back}"]
            else:
                token = None
                command = [
                    *(sys.executable, "-m", "zeroserve", "broker", "--frontend-bind", front),
                    *("--backend-bind", back, "--token-file", str(self.token_file)),
                    *("--heartbeat-interval", str(heartbeat_s), "--log-level", "WARNING"),
                ]
            with open(self.logs[n], "wb") as log:
                proc = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={**os.environ, TOKEN_ENV: token} if token else None,
                )
            self.procs.append(proc)
            self.frontends.append(front)
            self.backends.append(back)
            if n == 0:
                _wait(self.token_file.exists, self.procs, "the broker's token file")

    def cpu_s(self) -> tuple[float, float]:
        """CPU seconds of the brokers, and of their main threads alone (where requests are
        dispatched; ZeroMQ's I/O threads and the authenticator's are the rest)."""
        total = main = 0.0
        for proc in self.ps:
            total += sum(proc.cpu_times()[:2])
            main += sum(t.user_time + t.system_time for t in proc.threads() if t.id == proc.pid)
        return total, main

    def tail(self, lines: int = 5) -> str:
        """The last lines each broker logged (WARNING and up)."""
        return "".join(
            f"broker {n}: {line}\n"
            for n, path in enumerate(self.logs)
            for line in path.read_text(errors="replace").splitlines()[-lines:]
        )

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait(done: Any, procs: list[subprocess.Popen], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if any(proc.poll() is not None for proc in procs):
            raise SystemExit(f"a process ended while waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


# -- the frontends (this process) --------------------------------------------------------------


class Frontends:
    """A frontend's DEALER to each broker, keeping `window` requests outstanding at each."""

    def __init__(
        self, endpoints: list[str], keys: CurveKeys, window: int, heartbeat_s: float
    ) -> None:
        self.context = zmq.Context()
        self.socks = [open_dealer(self.context, e, keys) for e in endpoints]
        self.window = window
        self.ready = [0] * len(self.socks)
        self.answered = 0
        self.errors = 0
        self._ids = itertools.count()
        self._beat = p.heartbeat(
            {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat_interval_s": heartbeat_s}
        )
        self.heartbeat_s = heartbeat_s
        self._next_beat = 0.0
        self.poller = zmq.Poller()
        for sock in self.socks:
            self.poller.register(sock, zmq.POLLIN)

    def close(self) -> None:
        for sock in self.socks:
            sock.send_multipart(p.disconnect("benchmark done"))
            sock.close(0)
        self.context.term()

    def _send(self, sock: zmq.Socket) -> None:
        rid = next(self._ids).to_bytes(8, "big")
        meta: p.RequestMeta = {
            "service": SERVICE,
            "path": ROUTE["path"],
            "method": "POST",
            "ct": "application/json",
            "timeout_ms": 30_000,
            "request_id": rid.hex(),
        }
        sock.send_multipart(p.request(rid, meta, BODY))

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now >= self._next_beat:
            self._next_beat = now + self.heartbeat_s
            for sock in self.socks:
                sock.send_multipart(self._beat)

    def _read(self, n: int, sending: bool) -> None:
        sock = self.socks[n]
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            command, args = p.parse(frames, p.TO_FRONTEND)
            if command == p.ROUTES:
                service = p.unpack_meta(args[0]).get("services", {}).get(SERVICE, {})
                self.ready[n] = service.get("workers", 0)
            elif command in p.TERMINAL:
                self.answered += 1
                self.errors += command == p.ERROR
                if sending:
                    self._send(sock)

    def wait_for_workers(self, count: int, others: list[subprocess.Popen]) -> float:
        """Seconds until `count` workers are ready at every broker."""
        start = time.monotonic()

        def all_joined() -> bool:
            self._heartbeat()
            for n, _ in enumerate(self.socks):
                self._read(n, sending=False)
            return all(ready == count for ready in self.ready)

        _wait(all_joined, others, f"{count} workers to join every broker", timeout_s=120.0)
        return time.monotonic() - start

    def drive(self, seconds: float) -> None:
        """Keep the windows full for `seconds`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._heartbeat()
            for sock, _ in self.poller.poll(100):
                self._read(self.socks.index(sock), sending=True)

    def fill(self) -> None:
        for sock in self.socks:
            for _ in range(self.window):
                self._send(sock)

    def settle(self, timeout_s: float = 10.0) -> None:
        """Let what is outstanding come back (none is sent anew)."""
        expected = self.answered + self.window * len(self.socks)
        end = time.monotonic() + timeout_s
        while self.answered < expected and time.monotonic() < end:
            for sock, _ in self.poller.poll(100):
                self._read(self.socks.index(sock), sending=False)


# -- one run, and the table ------------------------------------------------------------------


def run(
    brokers: int, workers: int, args: argparse.Namespace, bare: bool = False
) -> tuple[float, float, float, int]:
    """Requests per second, the brokers' CPU seconds per request (all threads, and the main
    ones), and errors, of one configuration; `bare`: of the baseline relay instead."""
    # By default each worker has a window's worth of slots at each broker: even one worker
    # never makes a request wait, so every count measures the broker alone.
    capacity = args.capacity or args.window * brokers
    with tempfile.TemporaryDirectory(prefix="broker-scale-") as folder, _cleanup() as procs:
        cluster = Brokers(brokers, Path(folder), args.heartbeat_interval, bare)
        procs.append(cluster)
        player = subprocess.Popen(
            [
                *(sys.executable, __file__, "--play-workers", ",".join(cluster.backends)),
                *("--workers", str(workers), "--capacity", str(capacity)),
                *("--heartbeat-interval", str(args.heartbeat_interval)),
            ],
            env={**os.environ, TOKEN_ENV: cluster.token},
            start_new_session=True,
        )
        procs.append(player)
        frontends = Frontends(
            cluster.frontends, peer_token_keys(cluster.token), args.window, args.heartbeat_interval
        )
        try:
            joined_s = frontends.wait_for_workers(workers, [*cluster.procs, player])
            print(f"  ({workers} joined in {joined_s:.1f} s)", file=sys.stderr)
            frontends.fill()
            frontends.drive(args.warmup)
            answered, (cpu, main), start = frontends.answered, cluster.cpu_s(), time.monotonic()
            frontends.drive(args.duration)
            answered = frontends.answered - answered
            (cpu_after, main_after), elapsed = cluster.cpu_s(), time.monotonic() - start
            cpu, main = cpu_after - cpu, main_after - main
            frontends.settle()
        except SystemExit:
            sys.stderr.write(cluster.tail())
            raise
        finally:
            frontends.close()
    answered = max(answered, 1)
    return answered / elapsed, cpu / answered, main / answered, frontends.errors


@contextlib.contextmanager
def _cleanup() -> Iterator[list[Any]]:
    """Whatever is put in the list is ended on the way out, also on failure."""
    procs: list[Any] = []
    try:
        yield procs
    finally:
        for proc in reversed(procs):
            if isinstance(proc, Brokers):
                proc.stop()
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,10,100,1000", help="worker counts, comma-separated")
    parser.add_argument("--brokers", default="1,2,4", help="broker counts, comma-separated")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring")
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of every run, interleaved; medians shown"
    )
    parser.add_argument(
        "--window", type=int, default=64, help="requests outstanding at each broker"
    )
    parser.add_argument(
        "--capacity",
        type=int,
        default=0,
        help="slots of each worker, split between the brokers (default: the window at each)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=HEARTBEAT_S,
        help="seconds between heartbeats of brokers, workers and frontends",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="leave out the baseline relay (ZeroMQ and the frames alone, no broker rules)",
    )
    parser.add_argument("--play-workers", metavar="ENDPOINTS", help=argparse.SUPPRESS)
    parser.add_argument("--play-relay", metavar="FRONT,BACK", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 0 < args.heartbeat_interval <= 3600:
        parser.error("--heartbeat-interval must be above 0 and at most 3600")
    if args.play_relay:
        front, back = args.play_relay.split(",")
        play_relay(front, back, os.environ[TOKEN_ENV])
        return
    worker_counts = [int(n) for n in args.workers.split(",")]
    if args.play_workers:
        (count,) = worker_counts
        token = os.environ[TOKEN_ENV]
        play_workers(
            args.play_workers.split(","), token, count, args.capacity, args.heartbeat_interval
        )
        return
    broker_counts = [int(n) for n in args.brokers.split(",")]
    if min(worker_counts + broker_counts) < 1 or args.duration <= 0 or args.window < 1:
        parser.error("counts, --duration and --window must be positive")
    if not 0 <= (args.capacity or args.window * max(broker_counts)) <= MAX_CAPACITY:
        parser.error(f"a worker's capacity must be 1 to {MAX_CAPACITY} (--capacity, --window)")
    slots = f"{args.capacity} slot(s)" if args.capacity else "a window's slots at each broker"
    print("the request table alone (no sockets)")
    print(f"{'workers':>8} {'us/req':>9} {'vs 1st':>7}")
    first_alone = None
    for workers in worker_counts:
        alone = table_alone(workers, args.window)
        first_alone = first_alone or alone
        print(f"{workers:>8} {alone * 1e6:>9.2f} {alone / first_alone:>6.2f}x", flush=True)
    print(
        f"\n{args.duration:g} s measured per run, {args.window} requests outstanding per broker, "
        f"{slots} per worker, heartbeats every {args.heartbeat_interval:g} s; "
        "CPU is the brokers' (user + system)"
    )
    kinds = ["broker"] if args.no_baseline else ["broker", "relay"]
    for brokers in broker_counts:
        # Rounds interleave every count and both kinds, so that a machine busy for a while
        # weighs on all of them alike; each cell is the median of its rounds.
        runs: dict[tuple[str, int], list[tuple[float, float, float, int]]] = {}
        for _ in range(args.rounds):
            for workers in worker_counts:
                for kind in kinds:
                    runs.setdefault((kind, workers), []).append(
                        run(brokers, workers, args, bare=kind == "relay")
                    )
        print(f"\n{brokers} broker(s), median of {args.rounds} round(s)", flush=True)
        relay_head = f" | {'baseline relay':>27} | {'broker / relay':>14}"
        print(f"{'':>8} {'broker':>41}" + (relay_head if "relay" in kinds else ""))
        print(
            f"{'workers':>8} {'req/s':>8} {'CPU us/req':>10} {'vs 1st':>6} {'main us/req':>11}"
            f" {'vs 1st':>6}"
            + (
                f" | {'req/s':>8} {'CPU us/req':>10} {'vs 1st':>6} | {'CPU':>6} {'main':>6}"
                if "relay" in kinds
                else ""
            )
        )
        first: dict[str, tuple[float, float]] = {}
        for workers in worker_counts:
            cells = {}
            for kind in kinds:
                rounds = runs[(kind, workers)]
                rate = statistics.median(r[0] for r in rounds)
                cpu = statistics.median(r[1] for r in rounds)
                main_cpu = statistics.median(r[2] for r in rounds)
                errors = sum(r[3] for r in rounds)
                first.setdefault(kind, (cpu, main_cpu))
                cells[kind] = (rate, cpu, main_cpu, errors)
            rate, cpu, main_cpu, errors = cells["broker"]
            line = (
                f"{workers:>8} {rate:>8.0f} {cpu * 1e6:>10.1f} {cpu / first['broker'][0]:>5.2f}x"
                f" {main_cpu * 1e6:>11.1f} {main_cpu / first['broker'][1]:>5.2f}x"
            )
            if "relay" in cells:
                r_rate, r_cpu, r_main, r_errors = cells["relay"]
                errors += r_errors
                line += (
                    f" | {r_rate:>8.0f} {r_cpu * 1e6:>10.1f} {r_cpu / first['relay'][0]:>5.2f}x"
                    f" | {cpu / r_cpu:>5.2f}x {main_cpu / r_main:>5.2f}x"
                )
            print(line + (f"  ({errors} errors)" if errors else ""), flush=True)


if __name__ == "__main__":
    main()
