"""GET /dashboard: the page in a real browser (headless Chromium), its data, and its guard."""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import requests

from zeroserve.frontend.dashboard import Recent, percentile

from cluster import Cluster, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
KEY = "dash-key"


def test_recent_figures_are_per_second_percentiles() -> None:
    recent = Recent(seconds=3, now=100.0)
    for ms in range(1, 101):
        recent.observe(ms / 1000)
    recent.tick(101.0)
    first = recent.samples[-1]
    assert (first["rps"], first["p50_ms"], first["p99_ms"], first["queued"]) == (100, 50, 99, None)
    recent.saw_queue(7, 101.5)
    recent.tick(102.0)
    assert recent.samples[-1] == {"t": 102.0, "rps": 0, "p50_ms": None, "p99_ms": None, "queued": 7}
    for t in (103.0, 104.0, 105.0):
        recent.tick(t)
    assert [s["t"] for s in recent.samples] == [103.0, 104.0, 105.0]  # the oldest go
    assert recent.samples[-1]["queued"] is None  # nobody has looked for a while
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.99) == 3.0


def test_the_dashboard_is_guarded_and_self_contained(cluster: Cluster) -> None:
    cluster.up("EchoAPI", frontend_args=("--api-key", KEY))
    url = cluster.url("/dashboard")
    refused = requests.get(url, timeout=5)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Basic")  # a browser asks for it
    assert requests.get(url, auth=("anyone", "wrong"), timeout=5).status_code == 401
    assert requests.get(cluster.url("/dashboard/data"), timeout=5).status_code == 401
    page = requests.get(url, auth=("anyone", KEY), timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    # Nothing is fetched from outside the cluster: no absolute URL anywhere in the page.
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]", page.text, re.IGNORECASE)
    bearer = {"Authorization": f"Bearer {KEY}"}
    headers = {**bearer, "Content-Type": "application/json"}
    for i in range(20):
        assert requests.post(cluster.url(), json={"value": i}, headers=headers, timeout=5).ok

    def data() -> dict[str, Any]:
        answer = requests.get(cluster.url("/dashboard/data"), headers=bearer, timeout=5)
        assert answer.status_code == 200
        return answer.json()

    def served_and_queue_seen() -> dict[str, Any] | None:
        d = data()
        history = d["history"]
        served = sum(s["rps"] for s in history) > 0 and any(s["p99_ms"] for s in history)
        return d if served and any(s["queued"] is not None for s in history) else None

    d = wait_until(served_and_queue_seen, what="the dashboard's figures to show the requests")
    (worker,) = d["workers"]
    assert worker["service"] == "EchoAPI" and worker["done"] == 20
    assert d["services"]["EchoAPI"]["routes"] == ["/predict"]
    assert [b["connected"] for b in d["brokers"]] == [True]
    assert d["brokers"][0]["pid"] > 0  # what the broker says of itself
    assert len(d["frontends"]) == 1 and len(d["launchers"]) == 1


class _Cells(HTMLParser):
    """The rendered page: each host card's text cells."""

    def __init__(self) -> None:
        super().__init__()
        self.hosts: dict[str, list[str]] = {}
        self.services: list[str] = []
        self._host: str | None = None
        self._depth = 0
        self._in_services = False
        self._cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "div" and "host" in (found.get("class") or "").split():
            self._host, self._depth = found.get("data-host") or "", 0
            self.hosts[self._host] = []
        elif tag == "div" and self._host is not None:
            self._depth += 1
        if found.get("id") == "services":
            self._in_services = True
        self._cell = tag in ("td", "span")

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._host is not None:
            if self._depth == 0:
                self._host = None
            else:
                self._depth -= 1
        if tag == "section":
            self._in_services = False
        self._cell = False

    def handle_data(self, data: str) -> None:
        if self._host is not None and self._cell:
            self.hosts[self._host].append(data.strip())
        elif self._in_services and self._cell:
            self.services.append(data.strip())


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=4000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_the_dashboard_in_a_browser_names_every_worker(cluster: Cluster, tmp_path: Path) -> None:
    cluster.up("BatchAPI", processes=2)
    with ThreadPoolExecutor(4) as pool:
        assert all(r.ok for r in pool.map(lambda i: cluster.post({"value": i}), range(40)))
    status = cluster.status() or {}
    workers = {(w["host"], w["pid"]) for w in status["workers"]}
    assert len(workers) == 2
    url = cluster.url("/dashboard")

    def rendered() -> _Cells | None:
        run = chromium(tmp_path, url, "--dump-dom")
        cells = _Cells()
        cells.feed(run.stdout)
        shown = {(h, int(c)) for h, texts in cells.hosts.items() for c in texts if c.isdigit()}
        return cells if workers <= shown else None

    cells = wait_until(rendered, timeout_s=60, what="Chromium to render every worker")
    assert "BatchAPI" in cells.services and "/predict" in cells.services
    (host,) = {h for h, _ in workers}
    assert cells.hosts[host].count("ready") + cells.hosts[host].count("busy") == 2
    shot = tmp_path / "dashboard.png"
    run = chromium(tmp_path, url, f"--screenshot={shot}", "--window-size=1280,1000")
    assert shot.exists(), run.stderr
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000
