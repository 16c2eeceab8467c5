"""The class a model author subclasses: LitServe's ``LitAPI`` contract, run on zeroserve workers.

A class written against LitServe's ``LitAPI`` runs unchanged: the same
method names, the same defaults, the same attributes (``max_batch_size``,
``batch_timeout``, ``api_path``, ``stream``). Subclassing this one is
optional; any object with a ``predict`` method will do.
"""

from __future__ import annotations

import inspect
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl


class Response:
    """Return from ``encode_response`` to choose the body, status, headers and media type.

    Starlette's (and so FastAPI's and LitServe's) ``Response``: ``content`` is bytes or
    text (encoded as UTF-8), ``media_type`` the content type, with ``; charset=utf-8``
    added to ``text/*`` types, as Starlette does. A Starlette or FastAPI response object
    returned from ``encode_response`` is honoured the same way.
    """

    media_type: str | None = None
    charset = "utf-8"

    def __init__(
        self,
        content: Any = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: Any = None,
    ) -> None:
        if background is not None:
            raise TypeError("Response(background=...) is not supported: run the task yourself")
        self.status_code = status_code
        if media_type is not None:
            self.media_type = media_type
        self.body = self.render(content)
        self.headers = {str(k).lower(): str(v) for k, v in (headers or {}).items()}
        if self.media_type is not None and "content-type" not in self.headers:
            content_type = self.media_type
            if content_type.startswith("text/") and "charset=" not in content_type.lower():
                content_type += f"; charset={self.charset}"
            self.headers["content-type"] = content_type

    def render(self, content: Any) -> bytes:
        if content is None:
            return b""
        if isinstance(content, (bytes, bytearray, memoryview)):
            return bytes(content)
        return str(content).encode(self.charset)


class Request:
    """What an ``authorize(self, request)`` written without FastAPI receives: the request's
    method, path, headers (any case), query parameters and body."""

    def __init__(
        self, method: str, path: str, headers: Mapping[str, str], query: str, body: bytes
    ) -> None:
        self.method = method
        self.path = path
        self.headers = _Headers(headers)
        self.query_params = dict(parse_qsl(query, keep_blank_values=True))
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class _Headers(dict):
    """Header names in any case."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__((str(k).lower(), v) for k, v in headers.items())

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


class Upload:
    """A file of a multipart form, with the attributes of the upload object LitServe gives."""

    def __init__(self, filename: str, content_type: str, data: bytes) -> None:
        self.filename = filename
        self.content_type = content_type
        self.size = len(data)
        #: A binary file object over the file's bytes.
        self.file = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size)

    def seek(self, offset: int) -> int:
        return self.file.seek(offset)

    def close(self) -> None:
        self.file.close()

    def __repr__(self) -> str:
        return f"Upload({self.filename!r}, {self.content_type!r}, {self.size} bytes)"


class LitSpec:
    """What a spec object is, as LitServe names its base class; zeroserve serves the two
    OpenAI specs below (by class name, LitServe's own included)."""

    api_path: str = "/predict"
    stream: bool = False

    def decode_request(self, request: Any, **_: Any) -> Any:
        return request

    def encode_response(self, output: Any, **_: Any) -> Any:
        return output


class OpenAISpec(LitSpec):
    """``spec=OpenAISpec()``: the class serves OpenAI's chat completions, as with LitServe's
    OpenAISpec (``decode_request`` receives the whole request object)."""

    api_path = "/v1/chat/completions"
    stream = True


class OpenAIEmbeddingSpec(LitSpec):
    """``spec=OpenAIEmbeddingSpec()``: the class serves OpenAI's embeddings, as with
    LitServe's (the default ``decode_request`` gives ``predict`` the request's input)."""

    api_path = "/v1/embeddings"
    stream = False

    def decode_request(self, request: Any, **_: Any) -> Any:
        return request.input

    def encode_response(self, output: Any, **_: Any) -> Any:
        return output


class LitAPI:
    """Override ``setup`` and ``predict``; the rest have LitServe's defaults.

    Settings may be class attributes or constructor arguments, as in LitServe;
    the worker's command-line flags override both.
    """

    max_batch_size: int = 1
    batch_timeout: float = 0.0
    api_path: str = "/predict"
    stream: bool = False
    enable_async: bool = False
    #: ``ContinuousBatchingLoop()`` to batch per step; None for the loop the methods ask for.
    loop: Any = None
    #: ``OpenAISpec()`` or ``OpenAIEmbeddingSpec()`` to serve OpenAI's endpoints.
    spec: Any = None
    #: Set by the worker before ``setup``.
    device: str | None = None
    #: ``MCP(...)``: the API is also an MCP tool at ``/mcp/`` (see ``zeroserve.mcp``).
    mcp: Any = None

    # LitServe's positional order is the contract a model author relies on.
    def __init__(  # noqa: PLR0917
        self,
        max_batch_size: int | None = None,
        batch_timeout: float | None = None,
        api_path: str | None = None,
        stream: bool | None = None,
        loop: Any = None,
        spec: Any = None,
        mcp: Any = None,
        enable_async: bool | None = None,
    ) -> None:
        """LitServe's arguments in LitServe's order; one left out keeps the class's value."""
        if loop == "auto":
            loop = None
        if mcp is not None:
            self.mcp = mcp
            mcp._connect(self)
        given = {
            "max_batch_size": max_batch_size,
            "batch_timeout": batch_timeout,
            "api_path": api_path,
            "stream": stream,
            "enable_async": enable_async,
            "loop": loop,
            "spec": spec,
        }
        for name, value in given.items():
            if value is not None:
                setattr(self, name, value)
        if spec is not None:
            self.stream = bool(getattr(spec, "stream", self.stream))

    def setup(self, device: str) -> None:
        """Load the model; called once per worker process before it takes work."""

    def decode_request(self, request: Any) -> Any:
        return self.spec.decode_request(request) if self.spec is not None else request

    def batch(self, inputs: list[Any]) -> Any:
        """Stack inputs when they are arrays or tensors; otherwise keep the list."""
        first = inputs[0] if inputs else None
        module = type(first).__module__.split(".")[0]
        if module == "numpy":
            import numpy

            return numpy.stack(inputs)
        if module == "torch":
            import torch

            return torch.stack(inputs)
        return inputs

    def predict(self, x: Any) -> Any:
        raise NotImplementedError("predict is not implemented")

    def unbatch(self, output: Any) -> Any:
        """One output per input; for a stream, one list per step of the batched generator."""
        if inspect.isgenerator(output):
            return (list(step) for step in cast(Iterator[Iterable[Any]], output))
        if inspect.isasyncgen(output):
            return _unbatch_async(output)
        return list(output)

    def encode_response(self, output: Any) -> Any:
        return self.spec.encode_response(output) if self.spec is not None else output

    def log(self, key: str, value: Any) -> None:
        """Hand a (key, value) pair to the worker's loggers once the current batch is answered."""
        queue = getattr(self, "_logger_queue", None)
        if queue is not None:
            queue.put((key, value))


def yields(func: Any) -> bool:
    """True for a generator function, sync or async: what streaming asks of predict."""
    return inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)


def is_async(func: Any) -> bool:
    """A coroutine or async generator function: what runs on the event loop."""
    return inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)


def inherits_default(method: Any) -> bool:
    """True for a method a class inherited from zeroserve's or LitServe's ``LitAPI`` unchanged."""
    func = getattr(method, "__func__", method)
    return getattr(func, "__qualname__", "").startswith("LitAPI.")


async def _unbatch_async(output: Any) -> Any:
    async for step in output:
        yield list(step)


#: Yield this for one request of a batched stream to end its stream while the others go on.
STREAM_END = type("StreamEnd", (), {"__repr__": lambda self: "STREAM_END"})()


class LitAPIStatus:
    """What a continuous-batching ``step`` says of each output (LitServe's own values)."""

    START = "START"
    OK = "OK"
    ERROR = "ERROR"
    FINISH_STREAMING = "FINISH_STREAMING"


@dataclass
class Output:
    """One sequence's output of one ``step``: a piece to send, its end, or its error."""

    uid: str
    output: Any
    status: str


class ContinuousBatchingLoop:
    """Set ``loop = ContinuousBatchingLoop()`` on an API to batch per step, as in LitServe.

    Either the API implements ``add_request(uid, request)``, ``has_capacity()``,
    ``has_active_requests()`` and ``step(prev_outputs) -> list[Output]``, or (the
    default variant) ``predict(inputs, generated_sequences)`` returning one new
    token per sequence and ``has_finished(uid, token, max_sequence_length)``.
    """

    def __init__(self, max_sequence_length: int = 2048) -> None:
        self.max_sequence_length = max_sequence_length


class DefaultContinuousBatchingLoop(ContinuousBatchingLoop):
    """The default variant by name, as LitServe spells it."""
