"""A small HTTP load generator: keep-alive connections on asyncio streams, latencies per request.

It speaks just enough HTTP/1.1 (Content-Length and chunked answers) to stay
far cheaper per request than the servers it measures; spreading the
connections over several client processes raises its ceiling further.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit


@dataclass(frozen=True)
class BenchConfig:
    url: str
    concurrency: int = 32
    duration_s: float = 10.0
    payload: bytes = b'{"input": 2}'
    content_type: str = "application/json"
    processes: int = 1
    warmup_s: float = 1.0
    #: Expect chunked (streamed) answers; any other counts as an error.
    stream: bool = False


@dataclass
class BenchResult:
    requests: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    #: Time to the first piece of the body, for streamed answers.
    first_chunk_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def merge(self, other: BenchResult) -> None:
        self.requests += other.requests
        self.elapsed_s = max(self.elapsed_s, other.elapsed_s)
        self.latencies_s += other.latencies_s
        self.first_chunk_s += other.first_chunk_s
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)

    def percentile_ms(self, q: float, values: list[float] | None = None) -> float:
        values = self.latencies_s if values is None else values
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000

    def summary(self) -> dict[str, Any]:
        ok = self.statuses.get(200, 0)
        streamed = {}
        if self.first_chunk_s:
            streamed = {
                "first_chunk_p50_ms": round(self.percentile_ms(50, self.first_chunk_s), 3),
                "first_chunk_p99_ms": round(self.percentile_ms(99, self.first_chunk_s), 3),
            }
        return {
            **streamed,
            "requests": self.requests,
            "ok": ok,
            "seconds": round(self.elapsed_s, 3),
            "rps": round(ok / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "p50_ms": round(self.percentile_ms(50), 3),
            "p90_ms": round(self.percentile_ms(90), 3),
            "p99_ms": round(self.percentile_ms(99), 3),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
        }


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, float | None]:
    """Read one answer; return its status and, when it was chunked, when its first piece came."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    first_chunk = None
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if first_chunk is None:
                first_chunk = time.monotonic()
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, first_chunk


async def _connection(
    config: BenchConfig, result: BenchResult, start_at: float, stop_at: float
) -> None:
    parts = urlsplit(config.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: {config.content_type}\r\nContent-Length: {len(config.payload)}\r\n\r\n"
    ).encode() + config.payload
    reader = writer = None
    while time.monotonic() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            began = time.monotonic()
            writer.write(request)
            status, first_chunk = await _read_response(reader)
            done = time.monotonic()
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if time.monotonic() >= start_at:
                result.errors[type(exc).__name__] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
            continue
        if began >= start_at and done <= stop_at:
            result.requests += 1
            result.statuses[status] += 1
            if config.stream and first_chunk is None:
                result.errors["not streamed"] += 1
            result.latencies_s.append(done - began)
            if first_chunk is not None:
                result.first_chunk_s.append(first_chunk - began)
    if writer is not None:
        writer.close()


async def _run(config: BenchConfig, concurrency: int) -> BenchResult:
    result = BenchResult()
    start_at = time.monotonic() + config.warmup_s
    stop_at = start_at + config.duration_s
    await asyncio.gather(
        *(_connection(config, result, start_at, stop_at) for _ in range(concurrency))
    )
    result.elapsed_s = config.duration_s
    return result


def _run_in_process(config: BenchConfig, concurrency: int) -> BenchResult:
    return asyncio.run(_run(config, concurrency))


def _progress(config: BenchConfig, done: threading.Event, out: TextIO) -> None:
    total = config.warmup_s + config.duration_s
    began = time.monotonic()
    while not done.wait(0.25):
        elapsed = min(time.monotonic() - began, total)
        filled = int(30 * elapsed / total)
        phase = "warming up" if elapsed < config.warmup_s else "measuring"
        out.write(f"\r[{'#' * filled}{' ' * (30 - filled)}] {elapsed:4.1f}/{total:.1f} s {phase}  ")
        out.flush()
    out.write("\r" + " " * 60 + "\r")
    out.flush()


def run_bench(config: BenchConfig, progress: TextIO | None = None) -> BenchResult:
    """Drive `config.url` for `duration_s` (after a warm-up) and return what was measured.

    With `progress`, a bar is drawn there while it runs.
    """
    done = threading.Event()
    if progress is not None:
        threading.Thread(target=_progress, args=(config, done, progress), daemon=True).start()
    try:
        return _run_all(config)
    finally:
        done.set()


def _run_all(config: BenchConfig) -> BenchResult:
    if config.processes <= 1:
        return _run_in_process(config, config.concurrency)
    shares = [config.concurrency // config.processes] * config.processes
    for i in range(config.concurrency % config.processes):
        shares[i] += 1
    with multiprocessing.get_context("spawn").Pool(config.processes) as pool:
        parts = pool.starmap(_run_in_process, [(config, n) for n in shares if n])
    total = BenchResult()
    for part in parts:
        total.merge(part)
    return total
