"""Where the CPU goes: CPU time per request of each zeroserve process under wrk's load.

    /tmp/bench/bin/python benchmarks/profile.py                    # CPU per request per process
    /tmp/bench/bin/python benchmarks/profile.py --py-spy           # and each process's hottest code
    /tmp/bench/bin/python benchmarks/profile.py --api BatchedDoubleAPI   # the batched API
    /tmp/bench/bin/python benchmarks/profile.py --api ImageSizeAPI --body-kb 768 --concurrency 8

`cluster up` serves the trivial API (x*2), wrk loads it after a warm-up, and the
CPU time each process used over the measured run (user + system, from psutil),
divided by the requests wrk completed, says what one request costs where. The
bare Tornado handler is measured the same way beside it: the ceiling's cost.
With --py-spy (pip install py-spy), each process is sampled during the run
and the functions it spent most of its own time in are listed.
"""

from __future__ import annotations

import argparse
import base64
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from zeroserve.up import free_port

from compare import HERE, image_body, server, wrk, zeroserve_up


def role(proc: psutil.Process) -> str:
    """What a process of the cluster is, by its command line."""
    line = " ".join(proc.cmdline())
    for name in ("broker", "frontend", "worker", "up"):
        if f"zeroserve {name}" in line:
            return "worker launcher" if name == "worker" else name
    if "multiprocessing" in line or "spawn_main" in line:
        return "worker process"
    return Path(proc.cmdline()[1]).name if len(proc.cmdline()) > 1 else proc.name()


def cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
            seconds[proc.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            seconds[proc.pid] = float("nan")
    return seconds


def processes() -> list[psutil.Process]:
    """The server's processes: every descendant of this script but the load and the profiler."""
    return [
        p for p in psutil.Process().children(recursive=True) if p.name() not in ("wrk", "py-spy")
    ]


#: py-spy on the PATH, or beside this Python (pip install py-spy into its venv).
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            PY_SPY, "record", "--pid", str(pid), "--duration", str(int(seconds)),
            "--rate", "250", "--format", "raw", "--nonblocking", "--output", str(out),
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def hottest(raw: Path, count: int) -> list[tuple[str, float]]:
    """The functions with the most samples at the top of the stack, as shares of all samples."""
    self_samples: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frame = stack.split(";")[-1]
        self_samples[frame] += int(n)
        total += int(n)
    return [(frame, n / total) for frame, n in self_samples.most_common(count)] if total else []


def measure(name: str, argv: list[str], args: argparse.Namespace) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    argv = [a.replace("{port}", str(port)) for a in argv]
    probe = {"image": base64.b64encode(b"probe").decode()} if args.body_kb else None
    with server(argv, url, probe):
        procs = processes()
        roles = {proc.pid: role(proc) for proc in procs}
        spies: dict[int, tuple[subprocess.Popen, Path]] = {}
        before: dict[int, float] = {}

        def measuring() -> None:
            if args.py_spy:
                folder = Path(tempfile.mkdtemp())
                for proc in procs:
                    out = folder / f"{proc.pid}.txt"
                    spies[proc.pid] = (py_spy(proc.pid, args.duration, out), out)
            before.update(cpu_seconds(procs))

        body = image_body(args.body_kb) if args.body_kb else None
        result = wrk(
            url, args.concurrency, args.duration, warmup_s=2.0, body=body, measuring=measuring
        )
        after = cpu_seconds(procs)
        for spy, _ in spies.values():
            spy.wait()
    done = result["requests"]
    print(f"\n{name}: {result['rps']:.0f} req/s, {done} requests in {args.duration:g} s (wrk)")
    print(f"  {'process':18} {'pid':>7} {'CPU s':>7} {'us/request':>11} {'CPUs busy':>10}")
    total = 0.0
    for proc in procs:
        used = after[proc.pid] - before[proc.pid]
        total += used
        print(
            f"  {roles[proc.pid]:18} {proc.pid:>7} {used:>7.2f} {used / done * 1e6:>11.1f} "
            f"{used / args.duration:>10.2f}"
        )
    print(f"  {'all':18} {'':>7} {total:>7.2f} {total / done * 1e6:>11.1f}")
    for proc in procs:
        if proc.pid in spies and spies[proc.pid][1].exists():
            top = hottest(spies[proc.pid][1], args.top)
            if top:
                print(f"  hottest in {roles[proc.pid]} {proc.pid} (share of its samples):")
                for frame, share in top:
                    print(f"    {share:6.1%}  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--api", default="DoubleAPI")
    parser.add_argument("--body-kb", type=int, default=0, help="post an image of this size")
    parser.add_argument("--py-spy", action="store_true", help="sample each process with py-spy")
    parser.add_argument("--top", type=int, default=8, help="functions listed per process")
    args = parser.parse_args()
    if args.py_spy and not Path(PY_SPY).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    if not args.body_kb:
        ceiling = [sys.executable, str(HERE / "plain_tornado.py"), "{port}"]
        measure("Tornado handler", ceiling, args)
    measure(f"zeroserve, {args.api}", zeroserve_up(args.api, "{port}", args.workers), args)


if __name__ == "__main__":
    main()
