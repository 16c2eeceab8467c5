"""One worker process: set up the user's API, announce it to the broker, serve until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import secrets
import signal
import socket
import sys
import time
from typing import Any

import psutil

from zeroserve.common import protocol as p
from zeroserve.common.connection import broker_links
from zeroserve.common.errors import ConfigError
from zeroserve.common.exits import Exit
from zeroserve.common.link import silence_limit_s
from zeroserve.common.logs import configure_logging
from zeroserve.common.runtime import batch_io_threads, tune_gc
from zeroserve.common.supervisor import report
from zeroserve.common.tracing import Tracing
from zeroserve.common.tracing import setup as setup_tracing
from zeroserve.common.version import version as zeroserve_version
from zeroserve.worker.api import inherits_default
from zeroserve.worker.config import WorkerConfig
from zeroserve.worker.devices import isolate
from zeroserve.worker.hooks import Hooks
from zeroserve.worker.loader import (
    ApiSettings,
    GivenAPI,
    capacity_now,
    continuous_loop_of,
    load_api,
    load_hooks,
    prepare_api,
    resolve_settings,
    uses_default_steps,
)
from zeroserve.worker.loops import LoopKind
from zeroserve.worker.loops.async_loop import AsyncLoop
from zeroserve.worker.loops.batching import BatchingLoop
from zeroserve.worker.loops.continuous import ContinuousLoop, DefaultSteps
from zeroserve.worker.loops.serving import ServingLoop
from zeroserve.worker.mcp_tool import mcp_tool
from zeroserve.worker.pipeline import Pipeline
from zeroserve.worker.threads import (
    environment_shown,
    limit_environment,
    limit_pools,
    threads_per_process,
)

log = logging.getLogger(__name__)

#: The largest request schema a worker announces (READY's metadata is at most 64 KiB).
MAX_SCHEMA_BYTES = 16 * 1024


def request_schema(model: Any) -> dict[str, Any] | None:
    """The JSON schema of the API's request model, for the frontend's OpenAPI page."""
    if model is None or not callable(getattr(model, "model_json_schema", None)):
        return None
    try:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    except Exception:
        log.warning("%s has no JSON schema; /openapi.json leaves it out", model.__name__)
        return None
    if len(p.pack_meta(schema)) > MAX_SCHEMA_BYTES:
        log.warning("the schema of %s is too large to announce", model.__name__)
        return None
    return schema


#: How often the event loop asks the serving loop whether something blocks it.
BLOCKED_CHECK_S = 0.25


def serving_loop(api: Any, settings: ApiSettings, pipeline: Pipeline, **kwargs: Any) -> ServingLoop:
    """The loop of the API's kind, chosen once at start."""
    args = (pipeline, settings.max_batch_size, settings.batch_timeout_s)
    if settings.kind is LoopKind.ASYNC:
        return AsyncLoop(*args, **kwargs)
    if settings.kind is LoopKind.CONTINUOUS:
        steps = api
        if uses_default_steps(api):
            length = getattr(continuous_loop_of(api), "max_sequence_length", 2048)
            steps = DefaultSteps(api, settings.max_batch_size, length)
        return ContinuousLoop(*args, steps=steps, **kwargs)
    return BatchingLoop(*args, **kwargs)


class WorkerProcess:
    """The event-loop side of a worker: heartbeats, drain and watchdog; the serving loop's
    thread does the serving."""

    def __init__(
        self,
        config: WorkerConfig,
        api: Any,
        settings: ApiSettings,
        hooks: Hooks,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        self.api = api
        self.settings = settings
        self.hooks = hooks
        self.mcp_tool = mcp_tool(api, settings.routes[0]["path"])
        self.exit_code = 0
        #: A broker told it to retire (``cluster drain``): it drains, then exits Exit.DRAINED.
        self.retired = False
        #: Why the broker refused this worker, if it did.
        self.refusal = ""
        #: This process's name; its data socket to each broker is named by it and a session
        #: number (``p.session_name``), its control socket's heartbeats name that.
        self.identity = b"W" + secrets.token_bytes(15)
        self._sessions = 0
        #: Per broker: the name of the current session's data socket.
        self._session_names = [p.session_name(self.identity, 0)] * len(config.brokers)
        self._parent_pid = os.getppid()
        self._started_at = time.monotonic()
        #: Seconds of predict a request, measured over the last heartbeats' windows.
        self._per_request_s: float | None = None
        self._measured = (0, 0.0)
        self._stopping: asyncio.Event | None = None
        #: Per broker: set once it acknowledged the drain (or can no longer).
        self._drain_acked: list[asyncio.Event] = []
        #: Set once no request is held, so that a drain can wait for it.
        self._empty: asyncio.Event | None = None
        #: Per broker: when this worker last said READY to it.
        self._announced_at = [0.0] * len(config.brokers)
        #: What the API's health() said last; heartbeats carry it to the broker.
        self.healthy = True
        health = getattr(api, "health", None)
        self._health = health if callable(health) and not inherits_default(health) else None
        keys = config.link.client_keys()
        self.pipeline = Pipeline(
            api,
            max_batch_size=settings.max_batch_size,
            stream=settings.stream,
            hooks=hooks,
            spec=settings.spec,
            concurrent=settings.kind is LoopKind.ASYNC,
            tracing=tracing,
            expose_errors=config.expose_errors,
            max_models=settings.max_models,
        )
        self.serving = serving_loop(
            api,
            settings,
            self.pipeline,
            endpoints=config.brokers,
            on_control=self._on_message,
            on_failed=self._on_batching_failed,
            keys=keys,
            version=settings.version,
        )
        #: A control link to each broker; the serving loop has a data socket to each.
        self.links = broker_links(
            config.brokers,
            on_message=self._on_message,
            on_connect=self._announce,
            on_lost=self._on_lost,
            table=p.TO_WORKER,
            heartbeat_meta=self._heartbeat_meta,
            link=config.link,
            keys=keys,
            # Heartbeats are not queued while a broker is away: each would be answered ANNOUNCE.
            immediate=True,
            name=f"worker {os.getpid()}",
        )

    # -- talking to the broker ---------------------------------------------------

    def _ready_meta(self) -> p.ReadyMeta:
        s = self.settings
        return {
            "service": s.service,
            "routes": s.routes,
            "spec": type(s.spec).__name__ if s.spec is not None else None,
            "models": s.models,
            # Split between the brokers, so that all they may give at once stays bounded.
            "capacity": max(1, -(-s.capacity // len(self.links))),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "cores": psutil.cpu_count(logical=False) or os.cpu_count() or 1,
            "api": type(self.api).__name__,
            "max_batch_size": s.max_batch_size,
            "batch_timeout_s": s.batch_timeout_s,
            "stream": s.stream,
            "loop": s.kind.value,
            "headers": self.pipeline.wants_headers,
            "authorize": self.pipeline.authorizer is not None,
            "request_schema": request_schema(self.pipeline.request_model),
            "mcp_tool": self.mcp_tool,
            "device": self.config.device or "cpu",
            "version": zeroserve_version(),
            "model_version": s.version,
            "heartbeat_interval_s": self.config.link.heartbeat_interval_s,
            "threads_per_process": threads_per_process(),
            "thread_env": environment_shown()[:1000],
            "max_models": s.max_models,
            "loaded_models": list(self.pipeline.models.held) if self.pipeline.models else [],
        }

    def _announce(self, link: int) -> None:
        """Say READY to broker `link` on a fresh data socket of a new name, forgetting work of
        its earlier session (that broker re-sends it)."""
        self._announced_at[link] = time.monotonic()
        self._sessions += 1
        name = self._session_names[link] = p.session_name(self.identity, self._sessions)
        self.serving.announce(link, name, p.ready(self._ready_meta()))

    def _heartbeat_meta(self, link: int) -> dict[str, Any]:
        b = self.serving
        return {
            "worker": self._session_names[link],
            "in_flight": len(b.jobs),
            "queued": b.queued,
            "running": b.running,
            "done": b.done,
            "batches": b.batches,
            "batch_sizes": {str(k): v for k, v in dict(b.batch_sizes).items()},
            "busy_s": round(b.busy_s, 3),
            "uptime_s": round(time.monotonic() - self._started_at, 3),
            "bad_messages": sum(link.bad_messages for link in self.links) + b.bad_messages,
            "healthy": self.healthy,
            "capacity": self._capacity_per_broker(),
            **(self.pipeline.models.counters() if self.pipeline.models is not None else {}),
        }

    def _capacity_per_broker(self) -> int:
        """Its slots now, split between the brokers as READY splits them."""
        done, busy_s = self.serving.done, self.serving.busy_s
        if done - self._measured[0] >= 8:
            self._per_request_s = (busy_s - self._measured[1]) / (done - self._measured[0])
            self._measured = (done, busy_s)
        fixed = self.config.capacity is not None
        capacity = capacity_now(self.settings, fixed, self._per_request_s)
        return max(1, -(-capacity // len(self.links)))

    async def _watch(self) -> None:
        """Once a heartbeat: stop when the launcher is gone, recycle when predict hangs."""
        while True:
            await asyncio.sleep(self.config.link.heartbeat_interval_s)
            if os.getppid() != self._parent_pid:
                log.error("the worker launcher is gone; stopping")
                self.stop()
            self._check_hung()

    async def _watch_health(self) -> None:
        """Ask the API's health() once a heartbeat, a sync one in a thread so that it cannot
        stop the heartbeats; one that raises, says False or outlasts the heartbeat window
        fails (and is not asked again before it returns)."""
        assert self._health is not None
        health = self._health
        window_s = self.config.link.silence_limit_s()
        pending: asyncio.Future | None = None
        while True:
            why = "it returned False"
            if pending is None or pending.done():
                pending = asyncio.ensure_future(
                    health() if inspect.iscoroutinefunction(health) else asyncio.to_thread(health)
                )
            try:
                healthy = bool(await asyncio.wait_for(asyncio.shield(pending), window_s))
            except asyncio.TimeoutError:
                healthy, why = False, f"it took over {window_s:g} s"
            except Exception as exc:
                healthy, why = False, f"it raised {type(exc).__name__}: {exc}"
            if healthy != self.healthy:
                self.healthy = healthy
                if healthy:
                    log.info("%s.health() passes again", type(self.api).__name__)
                else:
                    log.warning("%s.health() failed (%s)", type(self.api).__name__, why)
            await asyncio.sleep(self.config.link.heartbeat_interval_s)

    async def _watch_blocked(self) -> None:
        while True:
            await asyncio.sleep(BLOCKED_CHECK_S)
            self.serving.report_blocked()

    def _check_hung(self) -> None:
        """Work still holding the serving thread long after every deadline in it: the thread
        cannot be stopped, so the process ends and its launcher starts a fresh one."""
        overdue_s = self.serving.overdue_s(time.monotonic())
        if overdue_s > self.config.hang_grace_s:
            log.error(
                "%s has run %.0f s past the deadline of every request it holds; "
                "recycling this process",
                type(self.api).__name__,
                overdue_s,
            )
            # The data sockets belong to the hung thread: goodbyes go on the control sockets.
            for link, name in zip(self.links, self._session_names, strict=True):
                link.close(p.disconnect("hung", worker=name))
            logging.shutdown()
            os._exit(Exit.HUNG)

    def _on_lost(self, link: int, why: str) -> None:
        log.warning("lost the broker at %s (%s)", self.config.brokers[link], why)
        self._no_ack_coming(link)

    def _no_ack_coming(self, link: int) -> None:
        """A drain waiting for this broker's acknowledgement stops waiting: it has it, or it
        will not come."""
        if self._drain_acked:
            self._drain_acked[link].set()

    def _on_message(self, link: int, command: bytes, args: list[Any]) -> None:
        """What a broker says on either socket, beyond heartbeats (the link handles those)
        and work (the serving loop's)."""
        if command == p.DRAIN:
            self._no_ack_coming(link)
        elif command == p.REFUSED:
            if self.refusal:
                return  # said on its other socket too
            why = p.parse_refusal(args[0])[1]
            log.debug("the broker refused this worker: %s", why)  # its launcher says it
            self.refusal = f"the broker refused it: {why}"
            self.exit_code = Exit.REFUSED
            self.stop()
        elif command == p.ANNOUNCE and not self.is_stopping:
            # A heartbeat may reach a broker before the READY sent with it on the other socket:
            # within a heartbeat interval of a READY, that READY is the answer.
            since_s = time.monotonic() - self._announced_at[link]
            if since_s > self.config.link.heartbeat_interval_s:
                log.info("the broker does not know this worker (it restarted?); announcing again")
                self._announce(link)
        elif command == p.RETIRE:
            if not self.retired:
                log.info("version %s is retired (cluster drain): draining", self.settings.version)
            self.retired = True
            self.stop()
        elif command == p.DISCONNECT:
            log.info("the broker said goodbye: %s", p.parse_disconnect(args[0])["reason"] or "-")
            self._no_ack_coming(link)

    def _on_batching_failed(self) -> None:
        self.exit_code = 1
        self.stop()

    # -- life cycle -------------------------------------------------------------------

    @property
    def is_stopping(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def serve(self) -> int:
        self._stopping = asyncio.Event()
        self._drain_acked = [asyncio.Event() for _ in self.links]
        self._empty = asyncio.Event()
        aloop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            aloop.add_signal_handler(sig, self.stop)
        self.serving.start()
        for link in self.links:
            link.start()
        self.hooks.fire("on_server_start")
        watchdogs = [aloop.create_task(self._watch()), aloop.create_task(self._watch_blocked())]
        if self._health is not None:
            watchdogs.append(aloop.create_task(self._watch_health()))
        log.info(
            "worker %d set up for %s version %s (%s), %s loop, batch %d / %.3f s, %d slots; it "
            "serves once a broker answers (%s)",
            os.getpid(),
            self.settings.service,
            self.settings.version,
            self.settings.route,
            self.settings.kind,
            self.settings.max_batch_size,
            self.settings.batch_timeout_s,
            self.settings.capacity,
            ", ".join(self.config.brokers),
        )
        await self._stopping.wait()
        if self.exit_code == 0:
            await self._drain()
        for watchdog in watchdogs:
            watchdog.cancel()
        self.serving.stop(p.disconnect("stopping"))
        self.hooks.fire("on_server_end")
        for link in self.links:
            link.close()
        return Exit.DRAINED if self.retired and self.exit_code == 0 else self.exit_code

    async def _drain(self) -> None:
        """Stop taking work, finish what is held, then say goodbye."""
        assert self._empty is not None
        held = self.serving.jobs
        log.info("draining: %d request(s) held", len(held))
        deadline = time.monotonic() + self.config.drain_timeout_s
        asked = [i for i, link in enumerate(self.links) if link.alive]
        for index in asked:
            self._drain_acked[index].clear()
            self.serving.send(index, p.drain())
        if asked:
            window_s = silence_limit_s(
                self.config.link.heartbeat_liveness,
                *(self.links[i].broker_interval_s for i in asked),
            )
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(self._drain_acked[i].wait() for i in asked)), window_s
                )
            except asyncio.TimeoutError:
                log.warning("a broker did not acknowledge the drain; finishing what is held")
        self.serving.watch_empty(self._empty)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._empty.wait(), max(0.0, deadline - time.monotonic()))
        if held:
            log.warning("drain timed out with %d request(s) unfinished", len(held))
        else:
            log.info("drained")


async def _await(awaitable: Any) -> Any:
    return await awaitable


def run_worker_process(
    config: WorkerConfig, given: GivenAPI | None = None, said: Any = None
) -> None:
    """Entry point of a spawned worker process; `said` takes a last word for the launcher."""
    configure_logging(config.link.log_level, "worker")
    batch_io_threads()
    device = isolate(config.device or "cpu")
    limit_environment(config.threads_per_process)
    try:
        tracing = setup_tracing("worker")
        api = given.api if given is not None else load_api(config.api)
        settings = resolve_settings(api, config)
        mcp_tool(api, settings.routes[0]["path"])  # refused before setup, not after
        hooks = load_hooks(api, config, given)
    except ConfigError as exc:
        log.error("%s", exc)
        report(said, str(exc))
        sys.exit(Exit.SETUP_FAILED)
    try:
        prepare_api(api, settings)
        hooks.fire("on_before_setup")
        with contextlib.suppress(AttributeError):
            api.device = device
        setup = getattr(api, "setup", None)
        if callable(setup):
            result = setup(device)
            if inspect.isawaitable(result):
                asyncio.run(_await(result))
    except Exception as exc:
        log.exception(
            "%s.setup failed (%s: %s); this worker process stops",
            type(api).__name__,
            type(exc).__name__,
            exc,
        )
        report(said, f"{type(api).__name__}.setup failed: {type(exc).__name__}: {exc}")
        sys.exit(Exit.SETUP_FAILED)
    if config.threads_per_process is not None:
        limit_pools(config.threads_per_process)
    hooks.fire("on_after_setup")
    worker = WorkerProcess(config, api, settings, hooks, tracing)
    tune_gc()
    code = asyncio.run(worker.serve())
    if tracing is not None:
        tracing.shutdown()
    if worker.refusal:
        report(said, worker.refusal)
    sys.exit(code)
