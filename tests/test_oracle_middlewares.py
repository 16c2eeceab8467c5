"""LitServer(middlewares=[...]) answers as LitServe answers: Starlette's CORS (preflights
and simple requests), GZip (LitServe's own and one given) and MaxSizeMiddleware, with
one script run under both (tests/oracle_apps/middlewares.py, default_gzip.py)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from oracle import APPS, Server, serve_pair

#: The headers these middlewares set, compared besides status, content type and body.
HEADERS = (
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-allow-credentials",
    "access-control-expose-headers",
    "access-control-max-age",
    "content-encoding",
    "vary",
)
ORIGIN = {"Origin": "https://a.example"}


def _pair(tmp: Any, script: str) -> Iterator[tuple[Server, Server]]:
    with serve_pair(APPS / script, tmp) as pair:
        yield pair


@pytest.fixture(scope="module")
def given(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    yield from _pair(tmp_path_factory.mktemp("given"), "middlewares.py")


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    yield from _pair(tmp_path_factory.mktemp("default"), "default_gzip.py")


def seen(base: str, method: str, path: str, **kwargs: Any) -> tuple[Any, ...]:
    """What a client sees, the body as sent (compressed or not) and then decoded."""
    response = requests.request(method, base + path, timeout=30, stream=True, **kwargs)
    raw = response.raw.read(decode_content=False)
    encoding = response.headers.get("content-encoding")
    body = gzip.decompress(raw) if encoding == "gzip" else raw
    headers = tuple((h, response.headers.get(h)) for h in HEADERS)
    return response.status_code, response.headers.get("content-type"), body, headers


def preflight(method: str, **extra: str) -> dict[str, Any]:
    return {"headers": {**ORIGIN, "Access-Control-Request-Method": method, **extra}}


GIVEN_CASES = {
    "a preflight that passes": ("OPTIONS", "/square", preflight("POST")),
    "a preflight with an allowed header": (
        "OPTIONS", "/large", preflight("POST", **{"Access-Control-Request-Headers": "x-custom"})
    ),
    "a preflight of a method not allowed": ("OPTIONS", "/square", preflight("DELETE")),
    "a preflight from another origin": (
        "OPTIONS", "/square", {"headers": {"Origin": "https://b.example",
                                           "Access-Control-Request-Method": "POST"}}
    ),
    "a preflight with a header not allowed": (
        "OPTIONS", "/square", preflight("POST", **{"Access-Control-Request-Headers": "x-other"})
    ),
    "a preflight on an unknown path": ("OPTIONS", "/nowhere", preflight("POST")),
    "a preflight on the health check": ("OPTIONS", "/health", preflight("GET")),
    "a simple request from the origin": (
        "POST", "/square", {"json": {"input": 4.0}, "headers": ORIGIN}
    ),
    "a simple request from another origin": (
        "POST", "/square", {"json": {"input": 4.0}, "headers": {"Origin": "https://b.example"}}
    ),
    "a request without an origin": ("POST", "/square", {"json": {"input": 4.0}}),
    "the health check from the origin": ("GET", "/health", {"headers": ORIGIN}),
    "a large answer, gzip accepted": (
        "POST", "/large", {"json": {"size": 500}, "headers": {**ORIGIN, "Accept-Encoding": "gzip"}}
    ),
    "a large answer, gzip not accepted": (
        "POST", "/large", {"json": {"size": 500}, "headers": {"Accept-Encoding": "identity"}}
    ),
    "an answer under the given minimum": (
        "POST", "/large", {"json": {"size": 10}, "headers": {"Accept-Encoding": "gzip"}}
    ),
    "a body over MaxSizeMiddleware's limit": (
        "POST", "/large", {"json": {"size": 1, "pad": "x" * 5000}}
    ),
}  # fmt: skip

DEFAULT_CASES = {
    "a preflight, every origin and method": ("OPTIONS", "/large", preflight("PATCH")),
    "a simple request, every origin": (
        "POST", "/large", {"json": {"size": 10}, "headers": ORIGIN}
    ),
    "an answer under LitServe's 1000 bytes": (
        "POST", "/large", {"json": {"size": 900}, "headers": {"Accept-Encoding": "gzip"}}
    ),
    "an answer over LitServe's 1000 bytes": (
        "POST", "/large", {"json": {"size": 5000}, "headers": {"Accept-Encoding": "gzip"}}
    ),
    "the same, gzip not accepted": (
        "POST", "/large", {"json": {"size": 5000}, "headers": {"Accept-Encoding": "identity"}}
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", GIVEN_CASES)
def test_given_middlewares_answer_as_litserve(given: tuple[Server, Server], case: str) -> None:
    method, path, kwargs = GIVEN_CASES[case]
    lit, zero = given
    assert seen(zero.base, method, path, **kwargs) == seen(lit.base, method, path, **kwargs)


@pytest.mark.parametrize("case", DEFAULT_CASES)
def test_default_gzip_answers_as_litserve(default: tuple[Server, Server], case: str) -> None:
    method, path, kwargs = DEFAULT_CASES[case]
    lit, zero = default
    assert seen(zero.base, method, path, **kwargs) == seen(lit.base, method, path, **kwargs)
