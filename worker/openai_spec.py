"""The OpenAI-compatible spec: the user's API behind ``/v1/chat/completions`` or ``/v1/embeddings``.

The user's class sees what LitServe's OpenAI specs give it. For chat,
``decode_request`` receives the list of messages (the other request fields
are in ``context``) and ``predict`` yields text pieces, or dicts with
``role``, ``content`` and optional ``prompt_tokens``/``completion_tokens``/
``total_tokens``. For embeddings, ``decode_request`` receives the input
(a string or a list of strings) and ``predict`` returns one vector per
input. The spec counts tokens itself when the class does not.

Which of the two an API is follows from its ``predict``: a generator is a
chat model, anything else an embedding model. ``GET /v1/models`` is
answered by the frontend from what workers announce.
"""

from __future__ import annotations

import base64
import inspect
import json
import re
import secrets
import struct
import time
from typing import Any, ClassVar

from zeroserve.common import protocol as p
from zeroserve.common.errors import INTERNAL_ERROR, ConfigError, HTTPException
from zeroserve.worker.api import inherits_default, is_async, yields
from zeroserve.worker.bodies import validate
from zeroserve.worker.job import Job, RequestError

CHAT_ROUTE = "/v1/chat/completions"
EMBEDDINGS_ROUTE = "/v1/embeddings"
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
MAX_EMBEDDING_INPUTS = 2048
#: LitServe's refusal of several inputs in one request to a batching embeddings API, whose
#: ``predict`` expects one input per request of the batch.
CLIENT_BATCHING = (
    "The OpenAIEmbedding spec does not support dynamic batching when client-side batching is "
    "used. To resolve this, either set `max_batch_size=1` or send a single input from the client."
)
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class _ClientBatching(RequestError):
    """CLIENT_BATCHING, refused as the request arrives (``OpenAIEmbeddingSpec.refusal``)."""

    def __init__(self) -> None:
        super().__init__(400, CLIENT_BATCHING, [p.error_answer(400, CLIENT_BATCHING)])


def count_tokens(text: str) -> int:
    """A model-free estimate: words and punctuation marks."""
    return len(_TOKEN.findall(text))


def openai_error(status: int, message: str, kind: str | None = None) -> bytes:
    kind = kind or ("invalid_request_error" if status < 500 else "server_error")
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": None}}
    ).encode()


def stream_error(status: int, error: Any) -> p.Answer:
    """An ERROR that ends a begun stream, its last event written here: OpenAI's error object
    as LitServe sends it. The frontend writes the body as it is."""
    event = {
        "error": {"message": error, "type": "internal", "param": None, "code": "internal_error"}
    }
    return (
        p.ERROR,
        p.error_fields(status, error),
        b"data: " + json.dumps(event).encode() + b"\n\n",
    )


def openai_error_out(status: int, error: Any) -> p.Answer:
    """A whole answer with that status and OpenAI's error shape."""
    message = error if isinstance(error, str) else json.dumps(error)
    return (p.REPLY, {"status": status, "ct": "application/json"}, openai_error(status, message))


def _refuse(status: int, message: str) -> RequestError:
    return RequestError(status, message, [openai_error_out(status, message)])


def _json_object(job: Job) -> dict[str, Any]:
    try:
        body = json.loads(job.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refuse(400, f"malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise _refuse(400, "the request body must be a JSON object")
    return body


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


class Record:
    """A JSON object read by attribute, as LitServe's request models are (``request.messages[0]
    .content``), by key, or whole with ``model_dump()``; absent fields read as their OpenAI
    default, else None."""

    _defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._data:
            return _wrap(self._data[name])
        return self._defaults.get(name)

    def __getitem__(self, key: str) -> Any:
        return _wrap(self._data[key])

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def get(self, key: str, default: Any = None) -> Any:
        return _wrap(self._data[key]) if key in self._data else default

    def model_dump(self, **_: Any) -> dict[str, Any]:
        return {**self._defaults, **self._data}

    dict = model_dump

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return Record(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class ChatRequest(Record):
    """A chat completion request, with the fields and defaults of LitServe's
    ``ChatCompletionRequest``."""

    _defaults: ClassVar[dict[str, Any]] = {
        "model": "",
        "temperature": 0.7,
        "top_p": 1.0,
        "n": 1,
        "max_tokens": None,
        "max_completion_tokens": None,
        "stop": None,
        "stream": False,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "user": None,
        "tools": None,
        "tool_choice": "auto",
        "response_format": None,
        "reasoning_effort": None,
        "metadata": None,
    }


class EmbeddingRequest(Record):
    """An embedding request, with the fields and methods of LitServe's ``EmbeddingRequest``."""

    _defaults: ClassVar[dict[str, Any]] = {
        "dimensions": None,
        "encoding_format": "float",
        "user": None,
    }

    def get_num_items(self) -> int:
        given = self._data.get("input")
        if isinstance(given, list):
            return len(given[0]) if given and isinstance(given[0], list) else len(given)
        return 1

    def ensure_list(self) -> list[Any]:
        given = self._data.get("input")
        return given if isinstance(given, list) else [given]


class _OpenAISpec:
    """What both specs share: the model name they answer for, and one POST route.

    With `request_objects` (a class built with ``spec=OpenAISpec()``, LitServe's or
    zeroserve's), ``decode_request`` receives the whole request as LitServe gives it: a
    ``ChatRequest`` or ``EmbeddingRequest``; without (``--spec openai``), the messages or
    the input.
    """

    default_route = ""
    #: The API's batch size, set by the loader once resolved.
    max_batch_size = 1

    def __init__(self, model: str, route: str | None = None, request_objects: bool = False):
        self.model = model
        self.route = route or self.default_route
        self.request_objects = request_objects

    def routes(self) -> list[dict[str, Any]]:
        return [{"path": self.route, "methods": ["POST"]}]

    def refusal(self, job: Job) -> list[p.Answer] | None:
        """The answer to give a request as it arrives, before it waits for a batch; None: it is
        served as usual."""
        return None

    def request_object(self, job: Job, fallback: type[Record]) -> tuple[dict[str, Any], Any]:
        """The body, and the request as LitServe hands it to ``decode_request``: its pydantic
        model when pydantic is installed (a body that is not JSON or does not fit is a 422
        with FastAPI's error list), else a ``Record`` with the same fields."""
        try:
            model = self.request_model()
        except ImportError:
            body = _json_object(job)
            return body, fallback(body)
        try:
            body = json.loads(job.body)
        except (ValueError, UnicodeDecodeError) as exc:
            error = {
                "type": "json_invalid",
                "loc": ["body", getattr(exc, "pos", 0)],
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": getattr(exc, "msg", str(exc))},
            }
            raise RequestError(422, "invalid JSON", [p.error_answer(422, [error])]) from None
        return body, validate(model, body)

    def request_model(self) -> Any:
        raise NotImplementedError


class OpenAIChatSpec(_OpenAISpec):
    kind = "chat"
    stream = True
    default_route = CHAT_ROUTE

    def request_model(self) -> Any:
        from zeroserve.specs.openai import ChatCompletionRequest

        return ChatCompletionRequest

    def check(self, api: Any) -> None:
        """What LitServe's OpenAISpec asks of the class (its key phrases kept, since
        LitServe's users and tests look for them): pieces that are yielded, and async
        methods only with ``enable_async``."""
        name = type(api).__name__
        encode = getattr(api, "encode_response", None)
        custom_encode = encode is not None and not inherits_default(encode)
        if self.request_objects and getattr(api, "enable_async", False):
            if not inspect.isasyncgenfunction(api.predict):
                raise ConfigError(
                    f"predict must be an async generator: {name}.predict is async with "
                    "enable_async=True, so it yields its pieces (async def with yield)"
                )
            if custom_encode and not yields(encode):
                raise ConfigError(
                    f"encode_response is neither a generator nor an async generator: "
                    f"{name}.encode_response must yield its pieces for the OpenAI spec"
                )
            return
        if self.request_objects:
            for method in ("decode_request", "predict", "encode_response"):
                if is_async(getattr(api, method, None)):
                    raise ConfigError(
                        f"'{method}' is defined as async/coroutine, but 'enable_async' is not "
                        f"set in LitAPI. Set enable_async=True on {name}, or make it synchronous"
                    )
        if not yields(api.predict):
            raise ConfigError(
                f"predict is not a generator: {name}.predict must yield text pieces for the "
                "OpenAI chat spec"
            )
        if custom_encode and not yields(encode):
            raise ConfigError(
                f"encode_response is not a generator: {name}.encode_response must be a "
                "generator (yield) for the OpenAI chat spec"
            )

    def decode(self, job: Job) -> tuple[Any, dict[str, Any], ChatFramer]:
        if self.request_objects:
            body, request = self.request_object(job, ChatRequest)
        else:
            body = _json_object(job)
            request = body.get("messages")
            if not isinstance(request, list) or not request:
                raise _refuse(400, "'messages' must be a non-empty list")
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise _refuse(422, "'messages' must be a list")
        for i, message in enumerate(messages):
            # Any role a string names, as LitServe's ChatMessage takes it.
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise _refuse(422, f"messages[{i}] needs a 'role' (a string)")
            if not isinstance(message.get("content"), (str, list, type(None))):
                raise _refuse(400, f"messages[{i}].content must be a string or a list of parts")
        if body.get("n", 1) not in (1, None):
            raise _refuse(400, "only n=1 is supported")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise _refuse(400, "'stream' must be true or false")
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            raise _refuse(400, "'stream_options' must be an object")
        model = body.get("model") or self.model
        prompt_tokens = sum(count_tokens(_text_of(m.get("content"))) for m in messages)
        framer = ChatFramer(str(model), stream, bool(options.get("include_usage")), prompt_tokens)
        framer.litserve_errors = self.request_objects
        context = {k: v for k, v in body.items() if k != "messages"}
        return request, context, framer


def whole_error(status: int, error: Any, litserve: bool) -> p.Answer:
    """An error before any answer: ``{"detail": ...}`` as LitServe's specs (FastAPI) write
    it, or OpenAI's error object for zeroserve's own ``--spec openai``."""
    if litserve:
        return p.error_answer(status, litserve_detail(error))
    return openai_error_out(status, error)


def litserve_detail(error: Any) -> Any:
    """LitServe's specs hide a failure behind Starlette's phrase, capitalised as it is."""
    return "Internal Server Error" if error == INTERNAL_ERROR else error


class ChatFramer:
    """A chat completion, whole or as Server-Sent Events, with usage."""

    #: A LitServe spec object's API: its errors in LitServe's shape.
    litserve_errors = False

    def __init__(self, model: str, stream: bool, include_usage: bool, prompt_tokens: int) -> None:
        self.model = model
        self.stream = stream
        self.include_usage = include_usage
        self.prompt_tokens = prompt_tokens
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.contents: list[str] = []
        self.tool_calls: Any = None
        self.reported = dict.fromkeys(USAGE_KEYS, 0)
        self.started = False

    def _message(self, piece: Any) -> dict[str, Any]:
        if hasattr(piece, "model_dump"):
            piece = piece.model_dump(exclude_none=True)
        if piece is None:
            return {"role": "assistant", "content": None}
        if isinstance(piece, str):
            return {"role": "assistant", "content": piece}
        if isinstance(piece, list) and piece and isinstance(piece[-1], dict):
            piece = piece[-1]
        if isinstance(piece, dict) and ("content" in piece or "tool_calls" in piece):
            message = dict(piece)
            message.setdefault("role", "assistant")
            for key in USAGE_KEYS:
                value = message.pop(key, 0)
                if isinstance(value, int) and not isinstance(value, bool):
                    self.reported[key] += value
            return message
        raise HTTPException(
            500,
            f"malformed output from predict: expected text or a message dict, got {piece!r}"[:300],
        )

    def usage(self) -> dict[str, int]:
        if any(self.reported.values()):
            usage = dict(self.reported)
            if not usage["total_tokens"]:
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            return usage
        completion = count_tokens("".join(self.contents))
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def _event(self, payload: Any) -> p.Answer:
        data = b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        meta: p.AnswerMeta = {}
        if not self.started:
            self.started = True
            meta = {
                "status": 200,
                "ct": "text/event-stream",
                "headers": {"Cache-Control": "no-cache"},
            }
        return (p.CHUNK, meta, data + b"\n\n")

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = usage
        return chunk

    def piece(self, piece: Any) -> list[p.Answer]:
        message = self._message(piece)
        content = message.get("content")
        if isinstance(content, str):
            self.contents.append(content)
        if message.get("tool_calls"):
            self.tool_calls = message["tool_calls"]
        if not self.stream:
            return []
        delta: dict[str, Any] = {}
        if not self.started:
            delta["role"] = message.get("role", "assistant")
        if content is not None:
            delta["content"] = content
        if message.get("tool_calls"):
            delta["tool_calls"] = [
                {"index": i, **call} for i, call in enumerate(message["tool_calls"])
            ]
        return [self._event(self._chunk([{"index": 0, "delta": delta, "finish_reason": None}]))]

    def end(self) -> list[p.Answer]:
        usage = self.usage()
        finish = "tool_calls" if self.tool_calls else "stop"
        if self.stream:
            outs = [self._event(self._chunk([{"index": 0, "delta": {}, "finish_reason": finish}]))]
            if self.include_usage:
                outs.append(self._event(self._chunk([], usage)))
            outs.append(self._event(b"[DONE]"))
            outs.append((p.END, {}, b""))
            return outs
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.contents)}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        body = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }
        return [(p.REPLY, {"status": 200, "ct": "application/json"}, json.dumps(body).encode())]

    def error(self, status: int, error: Any) -> list[p.Answer]:
        if self.started:
            if self.litserve_errors:
                error = litserve_detail(error)
            return [stream_error(status, error)]
        return [whole_error(status, error, self.litserve_errors)]


class OpenAIEmbeddingSpec(_OpenAISpec):
    kind = "embedding"
    stream = False
    default_route = EMBEDDINGS_ROUTE

    def request_model(self) -> Any:
        from zeroserve.specs.openai_embedding import EmbeddingRequest as Model

        return Model

    def refusal(self, job: Job) -> list[p.Answer] | None:
        """LitServe's refusal of several inputs to a batching API, said as the request arrives
        (LitServe's endpoint says it before queueing), not once its batch has waited its
        ``batch_timeout``; None for any other request."""
        if not (self.request_objects and self.max_batch_size > 1):
            return None
        try:
            job.opened = self.decode(job)
        except _ClientBatching as exc:
            return exc.outs
        except RequestError:
            pass  # answered in its batch, as any other request that cannot be read
        return None

    def check(self, api: Any) -> None:
        """Embeddings are not streamed: LitServe's phrases kept, as for chat."""
        name = type(api).__name__
        if yields(api.predict):
            raise ConfigError(
                f"You are using yield in your predict method: {name}.predict must return "
                "its vectors, as the embeddings spec does not stream"
            )
        encode = getattr(api, "encode_response", None)
        if encode is not None and not inherits_default(encode) and yields(encode):
            raise ConfigError(
                f"You are using yield in your encode_response method: {name}.encode_response "
                "must return, as the embeddings spec does not stream"
            )

    def decode(self, job: Job) -> tuple[Any, dict[str, Any], EmbeddingFramer]:
        if self.request_objects:
            body, request = self.request_object(job, EmbeddingRequest)
        else:
            body = _json_object(job)
            request = body.get("input")
        given = body.get("input")
        inputs = [given] if isinstance(given, str) else given
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(i, str) for i in inputs)
        ):
            raise _refuse(400, "'input' must be a string or a non-empty list of strings")
        if self.request_objects and len(inputs) > 1 and self.max_batch_size > 1:
            raise _ClientBatching()
        if len(inputs) > MAX_EMBEDDING_INPUTS:
            raise _refuse(400, f"at most {MAX_EMBEDDING_INPUTS} inputs per request")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise _refuse(400, "'encoding_format' must be 'float' or 'base64'")
        model = body.get("model") or self.model
        tokens = sum(count_tokens(text) for text in inputs)
        framer = EmbeddingFramer(str(model), len(inputs), encoding, tokens)
        framer.litserve_errors = self.request_objects
        context = {k: v for k, v in body.items() if k != "input"}
        return request, context, framer


class EmbeddingFramer:
    litserve_errors = False

    def __init__(self, model: str, count: int, encoding: str, prompt_tokens: int) -> None:
        self.model = model
        self.count = count
        self.encoding = encoding
        self.prompt_tokens = prompt_tokens

    def whole(self, encoded: Any) -> list[p.Answer]:
        tokens = self.prompt_tokens
        if isinstance(encoded, dict):
            reported = encoded.get("prompt_tokens")
            if isinstance(reported, int) and reported > 0:
                tokens = reported
            encoded = encoded.get("embeddings", encoded.get("data"))
        if hasattr(encoded, "tolist"):
            encoded = encoded.tolist()
        if isinstance(encoded, list) and encoded and isinstance(encoded[0], (int, float)):
            encoded = [encoded]
        if not isinstance(encoded, list) or len(encoded) != self.count:
            got = len(encoded) if isinstance(encoded, list) else type(encoded).__name__
            raise HTTPException(
                500, f"predict returned {got} embedding(s) for {self.count} input(s)"
            )
        data = []
        for i, vector in enumerate(encoded):
            values = vector.tolist() if hasattr(vector, "tolist") else vector
            if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
                raise HTTPException(500, f"embedding {i} is not a list of numbers")
            item: Any = [float(v) for v in values]
            if self.encoding == "base64":
                item = base64.b64encode(struct.pack(f"<{len(item)}f", *item)).decode()
            data.append({"object": "embedding", "index": i, "embedding": item})
        body = {
            "object": "list",
            "data": data,
            "model": self.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return [(p.REPLY, {"status": 200, "ct": "application/json"}, json.dumps(body).encode())]

    def error(self, status: int, error: Any) -> list[p.Answer]:
        return [whole_error(status, error, self.litserve_errors)]


def openai_spec_for(api: Any, model: str, route: str | None = None) -> Any:
    """Chat for a generator ``predict``, embeddings otherwise; with a spec object of the API's
    own (LitServe's or zeroserve's), the one it names, and LitServe's request objects."""
    given = spec_object_of(api)
    if given is not None:
        names = {cls.__name__ for cls in type(given).__mro__}
        own = route_of(api)
        if not route and own != getattr(given, "api_path", None):
            route = own
        if "OpenAIEmbeddingSpec" in names:
            return OpenAIEmbeddingSpec(model, route, request_objects=True)
        if "OpenAISpec" in names:
            return OpenAIChatSpec(model, route, request_objects=True)
        raise ConfigError(
            f"{type(api).__name__} was built with {type(given).__name__}, which is not served: "
            "the OpenAI specs are (OpenAISpec, OpenAIEmbeddingSpec)"
        )
    if yields(api.predict):
        return OpenAIChatSpec(model, route)
    return OpenAIEmbeddingSpec(model, route)


def route_of(api: Any) -> str:
    """The path an API is served on, as LitServe's ``LitAPI.api_path`` says it: the API's
    own when it set one, else its spec's, else ``/predict``."""
    own = str(getattr(api, "api_path", "/predict"))
    given = spec_object_of(api)
    if given is not None and own == "/predict":
        return str(getattr(given, "api_path", own))
    return own


def spec_object_of(api: Any) -> Any:
    """The spec object an API was built with: LitServe keeps it in ``_spec``, zeroserve in
    ``spec``."""
    given = vars(api).get("_spec") if hasattr(api, "__dict__") else None
    if given is None:
        given = getattr(api, "spec", None)
    return None if given is None or isinstance(given, str) else given
