"""Many models, multiplexed: model-aware routing against model-blind routing, in one run.

    python benchmarks/models.py                   # 8 models, 2 per worker, 4 workers
    python benchmarks/models.py --duration 10 --load-ms 200 --clients 4,16,64

The same cluster (one broker, one launcher of ``--workers`` processes of
apis.py:ModelZooAPI, one frontend) runs twice: once as it comes, where the
broker sends a request to a free worker holding its model first, and once
with the broker's ``--no-model-routing``, where it routes as if no request
named a model. Clients send the same seeded stream of requests each time,
their models drawn from a Zipf distribution (a few hot models, a long
tail), each naming its model in X-Model-Id. A load costs ``--load-ms``, a
request ``--predict-ms``. Printed: req/s, the workers' hit rate (requests
that found their model loaded), their loads and evictions, and p50/p99.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zeroserve.common.status_client import BrokerUnreachable, fetch_status
from zeroserve.up import OWN_PROCESS_GROUP, free_port

from compare import stop_groups

HERE = Path(__file__).resolve().parent


def zipf_stream(models: int, exponent: float, count: int, seed: int) -> list[str]:
    """`count` model ids, model k drawn with weight 1 / (k + 1) ** exponent."""
    weights = [1 / (k + 1) ** exponent for k in range(models)]
    return random.Random(seed).choices([f"m{k}" for k in range(models)], weights, k=count)


@contextlib.contextmanager
def zoo(args: argparse.Namespace, routing: bool) -> Iterator[tuple[int, str]]:
    """A cluster serving ModelZooAPI: its HTTP port and the broker's frontend endpoint."""
    zs = [sys.executable, "-m", "zeroserve"]
    quiet = ("--log-level", "WARNING")
    front = f"tcp://127.0.0.1:{free_port()}"
    back = f"tcp://127.0.0.1:{free_port()}"
    port = free_port()
    env = {**os.environ, "ZOO_LOAD_MS": str(args.load_ms), "ZOO_PREDICT_MS": str(args.predict_ms)}
    procs: list[subprocess.Popen] = []

    def start(*argv: str) -> None:
        procs.append(
            subprocess.Popen(
                [*zs, *argv, *quiet],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=HERE,
                env=env,
                **OWN_PROCESS_GROUP,
            )
        )

    try:
        start(
            "broker",
            "--frontend-bind",
            front,
            "--backend-bind",
            back,
            *(() if routing else ("--no-model-routing",)),
        )
        processes = ("--processes", str(args.workers))
        start("worker", "--broker", back, "--api", "apis.py:ModelZooAPI", *processes)
        start("frontend", "--broker", front, "--port", str(port))
        wait_workers(front, args.workers, procs)
        yield port, front
    finally:
        stop_groups(procs)


def snapshot(front: str) -> dict[str, Any]:
    try:
        return fetch_status(front, timeout_s=1.0)
    except BrokerUnreachable:
        return {}


def wait_workers(front: str, count: int, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + 60
    while len(snapshot(front).get("workers", [])) < count:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise SystemExit("the cluster did not come up")
        time.sleep(0.2)  # poll


def warm(port: int, count: int) -> None:
    """One answered request for each of `count` models: the frontend knows the route."""
    deadline = time.monotonic() + 60
    for k in range(count):
        while drive(port, [f"m{k}"], 1, 30)["failed"]:
            if time.monotonic() > deadline:
                raise SystemExit("the frontend never answered 200")
            time.sleep(0.2)  # poll


def drive(port: int, stream: list[str], clients: int, duration_s: float) -> dict[str, Any]:
    """`clients` threads, each on a keep-alive connection, take the next model of `stream`
    and wait for its answer, for `duration_s`."""
    taken = iter(range(len(stream)))
    lock = threading.Lock()
    latencies: list[float] = []
    failed = [0]
    stop_at = time.monotonic() + duration_s

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        while time.monotonic() < stop_at:
            with lock:
                i = next(taken, None)
            if i is None:
                break
            began = time.monotonic()
            body = json.dumps({"input": i})
            headers = {"Content-Type": "application/json", "X-Model-Id": stream[i]}
            conn.request("POST", "/predict", body, headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                with lock:
                    failed[0] += 1
            mine.append(time.monotonic() - began)
        conn.close()
        with lock:
            latencies.extend(mine)

    began = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "failed": failed[0],
        "rps": n / elapsed,
        "p50_ms": latencies[n // 2] * 1000 if n else 0.0,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else 0.0,
    }


def model_counters(front: str, answered: int) -> dict[str, int]:
    """The workers' model counters summed, once their heartbeats cover every answer."""
    keys = ("model_hits", "model_misses", "model_loads", "model_evictions")
    deadline = time.monotonic() + 10
    while True:
        workers = snapshot(front).get("workers", [])
        totals = {k: sum((w.get("reported") or {}).get(k, 0) for w in workers) for k in keys}
        if totals["model_hits"] + totals["model_misses"] >= answered:
            return totals
        if time.monotonic() > deadline:
            print("  (the heartbeats did not cover every answer; counters are partial)")
            return totals
        time.sleep(0.2)  # poll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--clients",
        default="8,48",
        help="concurrent clients, a comma-separated list: each count is a run of its own (8: "
        "half the cluster's slots are busy; 48: requests queue at the broker)",
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of load a run")
    parser.add_argument("--zipf", type=float, default=1.1, help="the Zipf exponent")
    parser.add_argument("--load-ms", type=float, default=50.0)
    parser.add_argument("--predict-ms", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    stream = zipf_stream(args.models, args.zipf, 200_000, args.seed)
    counts = [int(c) for c in args.clients.split(",")]
    rows = []
    for routing in (True, False):
        name = "model-aware" if routing else "model-blind"
        with zoo(args, routing) as (port, front):
            warm(port, args.workers)
            answered = args.workers
            for clients in counts:
                before = model_counters(front, answered)
                result = drive(port, stream, clients, args.duration)
                answered += result["requests"]
                after = model_counters(front, answered)
                delta = {k: after[k] - before[k] for k in after}
                asked = delta["model_hits"] + delta["model_misses"]
                result |= delta | {"name": name, "clients": clients}
                result["hit_rate"] = delta["model_hits"] / asked if asked else 0.0
                rows.append(result)
                print(
                    f"  {name}, {clients} clients: {result['rps']:.0f} req/s, "
                    f"hit rate {result['hit_rate']:.0%}"
                )
    print(
        f"\n{args.models} models, {args.workers} workers holding 2 each (4 slots each), Zipf "
        f"{args.zipf:g}, {args.duration:g} s a run, load {args.load_ms:g} ms, predict "
        f"{args.predict_ms:g} ms, {os.cpu_count()} CPUs\n"
    )
    print(
        f"{'routing':12} {'clients':>7} {'req/s':>7} {'hit rate':>9} {'loads':>6} "
        f"{'evictions':>10} {'p50 ms':>7} {'p99 ms':>7} {'non-200':>8}"
    )
    for r in sorted(rows, key=lambda r: r["clients"]):
        print(
            f"{r['name']:12} {r['clients']:>7} {r['rps']:>7.0f} {r['hit_rate']:>9.0%} "
            f"{r['model_loads']:>6} {r['model_evictions']:>10} {r['p50_ms']:>7.1f} "
            f"{r['p99_ms']:>7.1f} {r['failed']:>8}"
        )


if __name__ == "__main__":
    main()
