"""The OpenAI-compatible spec, driven by the official openai client through real processes."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import requests

from zeroserve.common import protocol as p
from zeroserve.common.errors import INTERNAL_ERROR
from zeroserve.worker.openai_spec import ChatFramer

from cluster import Cluster, wait_until

KEY = "sk-test-key"


@pytest.fixture(scope="module")
def echo_chat(module_cluster: Cluster) -> Cluster:
    """The echo chat model, served to this module's tests that only send it requests."""
    module_cluster.up(
        "EchoChatAPI",
        worker_args=("--spec", "openai", "--service", "echo-chat"),
        frontend_args=("--api-key", KEY),
    )
    return module_cluster


@pytest.fixture
def client(echo_chat: Cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=echo_chat.url("/v1"), api_key=KEY, max_retries=0, timeout=30)


def test_non_stream_completion_with_usage(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="echo-chat", messages=[{"role": "user", "content": "hello there world"}]
    )
    assert completion.choices[0].message.content == "hello there world"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "echo-chat"
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 3, 6)


def test_stream_read_to_the_end_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="echo-chat",
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_models_and_wrong_key(client: openai.OpenAI, echo_chat: Cluster) -> None:
    assert [m.id for m in client.models.list()] == ["echo-chat"]
    wrong = openai.OpenAI(base_url=echo_chat.url("/v1"), api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    answer = requests.post(echo_chat.url("/v1/chat/completions"), json={}, timeout=5)
    assert answer.status_code == 401
    assert requests.get(echo_chat.url("/health"), timeout=5).status_code == 200


def test_bad_requests_get_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="x", messages=[])
    assert "messages" in str(caught.value)
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="x", messages=[{"content": "hi"}])  # type: ignore[typeddict-item]


def test_a_failure_mid_stream_is_an_error_event(echo_chat: Cluster) -> None:
    body = {"messages": [{"role": "user", "content": "boom goes it"}], "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with requests.post(
        echo_chat.url("/v1/chat/completions"), json=body, headers=headers, stream=True, timeout=30
    ) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        events = [line for line in r.iter_lines() if line]
    assert json.loads(events[0][len(b"data: ") :])["choices"][0]["delta"]["content"] == "boom"
    error = json.loads(events[-1][len(b"data: ") :])["error"]
    # What the model raised stays in the worker's log.
    assert error == {
        "message": "Internal server error",
        "type": "internal",
        "param": None,
        "code": "internal_error",
    }


def test_the_worker_writes_the_error_event_of_a_begun_stream() -> None:
    """The frontend writes an ERROR's body as it comes: the event is the worker's."""
    framer = ChatFramer("m", stream=True, include_usage=False, prompt_tokens=1)
    assert framer.error(400, "early")[0][0] == p.REPLY  # not begun: a whole answer
    framer.piece("hi")
    ((command, meta, body),) = framer.error(500, INTERNAL_ERROR)
    assert (command, meta["status"]) == (p.ERROR, 500)
    assert body.startswith(b"data: ") and body.endswith(b"\n\n")
    assert json.loads(body[len(b"data: ") :])["error"] == {
        "message": INTERNAL_ERROR,
        "type": "internal",
        "param": None,
        "code": "internal_error",
    }


def test_usage_reported_by_the_model_is_used(cluster: Cluster) -> None:
    cluster.up("UsageChatAPI", worker_args=("--spec", "openai"))
    client = openai.OpenAI(base_url=cluster.url("/v1"), api_key="unused", max_retries=0)
    completion = client.chat.completions.create(
        model="UsageChatAPI", messages=[{"role": "user", "content": "10 + 6?"}]
    )
    assert completion.choices[0].message.content == "16"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.total_tokens) == (25, 35)


def test_embeddings(cluster: Cluster) -> None:
    cluster.up("EmbedAPI", worker_args=("--spec", "openai"))
    client = openai.OpenAI(base_url=cluster.url("/v1"), api_key="unused", max_retries=0)
    result = client.embeddings.create(model="EmbedAPI", input=["a b c", "hello"])
    assert [d.embedding for d in result.data] == [[5.0, 2.0, 1.0, -1.0], [5.0, 0.0, 1.0, -1.0]]
    assert result.usage.prompt_tokens == 4
    floats = client.embeddings.create(model="EmbedAPI", input="x y", encoding_format="float")
    assert floats.data[0].embedding == [3.0, 1.0, 1.0, -1.0]
    assert [m.id for m in client.models.list()] == ["EmbedAPI"]


def test_the_demo_chat_model_streams(cluster: Cluster) -> None:
    cluster.broker()
    cluster.worker("zeroserve.worker.demo:ChatAPI", 1, "--spec", "openai")
    cluster.frontend()
    cluster.wait_healthy(1)
    client = openai.OpenAI(base_url=cluster.url("/v1"), api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="ChatAPI",
        messages=[{"role": "user", "content": "Tell me about the harbour"}],
        stream=True,
        max_tokens=8,
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert 2 <= len(pieces) <= 8
    assert "".join(pieces).strip()


def test_an_async_chat_model_streams_many_at_once(cluster: Cluster, tmp_path: Path) -> None:
    """Sixteen streams each hold after their first word until all sixteen have begun: one
    worker process runs them at once, or this never happens."""
    cluster.up("AsyncChatAPI", worker_args=("--spec", "openai"))
    client = openai.OpenAI(base_url=cluster.url("/v1"), api_key="-", max_retries=0, timeout=60)
    gate = tmp_path / "all-begun"
    begun = []

    def chat(i: int) -> str:
        stream = client.chat.completions.create(
            model="AsyncChatAPI",
            messages=[
                {"role": "system", "content": f"gate:{gate}"},
                {"role": "user", "content": f"reply {i} in five words"},
            ],
            stream=True,
        )
        text = ""
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                if not text:
                    begun.append(i)
                text += chunk.choices[0].delta.content
        return text

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(chat, i) for i in range(16)]
        try:
            wait_until(lambda: len(begun) == 16, 30, "all sixteen streams to begin at once")
        finally:
            gate.touch()
        texts = [f.result() for f in futures]
    assert texts == [f"reply {i} in five words" for i in range(16)]


LITSERVE_APIS = Path(__file__).resolve().parent / "apis_litserve.py"


def test_litserves_spec_objects_run_with_no_flag(cluster: Cluster) -> None:
    cluster.broker()
    cluster.worker(f"{LITSERVE_APIS}:LitOpenAIChat")
    cluster.worker(f"{LITSERVE_APIS}:LitOpenAIEmbed")
    cluster.frontend()
    cluster.wait_healthy(2)
    client = openai.OpenAI(base_url=cluster.url("/v1"), api_key="-", max_retries=0, timeout=30)
    chat = client.chat.completions.create(
        model="LitOpenAIChat",
        messages=[{"role": "user", "content": "two words"}],
        temperature=0.2,
    )
    assert chat.choices[0].message.content == "t=0.2 two words"
    assert chat.choices[0].finish_reason == "stop"
    function = {"name": "weather", "description": "The weather in a city", "parameters": {}}
    tools = [{"type": "function", "function": function}]
    called = client.chat.completions.create(
        model="LitOpenAIChat",
        messages=[{"role": "user", "content": "weather?"}],
        tools=tools,
        tool_choice="auto",
    )
    assert called.choices[0].finish_reason == "tool_calls"
    assert called.choices[0].message.tool_calls[0].function.name == "weather"
    # LitServe's request model takes "auto", "none" or "any": anything else is FastAPI's 422.
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(
            model="LitOpenAIChat",
            messages=[{"role": "user", "content": "weather?"}],
            tools=tools,
            tool_choice="required",
        )
    (error,) = refused.value.body["detail"]
    assert error["loc"] == ["body", "tool_choice"]
    streamed = client.chat.completions.create(
        model="LitOpenAIChat",
        messages=[{"role": "user", "content": "weather?"}],
        tools=tools,
        stream=True,
    )
    finishes = [c.choices[0].finish_reason for c in streamed if c.choices]
    assert finishes[-1] == "tool_calls"
    vectors = client.embeddings.create(model="LitOpenAIEmbed", input=["abc", "de"])
    assert [d.embedding for d in vectors.data] == [[3.0, 1.0], [2.0, 1.0]]


def test_zeroserves_spec_objects_give_request_objects(cluster: Cluster) -> None:
    cluster.broker()
    cluster.worker("SpecChatAPI")
    cluster.worker("SpecEmbedAPI")
    cluster.frontend()
    cluster.wait_healthy(2)
    client = openai.OpenAI(base_url=cluster.url("/v1"), api_key="-", max_retries=0, timeout=30)
    chat = client.chat.completions.create(
        model="SpecChatAPI", messages=[{"role": "user", "content": "hello"}]
    )
    assert chat.choices[0].message.content == "hello (auto)"
    none = client.chat.completions.create(
        model="SpecChatAPI", messages=[{"role": "user", "content": "hi"}], tool_choice="none"
    )
    assert none.choices[0].message.content == "hi (none)"
    vectors = client.embeddings.create(model="SpecEmbedAPI", input="four")
    assert vectors.data[0].embedding == [4.0]
