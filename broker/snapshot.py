"""The broker's STATUS answer, built from its registry: plain data, no sockets, no clock of
its own (the caller says when ``now`` is)."""

from __future__ import annotations

from collections.abc import Mapping

from zeroserve.broker.registry import LauncherRecord, Registry, WorkerRecord, version_order
from zeroserve.common.snapshot import (
    BrokerStatus,
    FrontendStatus,
    LauncherStatus,
    ServiceStatus,
    Snapshot,
    WorkerStatus,
)


def worker_status(w: WorkerRecord, now: float) -> WorkerStatus:
    """One worker's record (the one place a per-worker field is filled)."""
    return {
        "id": w.short_id,
        "host": w.host,
        "pid": w.pid,
        "service": w.service,
        "state": w.state,
        "device": w.device,
        "capacity": w.capacity,
        "free": w.credit,
        "in_flight": len(w.assigned),
        "done": w.done,
        "last_heartbeat_s": round(now - w.last_seen, 3),
        "uptime_s": round(now - w.joined_at, 3),
        "info": w.info,
        "reported": w.reported,
        "models": sorted(w.models),
        "model_version": w.model_version,
    }


def launcher_status(r: LauncherRecord, now: float) -> LauncherStatus:
    return {
        "host": r.host,
        "pid": r.pid,
        "api": r.api,
        "service": r.service,
        "processes": r.processes,
        "running": r.running,
        "problem": r.problem,
        "min_processes": r.min_processes,
        "max_processes": r.max_processes,
        "threads_per_process": r.threads_per_process,
        "thread_env": r.thread_env,
        "last_heartbeat_s": round(now - r.last_seen, 3),
    }


def build(
    registry: Registry,
    broker: BrokerStatus,
    counters: Mapping[str, int],
    *,
    model_routing: bool,
    now: float,
) -> Snapshot:
    """The whole cluster as this broker sees it, for ``cluster status``."""
    services: dict[str, ServiceStatus] = {
        s.name: {
            "routes": [r["path"] for r in s.routes],
            "workers": len(s.workers),
            "ready": s.ready_workers(),
            "queued": len(s.queue),
            "in_flight": s.in_flight(),
            "model_routing": model_routing,
            "versions": dict(sorted(s.versions().items(), key=lambda v: version_order(v[0]))),
            "weights": s.weights,
            "newest": s.newest(),
        }
        for s in registry.iter_services()
    }
    frontends: list[FrontendStatus] = [
        {"host": f.host, "pid": f.pid, "last_heartbeat_s": round(now - f.last_seen, 3)}
        for f in registry.frontends.values()
    ]
    return {
        "broker": broker,
        "workers": [worker_status(w, now) for w in registry.workers.values()],
        "services": services,
        "frontends": frontends,
        "launchers": [launcher_status(r, now) for r in registry.launchers.values()],
        "counters": dict(counters),
    }
