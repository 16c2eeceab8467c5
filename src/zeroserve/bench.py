"""A small HTTP load generator: keep-alive connections on asyncio protocols, latencies per request.

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

from zeroserve.common.errors import ConfigError


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

    def __post_init__(self) -> None:
        if not self.url.startswith("http://"):
            raise ConfigError(
                f"cluster bench speaks plain HTTP (http://...), not {self.url.split(':', 1)[0]}; "
                "measure HTTPS with wrk"
            )


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

    def percentile_ms(self, q: float, values: list[float] | None = None) -> float | None:
        """None when nothing was measured (printed as "-", never "nan")."""
        values = self.latencies_s if values is None else values
        if not values:
            return None
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000, 3)

    def summary(self) -> dict[str, Any]:
        # Expecting streams, an answer that was not streamed is not a success.
        ok = self.statuses.get(200, 0) - self.errors.get("not streamed", 0)
        streamed = {}
        if self.first_chunk_s:
            streamed = {
                "first_chunk_p50_ms": self.percentile_ms(50, self.first_chunk_s),
                "first_chunk_p99_ms": self.percentile_ms(99, self.first_chunk_s),
            }
        return {
            **streamed,
            "requests": self.requests,
            "ok": ok,
            "seconds": round(self.elapsed_s, 3),
            "rps": round(ok / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "p50_ms": self.percentile_ms(50),
            "p90_ms": self.percentile_ms(90),
            "p99_ms": self.percentile_ms(99),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
        }


class _Answer:
    """Reads one HTTP/1.1 answer from a byte buffer: Content-Length or chunked bodies."""

    __slots__ = ("chunked", "first_chunk", "remaining", "status")

    def __init__(self) -> None:
        self.status = 0
        self.remaining = -1  # body bytes still due; -1 until the head is read
        self.chunked = False
        self.first_chunk: float | None = None

    def feed(self, buf: bytearray) -> bool:
        """Consume what `buf` holds of this answer; True once it is complete."""
        if self.remaining < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            self.status = int(lines[0].split(b" ", 2)[1])
            self.remaining = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    self.remaining = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    self.chunked = True
        if not self.chunked:
            if len(buf) < self.remaining:
                return False
            del buf[: self.remaining]
            return True
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                return False
            size = int(bytes(buf[:end]).split(b";")[0], 16)
            if len(buf) < end + 2 + size + 2:
                return False
            del buf[: end + 2 + size + 2]
            if self.first_chunk is None:
                self.first_chunk = time.monotonic()
            if size == 0:
                return True


class _Connection(asyncio.Protocol):
    """One keep-alive connection: the next request leaves as soon as an answer is complete.

    A protocol rather than streams: per request, one write and (mostly) one
    read callback, with no coroutine or future in between.
    """

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.buf = bytearray()
        self.answer = _Answer()
        self.began = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.began = time.monotonic()
        if self.began >= self.run.stop_at:
            self.transport.close()
            return
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            while self.answer.feed(self.buf):
                self.run.record(self.answer, self.began, time.monotonic())
                self.answer = _Answer()
                self._send()
                if self.transport is None or self.transport.is_closing():
                    return
        except ValueError as exc:
            self.run.error(type(exc).__name__)
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if time.monotonic() < self.run.stop_at:
            self.run.error(type(exc).__name__ if exc else "connection closed")
        if not self.closed.done():
            self.closed.set_result(None)


class _Run:
    """What every connection of one client process shares."""

    def __init__(self, config: BenchConfig, result: BenchResult) -> None:
        parts = urlsplit(config.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.request = (
            f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: {config.content_type}\r\n"
            f"Content-Length: {len(config.payload)}\r\n\r\n"
        ).encode() + config.payload
        self.config = config
        self.result = result
        self.start_at = time.monotonic() + config.warmup_s
        self.stop_at = self.start_at + config.duration_s

    def record(self, answer: _Answer, began: float, done: float) -> None:
        """Every answer completed inside the window counts, however early it began: counting
        only those begun inside it under-reports a slow service."""
        if not self.start_at <= done <= self.stop_at:
            return
        result = self.result
        result.requests += 1
        result.statuses[answer.status] += 1
        result.latencies_s.append(done - began)
        if answer.first_chunk is not None:
            result.first_chunk_s.append(answer.first_chunk - began)
        elif self.config.stream:
            result.errors["not streamed"] += 1

    def error(self, name: str) -> None:
        if time.monotonic() >= self.start_at:
            self.result.errors[name] += 1

    async def connection(self) -> None:
        """Keep one connection going until the end, opening a new one when it is lost."""
        loop = asyncio.get_running_loop()
        while time.monotonic() < self.stop_at:
            try:
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port
                )
            except OSError as exc:
                self.error(type(exc).__name__)
                await asyncio.sleep(0.01)
                continue
            await protocol.closed
            if time.monotonic() < self.stop_at:
                await asyncio.sleep(0.01)


async def _run(config: BenchConfig, concurrency: int) -> BenchResult:
    result = BenchResult()
    run = _Run(config, result)
    await asyncio.gather(*(run.connection() for _ in range(concurrency)))
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
