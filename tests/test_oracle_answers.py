"""zeroserve answers as LitServe answers, success and failure alike: one script
(tests/oracle_apps/answers.py) run under both, asked the same requests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from oracle import APPS, Server, ask, serve_pair

SCRIPT = APPS / "answers.py"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    tmp = tmp_path_factory.mktemp("answers")
    with serve_pair(SCRIPT, tmp) as pair:
        yield pair


CHAT = "/v1/chat/completions"
JSON = {"Content-Type": "application/json"}
HELLO = {"role": "user", "content": "hello"}
FLAC = {"type": "input_audio", "input_audio": {"data": "AQID", "format": "flac"}}

CASES = {
    "a picture with its media type and headers": ("POST", "/picture", {"json": {"kind": "png"}}),
    "text with a media type": ("POST", "/picture", {"json": {"kind": "text"}}),
    "an HTTPException in predict": ("POST", "/picture", {"json": {"kind": "teapot"}}),
    "an exception in predict": ("POST", "/picture", {"json": {"kind": "crash"}}),
    "a KeyError in decode_request": ("POST", "/picture", {"json": {}}),
    "LitServe's example API": ("POST", "/square", {"json": {"input": 4.0}}),
    "an unknown path": ("POST", "/nowhere", {"json": {}}),
    "the index": ("GET", "/", {}),
    "the health check": ("GET", "/health", {}),
    "disable_openapi_url": ("GET", "/openapi.json", {}),
    "chat: not JSON": ("POST", CHAT, {"data": b"{bad", "headers": JSON}),
    "chat: not an object": ("POST", CHAT, {"json": [1]}),
    "chat: no messages": ("POST", CHAT, {"json": {"model": "m"}}),
    "chat: a tool_choice LitServe's model lacks": (
        "POST",
        CHAT,
        {"json": {"messages": [HELLO], "tool_choice": "required"}},
    ),
    "chat: an audio format LitServe refuses": (
        "POST",
        CHAT,
        {"json": {"messages": [{"role": "user", "content": [FLAC]}]}},
    ),
    "chat: an unknown reasoning effort": (
        "POST",
        CHAT,
        {"json": {"messages": [HELLO], "reasoning_effort": "random"}},
    ),
    "chat: predict fails": ("POST", CHAT, {"json": {"messages": [HELLO]}}),
    "embeddings: no input": ("POST", "/v1/embeddings", {"json": {"model": "m"}}),
    "embeddings: predict fails": ("POST", "/v1/embeddings", {"json": {"input": "x", "model": "m"}}),
}


def test_a_streams_pieces_are_written_as_litserve_writes_them(
    servers: tuple[Server, Server],
) -> None:
    """Byte for byte; the content type is the difference the README's table names (LitServe
    sends none, zeroserve application/x-ndjson)."""
    lit, zero = (ask(s.base, "POST", "/stream", json={"prompt": "two words"}) for s in servers)
    assert (zero.status, zero.body) == (lit.status, lit.body)
    assert zero.content_type == "application/x-ndjson"


@pytest.mark.parametrize("case", CASES)
def test_answers_as_litserve(servers: tuple[Server, Server], case: str) -> None:
    method, path, kwargs = CASES[case]
    lit, zero = servers
    theirs = ask(lit.base, method, path, **kwargs)
    assert ask(zero.base, method, path, **kwargs) == theirs


def test_the_picture_is_byte_for_byte(servers: tuple[Server, Server]) -> None:
    import requests

    answers = [
        requests.post(s.base + "/picture", json={"kind": "png"}, timeout=30) for s in servers
    ]
    assert answers[0].content == answers[1].content == b"\x89PNG\r\n\x1a\n-not-really"
    assert answers[0].headers["X-Picture"] == answers[1].headers["X-Picture"] == "1"


def test_the_info_endpoints_server_block(servers: tuple[Server, Server]) -> None:
    import requests

    lit, zero = (requests.get(s.base + "/info", timeout=30).json() for s in servers)
    assert zero["server"] == lit["server"]
    assert zero["model"] == lit["model"]
