"""OpenTelemetry: one trace per request across frontend, broker and worker, sent over OTLP/HTTP
to a collector the test runs."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from ports import free_port

from cluster import Cluster, run_cli, wait_until
from otlp_collector import Collector

SERVER, CONSUMER = 2, 5  # OTLP span kinds
STATUS_ERROR = 2


@dataclass
class Traced:
    """The module's cluster, its processes exporting to `collector`: TracedBatchAPI
    (/predict), StreamAPI (/stream), CountingSteps (/steps) and EchoAPI (/echo)."""

    cluster: Cluster
    collector: Collector


@pytest.fixture(scope="module")
def traced(module_cluster: Cluster) -> Iterator[Traced]:
    """Served to this module's tests, which only send requests and find their own spans by
    their trace: one cluster in place of one each."""
    with Collector() as collector:
        with pytest.MonkeyPatch.context() as env:  # what the processes started here inherit
            env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
            env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
            env.delenv("OTEL_SERVICE_NAME", raising=False)
            c = module_cluster
            c.broker()
            c.worker("TracedBatchAPI", 1)
            c.worker("StreamAPI", 1, "--route", "/stream")
            c.worker("CountingSteps", 1, "--route", "/steps")
            c.worker("EchoAPI", 1, "--route", "/echo")
            c.frontend()
        c.wait_healthy(4)
        yield Traced(c, collector)


def traceparent() -> tuple[str, str, str]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent}-01", trace_id, parent


def one(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name]
    assert len(found) == 1, f"{len(found)} span(s) named {name}: {[s['name'] for s in spans]}"
    return found[0]


def spans_of(collector: Collector, trace_id: str, names: set[str]) -> list[dict[str, Any]]:
    def complete() -> list[dict[str, Any]] | None:
        spans = collector.trace(trace_id)
        return spans if names <= {s["name"] for s in spans} else None

    return wait_until(complete, what=f"spans {sorted(names)} of trace {trace_id}")


def test_a_batch_of_requests_is_traced_through_every_process(traced: Traced) -> None:
    cluster, collector = traced.cluster, traced.collector
    given = [traceparent() for _ in range(3)]

    def post(i: int) -> requests.Response:
        header, _, _ = given[i]
        return cluster.post({"value": i}, headers={"traceparent": header, "X-Request-Id": f"r{i}"})

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(post, range(3)))
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert max(a.json()["batch"] for a in answers) >= 2

    names = {"POST /predict", "broker.dispatch", "worker.request", "worker.queue"}
    names |= {"decode_request", "encode_response"}
    worker_spans, predicts = {}, []
    for i, (_, trace_id, client_span) in enumerate(given):
        spans = spans_of(collector, trace_id, names)
        front = one(spans, "POST /predict")
        assert front["parent"] == client_span  # the client's trace is continued
        assert front["service"] == "zeroserve-frontend"
        assert front["kind"] == SERVER
        assert front["attributes"]["http.response.status_code"] == 200
        assert front["attributes"]["zeroserve.request_id"] == f"r{i}"
        broker = one(spans, "broker.dispatch")
        assert (broker["parent"], broker["service"]) == (front["span_id"], "zeroserve-broker")
        assert broker["attributes"]["zeroserve.attempt"] == 1
        worker = one(spans, "worker.request")
        assert (worker["parent"], worker["service"]) == (front["span_id"], "zeroserve-worker")
        assert worker["kind"] == CONSUMER
        assert worker["attributes"]["zeroserve.api"] == "TracedBatchAPI"
        assert worker["resource"]["process.pid"] == answers[i].json()["pid"]
        for stage in ("worker.queue", "decode_request", "encode_response"):
            assert one(spans, stage)["parent"] == worker["span_id"]
        assert front["start"] <= broker["start"] <= worker["start"] <= worker["end"] <= front["end"]
        worker_spans[worker["span_id"]] = i
        predicts += [(s, spans) for s in spans if s["name"] == "predict"]

    # One predict span per batch, under one request's span, linked to the batch's others.
    sizes = 0
    for predict, spans in predicts:
        assert predict["parent"] in worker_spans
        assert set(predict["links"]) <= set(worker_spans) - {predict["parent"]}
        assert predict["attributes"]["zeroserve.batch_size"] == 1 + len(predict["links"])
        sizes += predict["attributes"]["zeroserve.batch_size"]
        # The model's own span nests in predict.
        forward = one(spans, "model.forward")
        assert forward["parent"] == predict["span_id"]
        assert (
            forward["attributes"]["model.inputs"] == predict["attributes"]["zeroserve.batch_size"]
        )
    assert sizes == 3
    assert any(p["attributes"]["zeroserve.batch_size"] >= 2 for p, _ in predicts)


@pytest.mark.parametrize(
    ("api_name", "route"), [("StreamAPI", "/stream"), ("CountingSteps", "/steps")]
)
def test_a_stream_is_one_trace_that_ends_with_the_stream(
    traced: Traced, api_name: str, route: str
) -> None:
    cluster, collector = traced.cluster, traced.collector
    body = {"n": 4, "sleep": 0.05}
    with requests.post(cluster.url(route), json=body, stream=True, timeout=10) as answer:
        assert answer.status_code == 200
        trace_id = answer.headers["X-Request-Id"]  # not a trace id: found below
        pieces = [line for line in answer.iter_lines() if line]
    assert len(pieces) == 4

    def root() -> dict[str, Any] | None:
        found = [
            s
            for s in collector.spans
            if s["name"] == f"POST {route}"
            and s["attributes"].get("zeroserve.request_id") == trace_id
        ]
        return found[0] if found else None

    front = wait_until(root, what="the frontend's span")
    assert front["parent"] == ""  # no traceparent was sent: a new trace begins here
    spans = spans_of(collector, front["trace_id"], {"worker.request", "decode_request"})
    worker = one(spans, "worker.request")
    assert worker["parent"] == front["span_id"]
    assert worker["end"] <= front["end"]
    if api_name == "StreamAPI":
        predict = one(spans, "predict")
        assert predict["parent"] == worker["span_id"]
        # The pieces took 4 x 50 ms: the spans last as long as the stream, and the request's
        # ends when its last piece went out.
        assert predict["end"] - predict["start"] >= 150_000_000
        assert worker["start"] <= predict["start"] < worker["end"]
        assert worker["end"] - worker["start"] >= 150_000_000
    assert worker["end"] - worker["start"] >= 60_000_000


def test_a_failed_request_marks_its_spans(traced: Traced) -> None:
    header, trace_id, _ = traceparent()
    answer = traced.cluster.post({"op": "fail"}, "/echo", headers={"traceparent": header})
    assert answer.status_code == 500
    spans = spans_of(traced.collector, trace_id, {"POST /echo", "worker.request", "predict"})
    for name in ("POST /echo", "worker.request"):
        span = one(spans, name)
        assert span["status"] == STATUS_ERROR
        assert span["attributes"]["http.response.status_code"] == 500
    predict = one(spans, "predict")
    assert predict["status"] == STATUS_ERROR  # the exception passed through it


def test_an_exporter_that_is_not_installed_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    for command in (
        ["up", "--port", str(free_port())],
        [
            "broker",
            "--frontend-bind",
            f"tcp://127.0.0.1:{free_port()}",
            "--backend-bind",
            f"tcp://127.0.0.1:{free_port()}",
        ],
    ):
        result = run_cli(*command)
        assert result.returncode != 0
        assert "'zipkin', which is not installed" in result.stderr
        assert "Traceback" not in result.stderr
