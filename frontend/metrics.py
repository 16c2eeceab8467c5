"""``GET /metrics``: this frontend's HTTP figures and the broker's view of the cluster.

The frontend counts what it answers; the cluster figures come from a STATUS
snapshot the frontend asks the broker for on each scrape, so that one scrape
target shows queues, workers, re-sends and batch sizes too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from zeroserve.common.snapshot import (
    FrontendStatus,
    LauncherStatus,
    MergedSnapshot,
    ServiceStatus,
    Snapshot,
    WorkerStatus,
)

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: Broker counters exposed as Prometheus counters: (counter key, metric name, help).
BROKER_COUNTERS = (
    ("requests", "zeroserve_broker_requests", "Requests the broker accepted from frontends."),
    ("resent", "zeroserve_broker_resent", "Requests sent again after their worker was lost."),
    ("dead_workers", "zeroserve_broker_dead_workers", "Workers declared dead (missed heartbeats)."),
    (
        "unreachable_workers",
        "zeroserve_broker_unreachable_workers",
        "Workers removed when a request could not reach them.",
    ),
    (
        "rejected_queue_full",
        "zeroserve_broker_rejected_queue_full",
        "Requests refused, queue full.",
    ),
    ("rejected_no_worker", "zeroserve_broker_rejected_no_worker", "Requests refused, no worker."),
    ("dropped_answers", "zeroserve_broker_dropped_answers", "Late answers the broker dropped."),
    ("cancelled", "zeroserve_broker_cancelled", "Requests cancelled by their client."),
)


def merge_snapshots(snapshots: list[Snapshot]) -> MergedSnapshot | None:
    """The cluster as every broker sees it, in one: counters and queues summed over brokers;
    a worker registered with several counted once, its answers summed; each frontend and
    launcher once; every broker's own record."""
    if not snapshots:
        return None
    counters: dict[str, int] = {}
    services: dict[str, ServiceStatus] = {}
    workers: dict[tuple[str, int, str], WorkerStatus] = {}
    frontends: dict[tuple[str, int], FrontendStatus] = {}
    launchers: dict[tuple[str, int], LauncherStatus] = {}
    for snapshot in snapshots:
        for key, value in snapshot["counters"].items():
            counters[key] = counters.get(key, 0) + value
        for name, service in snapshot["services"].items():
            merged = services.setdefault(
                name,
                {**service, "routes": [], "workers": 0, "ready": 0, "queued": 0, "in_flight": 0},
            )
            merged["routes"] = sorted({*merged["routes"], *service["routes"]})
            # Each worker registers with every broker: the most any broker knows.
            merged["workers"] = max(merged["workers"], service["workers"])
            merged["ready"] = max(merged["ready"], service["ready"])
            merged["queued"] += service["queued"]
            merged["in_flight"] += service["in_flight"]
        for w in snapshot["workers"]:
            same = workers.get((w["host"], w["pid"], w["service"]))
            if same is None:
                workers[(w["host"], w["pid"], w["service"])] = w.copy()
                continue
            same["done"] += w["done"]
            same["in_flight"] += w["in_flight"]
            same["free"] += w["free"]
            same["capacity"] += w["capacity"]
        _freshest(frontends, snapshot["frontends"])
        _freshest(launchers, snapshot["launchers"])
    return {
        "counters": counters,
        "services": services,
        "workers": list(workers.values()),
        "frontends": list(frontends.values()),
        "launchers": list(launchers.values()),
        "brokers": [snapshot["broker"] for snapshot in snapshots],
    }


def _freshest(seen: dict[tuple[str, int], Any], records: list[Any]) -> None:
    """Each peer (host, pid) once, as the broker that heard it last saw it."""
    for record in records:
        key = (record["host"], record["pid"])
        last = seen.get(key)
        if last is None or record["last_heartbeat_s"] < last["last_heartbeat_s"]:
            seen[key] = record


class BrokerCollector:
    """Turns the brokers' last snapshots into metric families."""

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "zeroserve_broker_up", "How many brokers answered this scrape (1 for one)."
        )
        up.add_metric([], len(self.snapshots))
        yield up
        snapshot = merge_snapshots(self.snapshots)
        if snapshot is None:
            return
        counters = snapshot["counters"]
        for key, name, text in BROKER_COUNTERS:
            family = CounterMetricFamily(name, text)
            family.add_metric([], counters.get(key, 0))
            yield family
        bad = CounterMetricFamily(
            "zeroserve_broker_bad_messages",
            "Malformed messages the broker dropped.",
            labels=["side"],
        )
        for side in ("frontend", "worker"):
            bad.add_metric([side], counters.get(f"bad_messages_{side}", 0))
        yield bad
        yield from self._services(snapshot["services"])
        yield from self._workers(snapshot["workers"])
        yield from self._models(snapshot["workers"])

    @staticmethod
    def _services(services: dict[str, ServiceStatus]) -> Iterator[Metric]:
        queue = GaugeMetricFamily(
            "zeroserve_queue_depth", "Requests waiting for a worker.", labels=["service"]
        )
        in_flight = GaugeMetricFamily(
            "zeroserve_service_in_flight", "Requests held by workers.", labels=["service"]
        )
        for name, service in services.items():
            queue.add_metric([name], service["queued"])
            in_flight.add_metric([name], service["in_flight"])
        yield queue
        yield in_flight

    @staticmethod
    def _workers(workers: list[WorkerStatus]) -> Iterator[Metric]:
        per_host = GaugeMetricFamily(
            "zeroserve_workers",
            "Worker processes, by host and service.",
            labels=["host", "service"],
        )
        counts: dict[tuple[str, str], int] = {}
        busy = GaugeMetricFamily(
            "zeroserve_worker_busy_ratio",
            "Share of its life a worker process spent running batches.",
            labels=["host", "pid", "service"],
        )
        done = CounterMetricFamily(
            "zeroserve_worker_requests",
            "Requests a worker process answered.",
            labels=["host", "pid", "service"],
        )
        sizes: dict[str, dict[int, int]] = {}
        for w in workers:
            key = (w["host"], w["service"])
            counts[key] = counts.get(key, 0) + 1
            labels = [w["host"], str(w["pid"]), w["service"]]
            reported = w["reported"]
            uptime = reported.get("uptime_s") or 0
            busy.add_metric(labels, (reported.get("busy_s", 0) / uptime) if uptime else 0.0)
            done.add_metric(labels, w["done"])
            service_sizes = sizes.setdefault(w["service"], {})
            for size, count in (reported.get("batch_sizes") or {}).items():
                if str(size).isdigit() and isinstance(count, int):
                    service_sizes[int(size)] = service_sizes.get(int(size), 0) + count
        for (host, service), count in counts.items():
            per_host.add_metric([host, service], count)
        yield per_host
        yield busy
        yield done
        batch = HistogramMetricFamily(
            "zeroserve_batch_size", "Sizes of the batches given to predict.", labels=["service"]
        )
        for service, by_size in sizes.items():
            buckets = [
                (floatToGoString(le), sum(c for s, c in by_size.items() if s <= le))
                for le in BATCH_BUCKETS
            ]
            buckets.append(("+Inf", sum(by_size.values())))
            batch.add_metric([service], buckets, sum(s * c for s, c in by_size.items()))
        yield batch

    @staticmethod
    def _models(workers: list[WorkerStatus]) -> Iterator[Metric]:
        """Workers whose API serves many models: models held, loads, evictions, hit rate."""
        labels = ["host", "pid", "service"]
        held = GaugeMetricFamily(
            "zeroserve_worker_models_loaded", "Models a worker process holds.", labels=labels
        )
        ratio = GaugeMetricFamily(
            "zeroserve_worker_model_hit_ratio",
            "Share of a worker process's requests that found their model loaded.",
            labels=labels,
        )
        counts = [
            (key, CounterMetricFamily(f"zeroserve_worker_{key}", text, labels=labels))
            for key, text in (
                ("model_loads", "Models a worker process loaded."),
                ("model_evictions", "Models a worker process evicted (least recently used)."),
                ("model_hits", "Requests that found their model loaded."),
                ("model_misses", "Requests that waited for their model to load."),
            )
        ]
        for w in workers:
            reported = w["reported"]
            if "model_loads" not in reported:
                continue
            values = [w["host"], str(w["pid"]), w["service"]]
            held.add_metric(values, len(w["models"]))
            hits, misses = reported.get("model_hits", 0), reported.get("model_misses", 0)
            ratio.add_metric(values, hits / (hits + misses) if hits + misses else 0.0)
            for key, family in counts:
                family.add_metric(values, reported.get(key, 0))
        yield held
        yield ratio
        for _, family in counts:
            yield family


class FrontendMetrics:
    def __init__(self, in_flight: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = Counter(
            "zeroserve_http_requests",
            "HTTP requests this frontend answered, by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "zeroserve_http_request_duration_seconds",
            "Time from a request's arrival to its last byte, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        Gauge(
            "zeroserve_http_requests_in_flight",
            "Requests this frontend is waiting on.",
            registry=self.registry,
        ).set_function(in_flight)
        self.broker = BrokerCollector()
        self.registry.register(self.broker)
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        children = self._children.get((route, status))
        if children is None:
            children = (self._requests.labels(route, str(status)), self._latency.labels(route))
            self._children[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self, snapshots: list[Snapshot]) -> bytes:
        self.broker.snapshots = snapshots
        return generate_latest(self.registry)
