"""The host-level worker launcher: checks the API once, then runs one worker process per core."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import psutil
import zmq

from zeroserve.common import protocol as p
from zeroserve.common.connection import open_dealer
from zeroserve.common.errors import ProtocolError
from zeroserve.common.exits import Exit, final
from zeroserve.common.frames import has_input, recv_frames, send_frames
from zeroserve.common.supervisor import Supervisor, apply_environment
from zeroserve.worker.config import WorkerConfig
from zeroserve.worker.devices import plan_devices
from zeroserve.worker.loader import GivenAPI, load_api, resolve_settings
from zeroserve.worker.process import run_worker_process
from zeroserve.worker.scaling import SCALE_DOWN_AFTER_S, Load, Scaler
from zeroserve.worker.threads import (
    environment_shown,
    share,
    thread_environment,
)

log = logging.getLogger(__name__)


def default_process_count() -> int:
    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


def run_launcher(config: WorkerConfig, given: GivenAPI | None = None) -> int:
    """Run until SIGTERM/SIGINT; an unusable API raises ConfigError before anything starts.

    The processes' share of the cores goes into this process's environment, which each
    inherits as it starts, before anything of the user's is imported in it."""
    supervisor, link = build_launcher(config, given)
    return serve_launcher(supervisor, link)


def build_launcher(
    config: WorkerConfig,
    given: GivenAPI | None = None,
    *,
    embedded: bool = False,
) -> tuple[Supervisor, LauncherLink]:
    """The supervisor of the worker processes and the link that reports them; an unusable
    API raises ConfigError here.

    `embedded`: run in a thread of a process that does other things (``LitServer``'s), whose
    environment is left as it is (each worker process gets the thread variables as it
    starts) and whose signals are its own (``Supervisor.request_stop`` stops it)."""
    devices = device_plan(config)
    threads = share(len(devices), config.threads_per_process)
    env = thread_environment(threads)
    if not embedded:
        apply_environment(env)
    environ = _changed(env)
    config = replace(config, threads_per_process=threads)
    api = given.api if given is not None else load_api(config.api)
    settings = resolve_settings(api, config)
    scaling = config.max_processes is not None
    count = (config.min_processes or 1) if scaling else len(devices)
    log.info(
        "starting %d worker process(es)%s for %s (service %s version %s, route %s, on %s, %s) "
        "against %s",
        count,
        f" (autoscaling up to {config.max_processes})" if scaling else "",
        config.api,
        settings.service,
        settings.version,
        settings.route,
        ", ".join(sorted(set(devices))),
        f"{threads} thread(s) each" if threads else f"threads from {environment_shown(environ)}",
        ", ".join(config.brokers),
    )
    supervisor = Supervisor(
        "worker",
        _embedded_worker if embedded else run_worker_process,
        (config, given),
        count,
        stop_timeout_s=config.drain_timeout_s + 2.0,
        args_for=lambda k: (process_config(config, devices[k % len(devices)]), given),
        final_exits=final_exits(config),
        reports=True,
        restart=config.restart,
        restarted_anyway=frozenset({Exit.HUNG}),
        done_exits=frozenset({Exit.DRAINED}),
        env=env if embedded else None,
        signals=not embedded,
    )
    link = LauncherLink(config, settings.service, supervisor, environ)
    supervisor.on_tick = link.tick
    return supervisor, link


def _embedded_worker(config: WorkerConfig, given: GivenAPI | None, said: Any) -> None:
    """A worker process of an embedded launcher, in a process group of its own (as a launcher
    process keeps its workers in its own): a Ctrl-C at the terminal reaches the process that
    runs the launcher, which stops them."""
    os.setpgid(0, 0)
    run_worker_process(config, given, said)


def serve_launcher(supervisor: Supervisor, link: LauncherLink) -> int:
    """Supervise until stopped; the link says goodbye at the end."""
    try:
        return supervisor.run()
    finally:
        link.close()


def _changed(env: Mapping[str, str | None]) -> dict[str, str]:
    """This process's environment as `env` changes it: what the worker processes see."""
    changed = dict(os.environ)
    apply_environment(env, changed)
    return changed


class LauncherLink:
    """The launcher's word to each broker, a LAUNCHER once a heartbeat interval: what it runs
    and, while its processes keep failing (a setup that raises, a refusal), why, so that
    ``cluster status`` can say why a service has no worker. Each broker answers LAUNCHER with
    its service's load, by which an autoscaling launcher adds and removes processes."""

    def __init__(
        self,
        config: WorkerConfig,
        service: str,
        supervisor: Supervisor,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        #: The thread variables its processes run with, shown by ``cluster status``.
        self.thread_env = environment_shown(os.environ if environ is None else environ)
        self.service = service
        self.supervisor = supervisor
        keys = config.link.client_keys()
        context: zmq.Context = zmq.Context.instance()
        # Heartbeats to a broker that is down are dropped, not queued for its return; it is
        # tried again each heartbeat at most.
        self._socks = [
            open_dealer(
                context,
                endpoint,
                keys,
                immediate=True,
                reconnect_max_s=config.link.heartbeat_interval_s,
            )
            for endpoint in config.brokers
        ]
        self._next_at = 0.0
        #: A LAUNCHER has gone to each broker: until then, one its socket could not take yet
        #: (no connection made so far) is said again at the next tick, not a heartbeat later.
        self._greeted = [False] * len(self._socks)
        #: What each broker said last of the service's load.
        self._loads = [Load() for _ in self._socks]
        self.scaler: Scaler | None = None
        if config.max_processes is not None:
            self.scaler = Scaler(
                config.min_processes or 1,
                config.max_processes,
                config.scale_down_after_s or SCALE_DOWN_AFTER_S,
                grow_grace_s=config.link.silence_limit_s(),
            )

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next_at:
            return
        self._next_at = now + self.config.link.heartbeat_interval_s
        for index, sock in enumerate(self._socks):
            while has_input(sock):
                self._loads[index] = _load_of(recv_frames(sock), self._loads[index])
        if self.scaler is not None:
            load = Load(
                queued=sum(load.queued for load in self._loads),
                in_flight=sum(load.in_flight for load in self._loads),
            )
            step = self.scaler.decide(now, self.supervisor.wanted, load)
            if step > 0:
                self.supervisor.grow()
            elif step < 0:
                self.supervisor.shrink()
        meta: p.LauncherMeta = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "api": self.config.api[-256:],
            "service": self.service,
            "processes": self.supervisor.wanted,
            "running": len(self.supervisor.pids()),
            "problem": self.supervisor.problem()[:1000],
            "heartbeat_interval_s": self.config.link.heartbeat_interval_s,
            "threads_per_process": self.config.threads_per_process or 0,
            "thread_env": self.thread_env[:1000],
        }
        if self.scaler is not None:
            meta["min_processes"] = self.scaler.minimum
            meta["max_processes"] = self.scaler.maximum
        beat = p.launcher(meta)
        for index, sock in enumerate(self._socks):
            try:
                send_frames(sock, beat)
                self._greeted[index] = True
            except zmq.Again:
                if not self._greeted[index]:
                    self._next_at = now

    def close(self) -> None:
        for sock in self._socks:
            with contextlib.suppress(zmq.Again):
                send_frames(sock, p.disconnect("launcher stopping"))
                sock.setsockopt(zmq.LINGER, 200)
            sock.close()


def _load_of(frames: list[bytes], last: Load) -> Load:
    """A broker's answer to the launcher's LAUNCHER: its service's load (anything else, a
    refusal say, leaves the last word as it was)."""
    try:
        command, args = p.parse(frames, p.TO_LAUNCHER)
        if command != p.LAUNCHER:
            return last
        meta = p.parse_launcher(args[0])
    except ProtocolError:
        return last
    if "queued" in meta and "in_flight" in meta:
        return Load(queued=meta["queued"], in_flight=meta["in_flight"])
    return last


def device_plan(config: WorkerConfig) -> list[str]:
    """The device of each worker process (as many as there may be): --device for all, or from
    the accelerator."""
    processes = config.max_processes or config.processes
    if config.device is not None:
        return [config.device] * (processes or default_process_count())
    return plan_devices(
        config.accelerator or "auto",
        config.devices,
        config.workers_per_device,
        processes,
        default_process_count(),
    )


def process_config(config: WorkerConfig, device: str) -> WorkerConfig:
    """What one worker process runs with: its own device, the plan done."""
    return replace(config, device=device, accelerator=None, devices=None, workers_per_device=1)


def final_exits(config: WorkerConfig) -> dict[int, str]:
    """A refusal by the broker is for good; a failing setup too, when asked (`cluster up`)."""
    if config.exit_on_setup_failure:
        return final(Exit.REFUSED, Exit.SETUP_FAILED)
    return final(Exit.REFUSED)
