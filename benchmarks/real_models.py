"""A real model served three ways, measured against the machine's limit.

    python -m venv /tmp/bench
    /tmp/bench/bin/pip install ".[examples]" -r benchmarks/requirements.txt
    /tmp/bench/bin/python benchmarks/real_models.py                  # the convnet of examples/
    /tmp/bench/bin/python benchmarks/real_models.py --model digits   # scikit-learn via ONNX
    /tmp/bench/bin/python benchmarks/real_models.py --connections 32 --duration 5

The model is one of examples/ (the same file `cluster up --api` serves), run

* directly, in one process with every core and no HTTP: JSON parsed, decoded,
  batched, predicted and encoded back to JSON in a loop, at each batch size
  (the best is the ceiling; batch 1's figure shows what batching gains, and its
  median call is what a request costs with nothing around it);
* by LitServe 0.2.19 with batching, one worker per device and two (each with
  one thread per core, and with a core's share);
* by zeroserve's `cluster up` with its defaults, without batching
  (`--max-batch-size 1`: what the hops add to a lone request), and without batching in
  one process with every core, as the direct call has them (the setting for one client).

Every server is driven by wrk (one thread, one body: a random image) at each
connection count; each server process's CPU time over the measured run is
divided by the requests answered, so the table shows where the CPU goes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import psutil

from zeroserve.up import free_port
from zeroserve.worker.launcher import default_process_count
from zeroserve.worker.threads import THREAD_VARIABLES, THREADS_ENV, usable_cores

from compare import server, wrk

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
#: --model -> the file in examples/ and its API class.
MODELS = {
    "cnn": ("cnn_onnx.py", "ConvNetAPI"),
    "digits": ("digits_onnx.py", "DigitsAPI"),
}


def load(model: str) -> tuple[ModuleType, type]:
    file, name = MODELS[model]
    spec = importlib.util.spec_from_file_location(file[:-3], EXAMPLES / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, getattr(module, name)


def request_body(model: str, seed: int = 0) -> dict:
    module, _ = load(model)
    rng = np.random.default_rng(seed)
    if model == "digits":
        return {"pixels": rng.integers(0, 17, module.PIXELS).tolist()}
    return {"pixels": rng.random(module.PIXELS).round(3).tolist()}


def direct(model: str, batch_sizes: list[int], seconds: float) -> dict:
    """The model called in this process, HTTP left out but JSON kept: req/s per batch size,
    and the median time of one request at batch 1."""
    _, api_class = load(model)
    api = api_class()
    api.setup("cpu")
    bodies = [json.dumps(request_body(model, seed)).encode() for seed in range(64)]

    def serve(chunk: list[bytes]) -> list[bytes]:
        inputs = [api.decode_request(json.loads(body)) for body in chunk]
        outputs = api.unbatch(api.predict(api.batch(inputs)))
        return [json.dumps(api.encode_response(out)).encode() for out in outputs]

    rps = {}
    for size in batch_sizes:
        for _ in range(10):  # warm
            serve(bodies[:size])
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            serve(bodies[done % 64 : done % 64 + size] or bodies[:size])
            done += size
        rps[size] = done / (time.perf_counter() - began)
    one = []
    for i in range(200):
        began = time.perf_counter()
        serve([bodies[i % 64]])
        one.append((time.perf_counter() - began) * 1000)
    return {"rps": rps, "p50_ms": statistics.median(one)}


def direct_in_child(
    model: str, batch_sizes: list[int], seconds: float, threads: int | None = None
) -> dict:
    """`direct` in a fresh process with every core, or with `threads` as a worker process
    of zeroserve has them."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if threads is not None:
        env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
        env[THREADS_ENV] = str(threads)
    out = subprocess.run(
        [sys.executable, __file__, "--direct", "--model", model, "--duration", str(seconds),
         "--batch-sizes", *map(str, batch_sizes)],
        capture_output=True, text=True, check=True, env=env, cwd=HERE,
    )  # fmt: skip
    result = json.loads(out.stdout)
    result["rps"] = {int(k): v for k, v in result["rps"].items()}
    return result


LITSERVE_SERVER = """
import importlib.util, sys
import litserve as ls

spec = importlib.util.spec_from_file_location("example", sys.argv[1])
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)
Model = getattr(example, sys.argv[2])


class API(ls.LitAPI):
    setup = Model.setup
    batch = Model.batch
    predict = Model.predict
    unbatch = Model.unbatch
    encode_response = Model.encode_response

    def decode_request(self, request):  # no annotation: LitServe reads the body as JSON
        return Model.decode_request(self, request)


if __name__ == "__main__":
    api = API(max_batch_size=Model.max_batch_size, batch_timeout=Model.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=int(sys.argv[4]))
    server.run(host="127.0.0.1", port=int(sys.argv[3]), generate_client_file=False)
"""


def servers(model: str, litserve: bool) -> dict[str, tuple[list[str], dict]]:
    """name -> (argv with {port}, environment additions)."""
    file, name = MODELS[model]
    spec = f"{EXAMPLES / file}:{name}"
    up = [sys.executable, "-m", "zeroserve", "up", "--api", spec, "--port", "{port}",
          "--log-level", "WARNING"]  # fmt: skip
    cores = str(len(os.sched_getaffinity(0)))
    chosen: dict[str, tuple[list[str], dict]] = {
        "zeroserve, defaults": (up, {}),
        "zeroserve, no batching": ([*up, "--max-batch-size", "1"], {}),
        # For one client at a time: one process with every core, as the direct call has them.
        "zeroserve, one process": (
            [*up, "--max-batch-size", "1", "--workers", "1", "--threads-per-process", cores],
            {},
        ),
    }
    if litserve:
        script = Path(tempfile.mkdtemp()) / "litserve_model.py"
        script.write_text(LITSERVE_SERVER)
        lit = [sys.executable, str(script), str(EXAMPLES / file), name, "{port}"]
        cores = len(os.sched_getaffinity(0))
        chosen["litserve, 1 worker"] = ([*lit, "1"], {})
        chosen[f"litserve, {cores} workers"] = ([*lit, str(cores)], {})
        chosen[f"litserve, {cores} workers, 1 thread"] = (
            [*lit, str(cores)],
            dict.fromkeys(THREAD_VARIABLES, "1"),
        )
    return chosen


def role(proc: psutil.Process) -> str:
    """What a server process is, from its command line."""
    try:
        line = " ".join(proc.cmdline())
    except psutil.Error:
        return "gone"
    if "spawn_main" in line or "forkserver" in line:
        return "model process"
    for word in ("frontend", "broker", "worker"):
        if f"zeroserve {word}" in line or f" {word} " in f" {line} ":
            return "launcher" if word == "worker" else word
    return "main"


class CpuMeter:
    """CPU seconds of a process tree between `start` and `stop`, by role."""

    def __init__(self, root_pid: int) -> None:
        self.root = psutil.Process(root_pid)
        self.before: dict[int, tuple[str, float]] = {}

    def tree(self) -> Iterator[psutil.Process]:
        yield self.root
        yield from self.root.children(recursive=True)

    @staticmethod
    def used(proc: psutil.Process) -> float:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            return t.user + t.system
        return 0.0

    def start(self) -> None:
        self.before = {p.pid: (role(p), self.used(p)) for p in self.tree()}

    def stop(self) -> dict[str, float]:
        by_role: dict[str, float] = {}
        for proc in self.tree():
            name, then = self.before.get(proc.pid, (role(proc), 0.0))
            by_role[name] = by_role.get(name, 0.0) + max(0.0, self.used(proc) - then)
        return by_role


def measure_server(
    argv: list[str], env: dict, body: Path, payload: dict, args: argparse.Namespace
) -> list[dict]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    argv = [a.replace("{port}", str(port)) for a in argv]
    rows = []
    with server(argv, url, payload, env=env) as proc:
        meter = CpuMeter(proc.pid)
        for connections in args.connections:
            r = wrk(url, connections, args.duration, args.warmup, body=body, measuring=meter.start)
            cpu = meter.stop()
            answered = max(1, r["requests"] - r["failed"])
            r["cpu_ms"] = {k: v * 1000 / answered for k, v in cpu.items() if v > 0.005}
            r["connections"] = connections
            rows.append(r)
            print(
                f"    {connections:>3} connections: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms"
                f", p99 {r['p99_ms']:.2f} ms, non-2xx {r['failed']}",
                flush=True,
            )
    return rows


def cpu_split(cpu: dict[str, float]) -> str:
    order = ["main", "frontend", "broker", "launcher", "model process"]
    parts = [f"{k} {cpu[k]:.2f}" for k in sorted(cpu, key=order.index)]
    return f"{sum(cpu.values()):.2f} ({', '.join(parts)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="cnn")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds a measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each run")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--no-litserve", action="store_true", help="leave LitServe out")
    parser.add_argument("--direct", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.direct:
        print(json.dumps(direct(args.model, args.batch_sizes, args.duration)))
        return

    payload = request_body(args.model)
    body = Path(tempfile.mkdtemp()) / "body.json"
    body.write_text(json.dumps(payload))
    litserve = not args.no_litserve and importlib.util.find_spec("litserve") is not None
    cores = len(os.sched_getaffinity(0))
    print(f"model {args.model}, {cores} cores; direct calls, {args.duration:g} s a batch size")
    ceiling = direct_in_child(args.model, args.batch_sizes, args.duration)
    best_batch = max(ceiling["rps"], key=ceiling["rps"].get)
    for size, rps in ceiling["rps"].items():
        print(f"    batch {size:>3}: {rps:.0f} req/s ({rps / ceiling['rps'][1]:.2f}x batch 1)")
    print(f"    one request at batch 1: {ceiling['p50_ms']:.3f} ms (median)", flush=True)
    # What a worker process of `cluster up`'s defaults has: a process per core, a thread each.
    share = max(1, usable_cores() // default_process_count())
    alone = direct_in_child(args.model, [1], min(args.duration, 3.0), threads=share)
    ceiling["worker_p50_ms"] = alone["p50_ms"]
    print(f"    one request with {share} thread(s), as a worker has: {alone['p50_ms']:.3f} ms")

    results: dict[str, list[dict]] = {}
    for name, (argv, env) in servers(args.model, litserve).items():
        print(f"  {name}", flush=True)
        results[name] = measure_server(argv, env, body, payload, args)

    top = ceiling["rps"][best_batch]
    print(
        f"\nwrk -t1, {args.duration:g} s a run; ceiling: {top:.0f} req/s (one process, "
        f"all cores, batch {best_batch}); CPU in ms per answered request, by process"
    )
    print(
        f"{'server':34} {'conns':>5} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'of ceiling':>10}  CPU ms/request"
    )
    for name, rows in results.items():
        for r in rows:
            print(
                f"{name:34} {r['connections']:>5} {r['rps']:>7.0f} {r['p50_ms']:>7.2f} "
                f"{r['p99_ms']:>7.2f} {r['rps'] / top:>9.0%}  {cpu_split(r['cpu_ms'])}"
            )
    summary(results, ceiling, top)


def summary(results: dict[str, list[dict]], ceiling: dict, top: float) -> None:
    """The issue's three targets, read off the table."""

    def at(name: str, connections: int) -> dict | None:
        return next((r for r in results.get(name, []) if r["connections"] == connections), None)

    zs = at("zeroserve, defaults", 32)
    lit = max(
        (r for name in results if name.startswith("litserve") if (r := at(name, 32))),
        key=lambda r: r["rps"],
        default=None,
    )
    print()
    if zs:
        print(f"zeroserve at 32 connections: {zs['rps'] / top:.0%} of the ceiling")
        if lit:
            print(f"zeroserve at 32 connections: {zs['rps'] / lit['rps']:.2f}x LitServe's best")
    lone = at("zeroserve, no batching", 1)
    if lone:
        print(
            f"at 1 connection, zeroserve without batching adds "
            f"{lone['p50_ms'] - ceiling['worker_p50_ms']:.2f} ms to a direct call's p50 with a "
            f"worker's threads ({lone['p50_ms'] - ceiling['p50_ms']:.2f} ms to one with all "
            "cores)"
        )
    single = at("zeroserve, one process", 1)
    if single:
        print(
            f"at 1 connection, zeroserve with one process of every core adds "
            f"{single['p50_ms'] - ceiling['p50_ms']:.2f} ms to a direct call's p50 with all cores"
        )


if __name__ == "__main__":
    main()
