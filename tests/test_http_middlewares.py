"""CORS and GZip in the frontend (LitServer's CORSMiddleware and GZipMiddleware): the
`cluster frontend` and `cluster up` flags, on forwarded routes and the frontend's own,
and the middlewares LitServer refuses. Their answers against LitServe's own are in
test_oracle_middlewares.py."""

from __future__ import annotations

import gzip
import signal
from pathlib import Path

import psutil
import pytest
import requests
from test_litserver import _run_python
from test_up import _kill_family, _start_up

from cluster import Cluster

ORIGIN = "https://a.example"
CORS_FLAGS = (
    "--cors-origin", ORIGIN, "--cors-method", "POST", "--cors-header", "X-Custom",
    "--cors-expose-header", "X-Request-Id", "--cors-max-age", "60",
)  # fmt: skip


def test_the_frontend_answers_cors_and_compresses(cluster: Cluster) -> None:
    cluster.up(frontend_args=(*CORS_FLAGS, "--gzip-min-size", "200", "--gzip-level", "6"))
    preflight = requests.options(
        cluster.url(),
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "x-custom"},
        timeout=10,
    )  # fmt: skip
    assert (preflight.status_code, preflight.text) == (200, "OK")
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert preflight.headers["Access-Control-Allow-Methods"] == "POST"
    assert preflight.headers["Access-Control-Max-Age"] == "60"
    refused = requests.options(
        cluster.url("/health"),
        headers={"Origin": "https://b.example", "Access-Control-Request-Method": "PUT"},
        timeout=10,
    )
    assert (refused.status_code, refused.text) == (400, "Disallowed CORS origin, method")

    big = cluster.post({"value": "x" * 1000}, headers={"Origin": ORIGIN})
    assert big.headers["Content-Encoding"] == "gzip"
    assert big.headers["Vary"] == "Origin, Accept-Encoding"
    assert big.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert big.headers["Access-Control-Expose-Headers"] == "X-Request-Id"
    assert big.json()["echo"] == "x" * 1000
    raw = requests.post(
        cluster.url(), json={"value": "x" * 1000}, timeout=10, stream=True
    ).raw.read(decode_content=False)
    assert b"x" * 1000 in gzip.decompress(raw)
    small = cluster.post({"value": "x"}, headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in small.headers
    plain = cluster.post({"value": "x" * 1000}, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert plain.headers["Vary"] == "Origin, Accept-Encoding"
    # The frontend's own endpoints too.
    health = requests.get(cluster.url("/health"), headers={"Origin": ORIGIN}, timeout=10)
    assert health.headers["Access-Control-Allow-Origin"] == ORIGIN
    metrics = requests.get(cluster.url("/metrics"), timeout=10)
    assert metrics.headers["Content-Encoding"] == "gzip"


def test_a_stream_gets_cors_headers_and_is_not_compressed(cluster: Cluster) -> None:
    cluster.up("StreamAPI", frontend_args=("--cors-origin", "*", "--gzip-min-size", "1"))
    with cluster.post({"n": 50}, stream=True, headers={"Origin": ORIGIN}) as answer:
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert "Content-Encoding" not in answer.headers
        assert answer.raw.read(decode_content=False).count(b'"i"') == 50


def test_cluster_up_forwards_the_flags(tmp_path: Path) -> None:
    proc, port = _start_up(tmp_path, "--workers", "1", "--cors-origin", "*", "--gzip-min-size", "1")
    family = psutil.Process(proc.pid).children(recursive=True)
    try:
        answer = requests.post(
            f"http://127.0.0.1:{port}/predict",
            json={"input": 4},
            headers={"Origin": ORIGIN},
            timeout=10,
        )
        assert answer.json() == {"output": 16}
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert answer.headers["Content-Encoding"] == "gzip"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        _kill_family(proc, family)


@pytest.mark.parametrize(
    ("middlewares", "message"),
    [
        (
            "[TrustedHostMiddleware]",
            "LitServer(middlewares=[TrustedHostMiddleware...]): an ASGI middleware cannot run "
            "here (the frontend is Tornado); served here: CORSMiddleware, GZipMiddleware and "
            "MaxSizeMiddleware",
        ),
        ("[(RequestCountMiddleware, {})]", "pass track_requests=True"),
        (
            "[(CORSMiddleware, {'allow_private_network': True})]",
            "allow_private_network is not served",
        ),
        ("(CORSMiddleware, {})", "middlewares must be a list of tuples"),
    ],
)
def test_other_middlewares_are_refused_in_one_line(
    tmp_path: Path, middlewares: str, message: str
) -> None:
    code = (
        "import zeroserve as ls\n"
        "from starlette.middleware.cors import CORSMiddleware\n"
        "from starlette.middleware.trustedhost import TrustedHostMiddleware\n"
        "from zeroserve.middlewares import RequestCountMiddleware\n"
        f"ls.LitServer(ls.test_examples.SimpleLitAPI(), middlewares={middlewares})"
    )
    out = _run_python(code, tmp_path)
    assert out.returncode != 0
    assert message in out.stderr


def test_a_given_gzip_with_a_streaming_api_is_refused(tmp_path: Path) -> None:
    code = (
        "import zeroserve as ls\n"
        "from starlette.middleware.gzip import GZipMiddleware\n"
        "ls.LitServer(ls.test_examples.SimpleStreamAPI(), stream=True,"
        " middlewares=[GZipMiddleware])"
    )
    out = _run_python(code, tmp_path)
    assert out.returncode != 0
    assert "streamed answers are not compressed here" in out.stderr
