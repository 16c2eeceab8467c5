"""``cluster status`` as a table a person reads."""

from __future__ import annotations

from typing import Any


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def format_status(snapshot: dict[str, Any]) -> str:
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
        lines += _table(
            ["HOST", "PID", "SERVICE", "STATE", "FREE", "IN FLIGHT", "DONE", "HEARTBEAT"],
            [
                [
                    w.get("host"),
                    w.get("pid"),
                    w.get("service"),
                    w.get("state"),
                    f"{w.get('free')}/{w.get('capacity')}",
                    w.get("in_flight"),
                    w.get("done"),
                    f"{w.get('last_heartbeat_s', 0):.1f} s ago",
                ]
                for w in sorted(workers, key=lambda w: (w.get("host", ""), w.get("pid", 0)))
            ],
        )
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
    return "\n".join(lines)
