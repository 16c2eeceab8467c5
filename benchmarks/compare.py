"""zeroserve against LitServe and a bare Tornado handler, in one run on one machine.

    python -m venv /tmp/bench && /tmp/bench/bin/pip install . -r benchmarks/requirements.txt
    /tmp/bench/bin/python benchmarks/compare.py                # trivial and batched APIs
    /tmp/bench/bin/python benchmarks/compare.py --rounds 3     # each server 3 times, median
    /tmp/bench/bin/python benchmarks/compare.py --streams      # streaming
    /tmp/bench/bin/python benchmarks/compare.py --scaling      # processes and batch sizes

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
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from zeroserve.up import OWN_PROCESS_GROUP, free_port

HERE = Path(__file__).resolve().parent


def wait_ready(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.post(url, json={"input": 1}, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{url} never answered 200")


@contextlib.contextmanager
def server(argv: list[str], url: str) -> Iterator[None]:
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=HERE, **OWN_PROCESS_GROUP
    )
    try:
        wait_ready(url)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGINT)
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


def zeroserve_up(api: str, port: int | str, workers: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "zeroserve", "up", "--api", f"apis.py:{api}",
        "--port", str(port), "--workers", str(workers), "--log-level", "WARNING", *extra,
    ]  # fmt: skip


def run_once(argv: list[str], args: argparse.Namespace) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    argv = [a.replace("{port}", str(port)) for a in argv]
    with server(argv, url):
        return bench(url, args)


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
    print(
        f"\n{args.concurrency} connections, {args.duration:g} s a run, "
        f"{args.rounds} round(s) (median run shown), {os.cpu_count()} CPUs, "
        f"zeroserve with {args.workers} worker process(es)\n"
    )
    print(
        f"{'server':22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs tornado':>11} "
        f"{'vs litserve':>12} {'p99 vs litserve':>16}"
    )
    for name, r in results.items():
        # The ceiling and the bare chain do the trivial API's work.
        kind = name.split(", ")[1] if ", " in name else "trivial"
        lit = results.get(f"litserve, {kind}")
        vs_lit = f"{r['rps'] / lit['rps']:.2f}x" if lit and lit["rps"] else "-"
        p99_lit = f"{r['p99_ms'] / lit['p99_ms']:.2f}" if lit and lit["p99_ms"] else "-"
        print(
            f"{name:22} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{r['rps'] / ceiling['rps']:>10.2f}x {vs_lit:>12} {p99_lit:>16}"
        )
    if args.rounds > 1:
        print("\nEvery round (req/s):")
        for name, rs in runs.items():
            print(f"  {name:22} " + "  ".join(f"{r['rps']:.0f}" for r in rs))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="zeroserve worker processes")
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every server this many times, interleaved"
    )
    parser.add_argument("--streams", action="store_true", help="measure streaming")
    parser.add_argument("--scaling", action="store_true", help="measure scaling")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    args = parser.parse_args()
    if args.streams:
        streams(args)
    elif args.scaling:
        scaling(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
