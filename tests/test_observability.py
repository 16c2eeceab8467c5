"""What operators see: /metrics, request ids across every process, status --watch, cluster bench."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import requests
from prometheus_client.parser import text_string_to_metric_families

from cluster import ROOT, Cluster, run_cli, wait_until


def scrape(cluster: Cluster) -> dict[tuple[str, tuple], float]:
    text = requests.get(cluster.url("/metrics"), timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_show_http_and_cluster_figures(cluster: Cluster) -> None:
    cluster.up("BatchAPI")
    with ThreadPoolExecutor(16) as pool:
        assert all(r.ok for r in pool.map(lambda i: cluster.post({"value": i}), range(40)))
    assert requests.post(cluster.url("/nowhere"), json={}, timeout=5).status_code == 404
    service = (("service", "BatchAPI"),)

    def batches_reported() -> bool:
        return scrape(cluster).get(("zeroserve_batch_size_sum", service)) == 40

    wait_until(batches_reported, what="the workers' batch sizes to reach the metrics")
    m = scrape(cluster)
    assert m[("zeroserve_http_requests_total", (("route", "/predict"), ("status", "200")))] == 40
    assert m[("zeroserve_http_requests_total", (("route", "unmatched"), ("status", "404")))] == 1
    assert m[("zeroserve_http_request_duration_seconds_count", (("route", "/predict"),))] == 40
    assert m[("zeroserve_http_requests_in_flight", ())] == 0
    assert m[("zeroserve_broker_up", ())] == 1
    assert m[("zeroserve_queue_depth", service)] == 0
    host = socket.gethostname()
    assert m[("zeroserve_workers", (("host", host), ("service", "BatchAPI")))] == 1
    assert m[("zeroserve_broker_resent_total", ())] == 0
    assert m[("zeroserve_broker_dead_workers_total", ())] == 0
    batches = m[("zeroserve_batch_size_count", service)]
    assert 1 <= batches < 40, "batching should have made fewer batches than requests"
    assert m[("zeroserve_batch_size_bucket", (("le", "1.0"), *service))] < batches
    [busy] = [v for (name, _), v in m.items() if name == "zeroserve_worker_busy_ratio"]
    assert 0 < busy < 1


def test_a_request_id_travels_through_every_process(cluster: Cluster) -> None:
    debug = ("--log-level", "DEBUG")
    cluster.up("EchoAPI", worker_args=debug, frontend_args=debug, broker_args=debug)
    answer = cluster.post({"value": 1}, headers={"X-Request-Id": "trace-abc-123"})
    assert answer.headers["X-Request-Id"] == "trace-abc-123"
    wait_until(lambda: cluster.logs().count("request_id=trace-abc-123") >= 4)
    for name, _, path in cluster.procs:
        assert "request_id=trace-abc-123" in path.read_text(), f"not in the {name} log"
    generated = cluster.post({"value": 2}).headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    failing = cluster.post({"op": "fail"}, headers={"X-Request-Id": "trace-fail"})
    assert failing.status_code == 500 and failing.headers["X-Request-Id"] == "trace-fail"
    wait_until(lambda: "predict raised (request_id=trace-fail)" in cluster.logs())
    hostile = cluster.post({"value": 3}, headers={"X-Request-Id": "bad id\twith spaces"})
    assert hostile.headers["X-Request-Id"] != "bad id\twith spaces"


def test_status_watch_refreshes_with_throughput(cluster: Cluster) -> None:
    cluster.up("EchoAPI")
    watcher = subprocess.Popen(
        [
            *(sys.executable, "-m", "zeroserve", "status", "--broker", cluster.frontend_endpoint),
            *("--watch", "--interval", "0.2"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    refreshes: list[str] = []

    def read() -> None:
        """Every line it writes, as it comes (unread, a full pipe would stop it)."""
        for line in watcher.stdout:  # type: ignore[union-attr]
            if re.match(r"\S+\s+\d+\s+EchoAPI", line):
                refreshes.append(line.split()[-1])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: cluster.post({"value": 1}).ok and len(refreshes) >= 4,
            timeout_s=60,
            what="four refreshes while requests are served",
        )
        assert any(rate not in ("-", "0.0") for rate in refreshes[1:]), refreshes
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(10) == 0
        reader.join(10)
    finally:
        if watcher.poll() is None:
            watcher.kill()
        watcher.wait(5)


def test_cluster_bench_reports_figures(cluster: Cluster) -> None:
    cluster.up("StreamAPI")
    payload = str(ROOT / "tests" / "stream_payload.json")
    out = run_cli(
        "bench", cluster.url(), "--duration", "1", "--concurrency", "4", "--json", "--stream",
        "--payload", payload,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["ok"] > 0 and summary["statuses"] == {"200": summary["ok"]}
    assert summary["first_chunk_p50_ms"] <= summary["p50_ms"]
    assert not summary["errors"]
