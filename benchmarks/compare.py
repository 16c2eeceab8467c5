"""Throughput and latency of zeroserve against a bare Tornado handler, in one run.

    python benchmarks/compare.py [--duration 10] [--concurrency 32] [--workers 1] [--streams]

Both servers do the same work (x*2 on a JSON number) and are driven by the
same client (`cluster bench`) with the same settings, one after the other.
With --streams it measures streaming instead: streams per second and time
to first chunk of a 16-step stream, unbatched and batched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.post(url, json={"input": 1}, timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"{url} never answered 200")


@contextlib.contextmanager
def server(argv: list[str], url: str):
    proc = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.DEVNULL, cwd=HERE)
    try:
        wait_ready(url)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def bench(url: str, args: argparse.Namespace) -> dict:
    out = subprocess.run(
        [
            sys.executable, "-m", "zeroserve", "bench", url, "--json",
            "--duration", str(args.duration), "--concurrency", str(args.concurrency),
            "--client-processes", str(args.client_processes),
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def zeroserve_up(api: str, port: int, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "zeroserve", "up", "--api", f"apis.py:{api}",
        "--port", str(port), "--workers", str(workers), "--log-level", "WARNING",
    ]  # fmt: skip


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="zeroserve worker processes")
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--streams", action="store_true", help="measure streaming instead")
    args = parser.parse_args()
    if args.streams:
        streams(args)
        return

    results = {}
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    with server([sys.executable, str(HERE / "plain_tornado.py"), str(port)], url):
        results["tornado handler (ceiling)"] = bench(url, args)
    for name, api in (("zeroserve", "DoubleAPI"), ("zeroserve, batched", "BatchedDoubleAPI")):
        port = free_port()
        url = f"http://127.0.0.1:{port}/predict"
        with server(zeroserve_up(api, port, args.workers), url):
            results[name] = bench(url, args)

    ceiling = results["tornado handler (ceiling)"]["rps"]
    print(
        f"\n{args.concurrency} connections, {args.duration:g} s each, "
        f"{os.cpu_count()} CPUs, zeroserve with {args.workers} worker process(es)\n"
    )
    print(f"{'server':28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs ceiling':>10}  errors")
    for name, r in results.items():
        ratio = r["rps"] / ceiling if ceiling else float("nan")
        bad = {k: v for k, v in r["statuses"].items() if k != "200"} | r["errors"]
        print(
            f"{name:28} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{ratio:>9.2f}x  {bad or '-'}"
        )


if __name__ == "__main__":
    main()
