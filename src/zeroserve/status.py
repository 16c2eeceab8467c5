"""``cluster status`` as a table a person reads."""

from __future__ import annotations

from typing import Any

from zeroserve.common.snapshot import LauncherStatus, ServiceStatus, Snapshot, WorkerStatus


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def throughput(previous: Snapshot | None, current: Snapshot) -> dict[str, float]:
    """Requests per second of each worker (by id) between two snapshots."""
    if previous is None:
        return {}
    elapsed = current["broker"]["uptime_s"] - previous["broker"]["uptime_s"]
    if elapsed <= 0:
        return {}
    before = {w["id"]: w["done"] for w in previous["workers"]}
    return {
        w["id"]: max(0, w["done"] - before[w["id"]]) / elapsed
        for w in current["workers"]
        if w["id"] in before
    }


def _launcher_threads(launcher: LauncherStatus) -> str:
    """Its processes' threads each, or the user's thread variables when those govern."""
    threads = launcher["threads_per_process"]
    return str(threads) if threads else launcher["thread_env"] or "-"


def hit_rate(reported: dict[str, Any]) -> float | None:
    """The share of a worker's requests that found their model loaded (None: none yet)."""
    hits, misses = reported.get("model_hits", 0), reported.get("model_misses", 0)
    return hits / (hits + misses) if hits + misses else None


def _models_table(workers: list[WorkerStatus]) -> list[str]:
    """Workers whose API serves many models: what each holds, its loads, evictions and hit
    rate."""
    many = [w for w in workers if w["info"].get("max_models")]
    if not many:
        return []
    rows = []
    for w in sorted(many, key=_host_pid):
        reported = w["reported"]
        rate = hit_rate(reported)
        rows.append(
            [
                w["host"],
                w["pid"],
                w["service"],
                f"{len(w['models'])}/{w['info']['max_models']}",
                ",".join(w["models"]) or "-",
                reported.get("model_loads", 0),
                reported.get("model_evictions", 0),
                "-" if rate is None else f"{rate:.0%}",
            ]
        )
    headers = ["HOST", "PID", "SERVICE", "HELD", "MODELS", "LOADS", "EVICTIONS", "HIT RATE"]
    return ["", f"models ({len(many)} worker(s))", *_table(headers, rows)]


def _host_pid(record: WorkerStatus | LauncherStatus) -> tuple[str, int]:
    return record["host"], record["pid"]


def versions_shown(service: ServiceStatus) -> str:
    """Its versions with their ready workers, and how new requests split between them:
    ``1:2 2:1 (weights 1=90,2=10)``, or ``(newest 2)`` without weights."""
    versions = service.get("versions") or {}
    if not versions:
        return "-"
    counts = " ".join(f"{v}:{n}" for v, n in versions.items())  # the broker's order, oldest first
    weights = service.get("weights") or {}
    if weights:
        return f"{counts} (weights {','.join(f'{v}={w}' for v, w in weights.items())})"
    return f"{counts} (newest {service.get('newest') or '-'})"


def format_status(snapshot: Snapshot, rates: dict[str, float] | None = None) -> str:
    """The snapshot as tables; with `rates`, a REQ/S column per worker."""
    broker = snapshot["broker"]
    lines = [
        f"broker {broker['id']} on {broker['host']} pid {broker['pid']}, "
        f"version {broker['version']}, up {broker['uptime_s']:.0f} s",
        "",
    ]
    workers = snapshot["workers"]
    lines.append(f"workers ({len(workers)})")
    if workers:
        headers = [
            "HOST", "PID", "SERVICE", "VERSION", "DEVICE", "THREADS", "STATE", "FREE", "IN FLIGHT",
            "DONE", "HEARTBEAT",
        ]  # fmt: skip
        if rates is not None:
            headers.append("REQ/S")
        rows = []
        for w in sorted(workers, key=_host_pid):
            row = [
                w["host"],
                w["pid"],
                w["service"],
                w.get("model_version") or "-",
                w["device"] or "-",
                w["info"].get("threads_per_process") or "-",
                w["state"],
                f"{w['free']}/{w['capacity']}",
                w["in_flight"],
                w["done"],
                f"{w['last_heartbeat_s']:.1f} s ago",
            ]
            if rates is not None:
                rate = rates.get(w["id"])
                row.append("-" if rate is None else f"{rate:.1f}")
            rows.append(row)
        lines += _table(headers, rows)
        lines += _models_table(workers)
    services = snapshot["services"]
    lines += ["", f"services ({len(services)})"]
    if services:
        lines += _table(
            ["SERVICE", "ROUTES", "WORKERS", "READY", "QUEUED", "IN FLIGHT", "VERSIONS"],
            [
                [
                    name,
                    ",".join(s["routes"]),
                    s["workers"],
                    s["ready"],
                    s["queued"],
                    s["in_flight"],
                    versions_shown(s),
                ]
                for name, s in sorted(services.items())
            ],
        )
    frontends = snapshot["frontends"]
    lines += ["", f"frontends ({len(frontends)})"]
    if frontends:
        lines += _table(
            ["HOST", "PID", "HEARTBEAT"],
            [[f["host"], f["pid"], f"{f['last_heartbeat_s']:.1f} s ago"] for f in frontends],
        )
    launchers = snapshot["launchers"]
    lines += ["", f"worker launchers ({len(launchers)})"]
    if launchers:
        lines += _table(
            ["HOST", "PID", "SERVICE", "RUNNING", "THREADS", "PROBLEM"],
            [
                [
                    r["host"],
                    r["pid"],
                    r["service"],
                    f"{r['running']}/{r['processes']}"
                    + (
                        f" ({r['min_processes']}-{r['max_processes']})"
                        if r["max_processes"]
                        else ""
                    ),
                    _launcher_threads(r),
                    r["problem"] or "-",
                ]
                for r in sorted(launchers, key=_host_pid)
            ],
        )
    return "\n".join(lines)
