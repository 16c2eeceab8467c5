"""zeroserve against LitServe and a bare Tornado handler, in one run on one machine.

    python -m venv /tmp/bench && /tmp/bench/bin/pip install . -r benchmarks/requirements.txt
    /tmp/bench/bin/python benchmarks/compare.py                # trivial and batched APIs
    /tmp/bench/bin/python benchmarks/compare.py --rounds 3     # each server 3 times, median
    /tmp/bench/bin/python benchmarks/compare.py --baseline /tmp/before/bin/python  # vs a commit
    /tmp/bench/bin/python benchmarks/compare.py --streams      # streaming
    /tmp/bench/bin/python benchmarks/compare.py --scaling      # processes and batch sizes
    /tmp/bench/bin/python benchmarks/compare.py --async-io     # an async API awaiting 100 ms
    /tmp/bench/bin/python benchmarks/compare.py --continuous   # continuous batching of streams
    /tmp/bench/bin/python benchmarks/compare.py --brokers      # one broker or two; a broker kill
    /tmp/bench/bin/python benchmarks/compare.py --tracing      # OpenTelemetry off and on
    /tmp/bench/bin/python benchmarks/compare.py --large        # 1 MB bodies, MB/s

Every server does the same work (x*2 on a JSON number) and is driven, one
after the other, by the same client (`cluster bench`) with the same
concurrency and duration. Beside the Tornado ceiling runs the bare chain
(bare_chain.py): zeroserve's three processes and hops written plainly,
without its features, to tell the design's cost from zeroserve's own.
With --rounds, the servers take turns, so that a noisy minute of a shared
machine falls on all of them; the median run of each is shown. LitServe
runs with its defaults; it is needed only in the benchmark's own
environment, never by zeroserve. Every server runs in this script's session
(in a process group of its own), as the client does: where Linux schedules
by session (autogroup), a server in a session of its own would be weighed
as a job against the client's, a skew that only a machine shared by client
and server has.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

from zeroserve.up import OWN_PROCESS_GROUP, free_port

HERE = Path(__file__).resolve().parent


def ratio(value: float, base: dict | None, key: str, fmt: str = "{:.2f}x") -> str:
    """`value` against `base[key]`, or "-" without a base to compare with."""
    return fmt.format(value / base[key]) if base and base.get(key) else "-"


def wait_ready(url: str, payload: dict, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.post(url, json=payload, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{url} never answered 200")


@contextlib.contextmanager
def server(
    argv: list[str], url: str, payload: dict | None = None, env: dict | None = None
) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=HERE,
        env={**os.environ, **(env or {})},
        **OWN_PROCESS_GROUP,
    )
    try:
        wait_ready(url, payload or {"input": 1})
        yield proc
    finally:
        stop_groups([proc])


def stop_groups(procs: list[subprocess.Popen]) -> None:
    """Ctrl-C to each server's process group, last started first; -9 after 20 s."""
    for proc in reversed(procs):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def bench(url: str, args: argparse.Namespace, concurrency: int | None = None) -> dict:
    out = subprocess.run(
        [
            sys.executable, "-m", "zeroserve", "bench", url, "--json",
            "--duration", str(args.duration),
            "--concurrency", str(concurrency or args.concurrency),
            "--client-processes", str(args.client_processes),
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


#: wrk's request: the same POST as cluster bench's.
WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{"input": 2}'
wrk.headers["Content-Type"] = "application/json"
"""
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def wrk(
    url: str,
    connections: int,
    duration_s: float,
    warmup_s: float = 3.0,
    *,
    body: Path | None = None,
    measuring: Callable[[], None] | None = None,
) -> dict:
    """wrk, a C client that costs the servers nothing, with one thread: req/s and latency
    percentiles, after a warm-up run whose figures are dropped; `body` is a file whose
    content each request posts instead of the small default; `measuring` is called as the
    measured run begins."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (see the README)")
    script = Path(tempfile.mkdtemp()) / "post.lua"
    lua = WRK_SCRIPT
    if body is not None:
        lua += f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    script.write_text(lua)
    base = ["wrk", "-t1", f"-c{connections}", "-s", str(script), "--latency", "--timeout", "10s"]
    subprocess.run([*base, f"-d{warmup_s:g}s", url], capture_output=True, check=True)
    if measuring is not None:
        measuring()
    out = subprocess.run(
        [*base, f"-d{duration_s:g}s", url], capture_output=True, text=True, check=True
    ).stdout

    def latency_ms(percent: str) -> float:
        found = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
        return float(found.group(1)) * _UNITS_MS[found.group(2)] if found else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    # "Latency   avg   stdev   max   +/- stdev": the slowest answer of the run.
    slowest = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m)", out)
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests_done = int(total.group(1)) if total else 0
    failed = int(bad.group(1)) if bad else 0
    ok_share = (requests_done - failed) / requests_done if requests_done else 0.0
    return {
        "rps": float(rps.group(1)) * ok_share if rps else 0.0,
        "p50_ms": latency_ms("50"),
        "p99_ms": latency_ms("99"),
        "max_ms": float(slowest.group(1)) * _UNITS_MS[slowest.group(2)]
        if slowest
        else float("nan"),
        "requests": requests_done,
        "failed": failed,
        "client": "wrk",
    }


def measure(url: str, args: argparse.Namespace, concurrency: int | None = None) -> dict:
    """wrk's figures (the independent client), with cluster bench's req/s beside them when
    --client is both."""
    connections = concurrency or args.concurrency
    if args.client == "bench":
        return bench(url, args, connections)
    result = wrk(url, connections, args.duration)
    if args.client == "both":
        result["bench_rps"] = bench(url, args, connections)["rps"]
    return result


def zeroserve_up(
    api: str, port: int | str, workers: int, *extra: str, python: str = sys.executable
) -> list[str]:
    return [
        python, "-m", "zeroserve", "up", "--api", f"apis.py:{api}",
        "--port", str(port), "--workers", str(workers), "--log-level", "WARNING", *extra,
    ]  # fmt: skip


def run_once(
    argv: list[str],
    args: argparse.Namespace,
    concurrency: int | None = None,
    env: dict | None = None,
) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    argv = [a.replace("{port}", str(port)) for a in argv]
    with server(argv, url, env=env):
        return measure(url, args, concurrency)


def every_round(runs: dict[str, list[dict]], width: int, digits: int = 0) -> None:
    """Each server's req/s in every round, when there was more than one."""
    if max(map(len, runs.values()), default=0) > 1:
        print("\nEvery round (req/s):")
        for name, rs in runs.items():
            print(f"  {name:{width}} " + "  ".join(f"{r['rps']:.{digits}f}" for r in rs))


def median_run(runs: list[dict]) -> dict:
    """The run with the median throughput (its own p50 and p99 with it)."""
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def compare(args: argparse.Namespace) -> None:
    here = sys.executable
    servers: dict[str, list[str]] = {
        "tornado handler": [here, str(HERE / "plain_tornado.py"), "{port}"],
        "bare chain": [here, str(HERE / "bare_chain.py"), "{port}"],
    }
    has_litserve = importlib.util.find_spec("litserve") is not None
    for kind, api in (("trivial", "DoubleAPI"), ("batched", "BatchedDoubleAPI")):
        if has_litserve:
            mode = "batched" if kind == "batched" else "plain"
            servers[f"litserve, {kind}"] = [here, str(HERE / "litserve_server.py"), "{port}", mode]
        servers[f"zeroserve, {kind}"] = zeroserve_up(api, "{port}", args.workers)
        if args.baseline:
            servers[f"baseline, {kind}"] = zeroserve_up(
                api, "{port}", args.workers, python=args.baseline
            )
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    for round_no in range(1, args.rounds + 1):
        for name, argv in servers.items():
            r = run_once(argv, args)
            runs[name].append(r)
            print(
                f"  round {round_no}, {name}: {r['rps']:.0f} req/s, "
                f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms",
                flush=True,
            )
    results = {name: median_run(rs) for name, rs in runs.items()}
    ceiling = results["tornado handler"]
    client = "cluster bench" if args.client == "bench" else "wrk -t1"
    print(
        f"\n{client}, {args.concurrency} connections, {args.duration:g} s a run, "
        f"{args.rounds} round(s) (median run shown), {os.cpu_count()} CPUs, "
        f"zeroserve with {args.workers} worker process(es)\n"
    )
    bench_column = f" {'bench req/s':>12}" if args.client == "both" else ""
    print(
        f"{'server':22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs tornado':>11} "
        f"{'vs litserve':>12} {'p99 vs litserve':>16}{bench_column}"
    )
    for name, r in results.items():
        # The ceiling and the bare chain do the trivial API's work.
        kind = name.split(", ")[1] if ", " in name else "trivial"
        lit = results.get(f"litserve, {kind}")
        vs_lit = ratio(r["rps"], lit, "rps")
        p99_lit = ratio(r["p99_ms"], lit, "p99_ms", "{:.2f}")
        second = f" {r['bench_rps']:>12.0f}" if "bench_rps" in r else ""
        print(
            f"{name:22} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{r['rps'] / ceiling['rps']:>10.2f}x {vs_lit:>12} {p99_lit:>16}{second}"
        )
    if args.baseline:
        print(
            "\nzeroserve against the baseline (req/s, p99): "
            + "; ".join(
                f"{kind} {ratio(results[f'zeroserve, {kind}']['rps'], base, 'rps')}, "
                f"{ratio(results[f'zeroserve, {kind}']['p99_ms'], base, 'p99_ms')}"
                for kind in ("trivial", "batched")
                if (base := results.get(f"baseline, {kind}"))
            )
        )
    every_round(runs, 22)
    if not has_litserve:
        print("\n(litserve is not installed here: pip install -r benchmarks/requirements.txt)")


def streams(args: argparse.Namespace) -> None:
    results = {}
    for name, api in (("unbatched", "TokenStreamAPI"), ("batched (8)", "BatchedTokenStreamAPI")):
        port = free_port()
        url = f"http://127.0.0.1:{port}/predict"
        with server(zeroserve_up(api, port, args.workers), url):
            results[name] = bench(url, args)
    print(
        f"\n16-step streams (2 ms a step), {args.concurrency} connections, "
        f"{args.duration:g} s each, {args.workers} worker process(es)\n"
    )
    print(
        f"{'zeroserve':14} {'streams/s':>10} {'first chunk p50':>16} {'p99':>8} {'whole p50':>10}"
    )
    for name, r in results.items():
        print(
            f"{name:14} {r['rps']:>10.0f} {r['first_chunk_p50_ms']:>13.2f} ms "
            f"{r['first_chunk_p99_ms']:>8.2f} {r['p50_ms']:>7.2f} ms"
        )


def scaling_table(args: argparse.Namespace, title: str, label: str, runs: list[tuple]) -> None:
    """One row per (n, argv-maker, concurrency): throughput against n times the first row."""
    print(f"\n{title}")
    print(f"{label:>9} {'req/s':>8} {'ideal':>7} {'efficiency':>10}")
    first = None
    for n, make_argv, concurrency in runs:
        port = free_port()
        url = f"http://127.0.0.1:{port}/predict"
        with server(make_argv(port), url):
            r = bench(url, args, concurrency=concurrency)
        first = first or r["rps"]
        print(f"{n:>9} {r['rps']:>8.1f} {first * n:>7.1f} {r['rps'] / (first * n):>9.0%}")


def scaling(args: argparse.Namespace) -> None:
    scaling_table(
        args,
        "Sleep-bound API (each predict waits 50 ms): worker processes",
        "processes",
        [(n, lambda p, n=n: zeroserve_up("SleepAPI", p, n), 8 * n) for n in args.processes],
    )
    scaling_table(
        args,
        "One worker process, batched (one 50 ms wait serves the whole batch): batch size",
        "batch",
        [
            (
                size,
                lambda p, s=size: zeroserve_up("SleepBatchedAPI", p, 1, "--max-batch-size", str(s)),
                4 * size,
            )
            for size in args.batch_sizes
        ],
    )


def async_io(args: argparse.Namespace) -> None:
    """An async API whose predict awaits 100 ms: how many requests one process keeps in flight."""
    servers = {"zeroserve": zeroserve_up("AsyncIOAPI", "{port}", 1)}
    if importlib.util.find_spec("litserve") is not None:
        servers["litserve"] = [sys.executable, str(HERE / "litserve_server.py"), "{port}", "async"]
    rows = []
    for concurrency in args.async_concurrency:
        runs: dict[str, list[dict]] = {name: [] for name in servers}
        for round_no in range(1, args.rounds + 1):
            for name, argv in servers.items():
                r = run_once(argv, args, concurrency)
                runs[name].append(r)
                print(f"  {concurrency} connections, round {round_no}, {name}: "
                      f"{r['rps']:.0f} req/s", flush=True)  # fmt: skip
        rows.append((concurrency, {name: median_run(rs) for name, rs in runs.items()}, runs))
    print(
        f"\nAsync API (predict awaits 100 ms), one worker process, {args.duration:g} s a run, "
        f"{args.rounds} round(s) (median run)\n"
    )
    print(
        f"{'connections':>11} {'server':10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'of ideal':>9} {'vs litserve':>12}"
    )
    for concurrency, results, _ in rows:
        lit = results.get("litserve")
        for name, r in results.items():
            vs_lit = ratio(r["rps"], lit, "rps")
            print(
                f"{concurrency:>11} {name:10} {r['rps']:>8.0f} {r['p50_ms']:>8.1f} "
                f"{r['p99_ms']:>8.1f} {r['rps'] / (concurrency / 0.1):>8.0%} {vs_lit:>12}"
            )
    if args.rounds > 1:
        print("\nEvery round (req/s):")
        for concurrency, _, runs in rows:
            for name, rs in runs.items():
                print(f"  {concurrency:>4} {name:10} " + "  ".join(f"{r['rps']:.0f}" for r in rs))


def stream_load(url: str, clients: int, duration_s: float, counts: Path) -> dict:
    """`clients` threads, each sending streams of 1 to 60 steps one after the other. Streams
    that end inside the measured window (after 1 s of warm-up) count for throughput, and the
    steps the server's class counted meanwhile for step use; the time to the first piece is
    that of every stream begun before the window closed, however late it ended (a server that
    leaves some clients waiting shows it there)."""
    began = time.monotonic()
    window = (began + 1.0, began + 1.0 + duration_s)
    done: list[tuple[float, float, float]] = []  # (started, first piece, ended)
    errors: list[str] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        while time.monotonic() < window[1]:
            n = rng.randint(1, 60)
            started = time.monotonic()
            first = None
            pieces = 0
            with session.post(url, json={"n": n}, stream=True, timeout=60) as r:
                for line in r.iter_lines():
                    if line:
                        first = first or time.monotonic()
                        pieces += 1
            if r.status_code != 200 or pieces != n:
                errors.append(f"{r.status_code}: {pieces} of {n} pieces")
            done.append((started, first or started, time.monotonic()))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(window[0] - time.monotonic())  # the window opens
    before = read_counts(counts)
    time.sleep(window[1] - time.monotonic())
    after = read_counts(counts)
    for t in threads:
        t.join()
    counted = [d for d in done if window[0] <= d[2] < window[1]]
    ttft = sorted(d[1] - d[0] for d in done if d[0] < window[1])

    def pick(q: float) -> float:
        return ttft[min(len(ttft) - 1, int(q * len(ttft)))] * 1000 if ttft else float("nan")

    steps = after[0] - before[0]
    return {
        "streams_per_s": len(counted) / duration_s,
        "ttft_p50_ms": pick(0.5),
        "ttft_p99_ms": pick(0.99),
        "ttft_max_ms": pick(1.0),
        "errors": len(errors),
        "steps": steps,
        "step_use": (after[1] - before[1]) / (4 * steps) if steps else float("nan"),
    }


def read_counts(path: Path) -> tuple[int, int]:
    with contextlib.suppress(FileNotFoundError, ValueError):
        steps, sequence_steps = path.read_text().split()
        return int(steps), int(sequence_steps)
    return 0, 0


def continuous(args: argparse.Namespace) -> None:
    """Mixed-length streams through one continuous-batching class on both servers."""
    here = sys.executable
    servers = {
        "zeroserve": [here, "-m", "zeroserve", "up", "--api", "steps_api.py:MixedSteps",
                      "--port", "{port}", "--workers", "1", "--log-level", "WARNING"],
    }  # fmt: skip
    if importlib.util.find_spec("litserve") is not None:
        servers["litserve"] = [here, str(HERE / "litserve_server.py"), "{port}", "steps"]
    results = {}
    for name, command in servers.items():
        port = free_port()
        url = f"http://127.0.0.1:{port}/predict"
        counts = Path(tempfile.mkdtemp()) / "steps"
        argv = [a.replace("{port}", str(port)) for a in command]
        with server(argv, url, {"n": 1}, {"BENCH_STEP_COUNTS": str(counts)}):
            r = results[name] = stream_load(url, args.clients, args.duration, counts)
        print(f"  {name}: {r['streams_per_s']:.1f} streams/s, step use {r['step_use']:.0%}")
    print(
        f"\nStreams of 1 to 60 steps (10 ms a step, batch of 4), {args.clients} clients, "
        f"{args.duration:g} s\n"
    )
    print(
        f"{'server':10} {'streams/s':>10} {'TTFT p50':>10} {'TTFT p99':>10} {'TTFT max':>10} "
        f"{'step use':>9} {'vs litserve':>12} {'errors':>7}"
    )
    lit = results.get("litserve")
    for name, r in results.items():
        vs_lit = ratio(r["streams_per_s"], lit, "streams_per_s")
        print(
            f"{name:10} {r['streams_per_s']:>10.1f} {r['ttft_p50_ms']:>7.1f} ms "
            f"{r['ttft_p99_ms']:>7.1f} ms {r['ttft_max_ms']:>7.0f} ms {r['step_use']:>8.0%} "
            f"{vs_lit:>12} {r['errors']:>7}"
        )


@contextlib.contextmanager
def brokers_cluster(count: int, port: int, workers: int) -> Iterator[list[subprocess.Popen]]:
    """`count` brokers, one worker launcher and one frontend given all of them, each process
    in a group of its own (the brokers first in the list)."""
    zs = [sys.executable, "-m", "zeroserve"]
    quiet = ("--log-level", "WARNING")
    fronts, backs = [], []
    procs: list[subprocess.Popen] = []

    def start(*argv: str) -> None:
        procs.append(
            subprocess.Popen(
                [*zs, *argv, *quiet],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=HERE,
                **OWN_PROCESS_GROUP,
            )
        )

    for _ in range(count):
        fronts.append(f"tcp://127.0.0.1:{free_port()}")
        backs.append(f"tcp://127.0.0.1:{free_port()}")
        start("broker", "--frontend-bind", fronts[-1], "--backend-bind", backs[-1])
    each = [flag for b in backs for flag in ("--broker", b)]
    start("worker", *each, "--api", "apis.py:DoubleAPI", "--processes", str(workers))
    each = [flag for f in fronts for flag in ("--broker", f)]
    start("frontend", *each, "--port", str(port))
    try:
        wait_ready(f"http://127.0.0.1:{port}/predict", {"input": 1})
        yield procs
    finally:
        stop_groups(procs)


def brokers(args: argparse.Namespace) -> None:
    """What a second broker costs, and what a broker's kill -9 does to latency."""
    runs: dict[str, list[dict]] = {"one broker": [], "two brokers": []}
    for round_no in range(1, args.rounds + 1):
        for count, name in ((1, "one broker"), (2, "two brokers")):
            port = free_port()
            with brokers_cluster(count, port, args.workers):
                r = measure(f"http://127.0.0.1:{port}/predict", args)
            runs[name].append(r)
            print(f"  round {round_no}, {name}: {r['rps']:.0f} req/s, p99 {r['p99_ms']:.2f} ms")
    results = {name: median_run(rs) for name, rs in runs.items()}
    base = results["one broker"]
    print(
        f"\nwrk -t1, {args.concurrency} connections, {args.duration:g} s a run, "
        f"{args.rounds} round(s), {os.cpu_count()} CPUs, {args.workers} worker process(es)\n"
    )
    print(f"{'cluster':14} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs one broker':>14}")
    for name, r in results.items():
        print(
            f"{name:14} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{ratio(r['rps'], base, 'rps'):>14}"
        )
    # The spike: the same wrk run on two brokers, once quiet and once with one broker killed
    # a third of the way in; every answer should still be a 200.
    print(f"\nbroker kill -9 under load (two brokers, wrk {args.duration:g} s):")
    for kill in (False, True):
        port = free_port()
        with brokers_cluster(2, port, args.workers) as procs:
            if kill:
                killer = threading.Timer(
                    3.0 + args.duration / 3, os.killpg, (procs[0].pid, signal.SIGKILL)
                )
                killer.start()
            r = wrk(f"http://127.0.0.1:{port}/predict", args.concurrency, args.duration)
        print(
            f"  {'one broker killed' if kill else 'quiet':18} {r['rps']:>8.0f} req/s, "
            f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.0f} ms, "
            f"non-2xx {r['failed']} of {r['requests']}"
        )


@contextlib.contextmanager
def span_sink() -> Iterator[str]:
    """An OTLP/HTTP endpoint that takes every export and keeps nothing: the cost measured is
    the servers' (it shares the machine, as a collector on the same host would)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{sink.server_address[1]}"
    finally:
        sink.shutdown()
        sink.server_close()


def tracing(args: argparse.Namespace) -> None:
    """The trivial API with tracing off (no OTEL_* set), on for 1% of requests, and on for
    every one, in interleaved rounds."""
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        raise SystemExit(
            "OpenTelemetry is not installed: pip install -r benchmarks/requirements.txt"
        )
    argv = zeroserve_up("DoubleAPI", "{port}", args.workers)
    with span_sink() as endpoint:
        on = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
        modes = {
            "off": {},
            "on, 1% sampled": {
                **on,
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0.01",
            },
            "on, every request": on,
        }
        runs: dict[str, list[dict]] = {name: [] for name in modes}
        for round_no in range(1, args.rounds + 1):
            for name, env in modes.items():
                r = run_once(argv, args, env=env)
                runs[name].append(r)
                print(f"  round {round_no}, tracing {name}: {r['rps']:.0f} req/s", flush=True)
    results = {name: median_run(rs) for name, rs in runs.items()}
    base = results["off"]
    client = "cluster bench" if args.client == "bench" else "wrk -t1"
    print(
        f"\n{client}, {args.concurrency} connections, {args.duration:g} s a run, "
        f"{args.rounds} round(s) (median run shown), {os.cpu_count()} CPUs\n"
    )
    print(f"{'tracing':20} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs off':>8}")
    for name, r in results.items():
        print(
            f"{name:20} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{ratio(r['rps'], base, 'rps'):>8}"
        )
    every_round(runs, 20)


def image_body(kib: int) -> Path:
    """A file holding the JSON body of a `kib` KiB random image, base64."""
    raw = random.Random(7).randbytes(kib * 1024)
    body = Path(tempfile.mkdtemp()) / "image.json"
    body.write_text(json.dumps({"image": base64.b64encode(raw).decode()}))
    return body


def large(args: argparse.Namespace) -> None:
    """A 1 MB image, base64 in JSON, decoded by the API: zeroserve against LitServe, 8
    connections, req/s and the MB/s of request bodies that makes."""
    body = image_body(args.body_kb)
    megabytes = body.stat().st_size / 1e6
    here = sys.executable
    servers = {"zeroserve": zeroserve_up("ImageSizeAPI", "{port}", args.workers)}
    if importlib.util.find_spec("litserve") is not None:
        servers["litserve"] = [here, str(HERE / "litserve_server.py"), "{port}", "image"]
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    probe = {"image": base64.b64encode(b"probe").decode()}
    for round_no in range(1, args.rounds + 1):
        for name, argv in servers.items():
            port = free_port()
            url = f"http://127.0.0.1:{port}/predict"
            with server([a.replace("{port}", str(port)) for a in argv], url, probe):
                r = wrk(url, args.large_connections, args.duration, body=body)
            runs[name].append(r)
            print(f"  round {round_no}, {name}: {r['rps']:.1f} req/s", flush=True)
    results = {name: median_run(rs) for name, rs in runs.items()}
    base = results.get("litserve")
    print(
        f"\nwrk -t1, {args.large_connections} connections, a {megabytes:.2f} MB JSON body "
        f"({args.body_kb} KiB image, base64), {args.duration:g} s a run, {args.rounds} round(s), "
        f"{os.cpu_count()} CPUs\n"
    )
    print(f"{'server':12} {'req/s':>8} {'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs litserve':>12}")
    for name, r in results.items():
        print(
            f"{name:12} {r['rps']:>8.1f} {r['rps'] * megabytes:>8.1f} {r['p50_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {ratio(r['rps'], base, 'rps'):>12}"
        )
    every_round(runs, 12, digits=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="zeroserve worker processes")
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument(
        "--client",
        choices=["wrk", "bench", "both"],
        default="both",
        help="the load: wrk (its figures fill the tables), cluster bench, or wrk with "
        "cluster bench's req/s in a column of its own",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every server this many times, interleaved"
    )
    parser.add_argument(
        "--baseline",
        metavar="PYTHON",
        help="an interpreter with another zeroserve installed (an earlier commit): its rows "
        "run beside this one's, in the same rounds",
    )
    parser.add_argument("--streams", action="store_true", help="measure streaming")
    parser.add_argument("--scaling", action="store_true", help="measure scaling")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--async-io", action="store_true", help="an async API awaiting 100 ms")
    parser.add_argument("--async-concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--continuous", action="store_true", help="continuous batching")
    parser.add_argument("--clients", type=int, default=8, help="stream clients (--continuous)")
    parser.add_argument("--brokers", action="store_true", help="one broker or two; a broker kill")
    parser.add_argument("--tracing", action="store_true", help="OpenTelemetry off and on")
    parser.add_argument("--large", action="store_true", help="1 MB request bodies, MB/s")
    parser.add_argument("--body-kb", type=int, default=768, help="image size (--large)")
    parser.add_argument("--large-connections", type=int, default=8)
    args = parser.parse_args()
    # A SIGTERM unwinds like Ctrl-C, so that the servers started so far are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.brokers:
        brokers(args)
    elif args.tracing:
        tracing(args)
    elif args.large:
        large(args)
    elif args.async_io:
        async_io(args)
    elif args.continuous:
        continuous(args)
    elif args.streams:
        streams(args)
    elif args.scaling:
        scaling(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
