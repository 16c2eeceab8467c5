"""authorize() and LIT_SERVER_API_KEY answer as LitServe answers: one script
(tests/oracle_apps/auth.py), run under both, asked the same requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oracle import APPS, Server, ask, serve_pair

SCRIPT = APPS / "auth.py"
BODY = {"json": {"input": 4.0}}


def _pair(tmp: Path, env: dict[str, str] | None = None) -> Iterator[tuple[Server, Server]]:
    with serve_pair(SCRIPT, tmp, env) as pair:
        yield pair


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    yield from _pair(tmp_path_factory.mktemp("auth"))


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    yield from _pair(tmp_path_factory.mktemp("keyed"), {"LIT_SERVER_API_KEY": "abcd"})


def bearer(token: str) -> dict[str, Any]:
    return {**BODY, "headers": {"Authorization": f"Bearer {token}"}}


AUTHORIZE_CASES = {
    "open API, no credentials": ("POST", "/open", BODY),
    "right token": ("POST", "/alpha", bearer("alpha")),
    "no token": ("POST", "/alpha", BODY),
    "wrong token": ("POST", "/alpha", bearer("wrong")),
    "another API's token": ("POST", "/alpha", bearer("beta")),
    "second API, its own token": ("POST", "/beta", bearer("beta")),
    "second API, the first's token": ("POST", "/beta", bearer("alpha")),
    "not a bearer scheme": (
        "POST",
        "/alpha",
        {**BODY, "headers": {"Authorization": "Basic YWxwaGE6"}},
    ),
    "header dependency, right": ("POST", "/header", {**BODY, "headers": {"X-Team": "blue"}}),
    "header dependency, wrong": ("POST", "/header", {**BODY, "headers": {"X-Team": "red"}}),
    "header dependency, missing": ("POST", "/header", BODY),
    "request object, right": ("POST", "/request", {**BODY, "headers": {"X-Tenant": "acme"}}),
    "request object, wrong": ("POST", "/request", {**BODY, "headers": {"X-Tenant": "evil"}}),
    "authorize raises": ("POST", "/crash", BODY),
}


@pytest.mark.parametrize("case", AUTHORIZE_CASES)
def test_authorize_answers_as_litserve(servers: tuple[Server, Server], case: str) -> None:
    method, path, kwargs = AUTHORIZE_CASES[case]
    lit, zero = servers
    assert ask(zero.base, method, path, **kwargs) == ask(lit.base, method, path, **kwargs)


KEY = {"X-API-Key": "abcd"}
KEY_CASES = {
    "no key": ("POST", "/open", BODY),
    "right key": ("POST", "/open", {**BODY, "headers": KEY}),
    "wrong key": ("POST", "/open", {**BODY, "headers": {"X-API-Key": "nope"}}),
    "the key as a bearer token": ("POST", "/open", bearer("abcd")),
    "authorize decides, not the key: right token": ("POST", "/alpha", bearer("alpha")),
    "authorize decides, not the key: the key alone": ("POST", "/alpha", {**BODY, "headers": KEY}),
    "health without the key": ("GET", "/health", {}),
    "health with the key": ("GET", "/health", {"headers": KEY}),
    "info without the key": ("GET", "/info", {}),
    "index without the key": ("GET", "/", {}),
    "index with the key": ("GET", "/", {"headers": KEY}),
}


@pytest.mark.parametrize("case", KEY_CASES)
def test_litserves_api_key_answers_as_litserve(keyed: tuple[Server, Server], case: str) -> None:
    method, path, kwargs = KEY_CASES[case]
    lit, zero = keyed
    assert ask(zero.base, method, path, **kwargs) == ask(lit.base, method, path, **kwargs)
