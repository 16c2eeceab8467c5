"""``cluster status`` as a table a person reads."""

from __future__ import annotations

from typing import Any


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def throughput(previous: dict[str, Any] | None, current: dict[str, Any]) -> dict[str, float]:
    """Requests per second of each worker (by id) between two snapshots."""
    if previous is None:
        return {}
    elapsed = current["broker"]["uptime_s"] - previous["broker"]["uptime_s"]
    if elapsed <= 0:
        return {}
    before = {w["id"]: w.get("done", 0) for w in previous.get("workers", [])}
    return {
        w["id"]: max(0, w.get("done", 0) - before[w["id"]]) / elapsed
        for w in current.get("workers", [])
        if w["id"] in before
    }


def _launcher_threads(launcher: dict[str, Any]) -> str:
    """Its processes' threads each, or the user's thread variables when those govern."""
    threads = launcher.get("threads_per_process")
    return str(threads) if threads else launcher.get("thread_env") or "-"


def hit_rate(reported: dict[str, Any]) -> float | None:
    """The share of a worker's requests that found their model loaded (None: none yet)."""
    hits, misses = reported.get("model_hits", 0), reported.get("model_misses", 0)
    return hits / (hits + misses) if hits + misses else None


def _models_table(workers: list[dict[str, Any]]) -> list[str]:
    """Workers whose API serves many models: what each holds, its loads, evictions and hit
    rate."""
    many = [w for w in workers if (w.get("info") or {}).get("max_models")]
    if not many:
        return []
    rows = []
    for w in sorted(many, key=lambda w: (w.get("host", ""), w.get("pid", 0))):
        reported = w.get("reported") or {}
        rate = hit_rate(reported)
        rows.append(
            [
                w.get("host"),
                w.get("pid"),
                w.get("service"),
                f"{len(w.get('models') or [])}/{w['info']['max_models']}",
                ",".join(w.get("models") or []) or "-",
                reported.get("model_loads", 0),
                reported.get("model_evictions", 0),
                "-" if rate is None else f"{rate:.0%}",
            ]
        )
    headers = ["HOST", "PID", "SERVICE", "HELD", "MODELS", "LOADS", "EVICTIONS", "HIT RATE"]
    return ["", f"models ({len(many)} worker(s))", *_table(headers, rows)]


def format_status(snapshot: dict[str, Any], rates: dict[str, float] | None = None) -> str:
    """The snapshot as tables; with `rates`, a REQ/S column per worker."""
    broker = snapshot.get("broker", {})
    lines = [
        f"broker {broker.get('id', '?')} on {broker.get('host', '?')} "
        f"pid {broker.get('pid', '?')}, "
        f"version {broker.get('version', '?')}, up {broker.get('uptime_s', 0):.0f} s",
        "",
    ]
    workers = snapshot.get("workers", [])
    lines.append(f"workers ({len(workers)})")
    if workers:
        headers = [
            "HOST", "PID", "SERVICE", "DEVICE", "THREADS", "STATE", "FREE", "IN FLIGHT", "DONE",
            "HEARTBEAT",
        ]  # fmt: skip
        if rates is not None:
            headers.append("REQ/S")
        rows = []
        for w in sorted(workers, key=lambda w: (w.get("host", ""), w.get("pid", 0))):
            row = [
                w.get("host"),
                w.get("pid"),
                w.get("service"),
                w.get("device") or "-",
                (w.get("info") or {}).get("threads_per_process") or "-",
                w.get("state"),
                f"{w.get('free')}/{w.get('capacity')}",
                w.get("in_flight"),
                w.get("done"),
                f"{w.get('last_heartbeat_s', 0):.1f} s ago",
            ]
            if rates is not None:
                rate = rates.get(w.get("id", ""))
                row.append("-" if rate is None else f"{rate:.1f}")
            rows.append(row)
        lines += _table(headers, rows)
        lines += _models_table(workers)
    services = snapshot.get("services", {})
    lines += ["", f"services ({len(services)})"]
    if services:
        lines += _table(
            ["SERVICE", "ROUTES", "WORKERS", "READY", "QUEUED", "IN FLIGHT"],
            [
                [
                    name,
                    ",".join(s.get("routes", [])),
                    s.get("workers"),
                    s.get("ready"),
                    s.get("queued"),
                    s.get("in_flight"),
                ]
                for name, s in sorted(services.items())
            ],
        )
    frontends = snapshot.get("frontends", [])
    lines += ["", f"frontends ({len(frontends)})"]
    if frontends:
        lines += _table(
            ["HOST", "PID", "HEARTBEAT"],
            [
                [f.get("host"), f.get("pid"), f"{f.get('last_heartbeat_s', 0):.1f} s ago"]
                for f in frontends
            ],
        )
    launchers = snapshot.get("launchers", [])
    lines += ["", f"worker launchers ({len(launchers)})"]
    if launchers:
        lines += _table(
            ["HOST", "PID", "SERVICE", "RUNNING", "THREADS", "PROBLEM"],
            [
                [
                    r.get("host"),
                    r.get("pid"),
                    r.get("service"),
                    f"{r.get('running')}/{r.get('processes')}"
                    + (
                        f" ({r.get('min_processes')}-{r.get('max_processes')})"
                        if r.get("max_processes")
                        else ""
                    ),
                    _launcher_threads(r),
                    r.get("problem") or "-",
                ]
                for r in sorted(launchers, key=lambda r: (r.get("host", ""), r.get("pid", 0)))
            ],
        )
    return "\n".join(lines)
