"""APIs for the OpenAI spec (``spec=OpenAISpec()``): a fixed answer, a custom message, a
tool call, a structured output, and a batch that reads its context."""

from __future__ import annotations

import time
from typing import Any

from zeroserve.worker.api import LitAPI

GENERATED = "This is a generated output"


def _message(**fields: Any) -> Any:
    """A ChatMessage when pydantic is there, else the same fields as a dict."""
    try:
        from zeroserve.specs.openai import ChatMessage
    except ImportError:
        return fields
    return ChatMessage(**fields)


class TestAPI(LitAPI):
    def setup(self, device: str) -> None:
        self.model = None

    def predict(self, x: Any) -> Any:
        yield GENERATED


class TestAPIWithCustomEncode(TestAPI):
    def encode_response(self, output: Any) -> Any:
        yield _message(role="assistant", content="This is a custom encoded output")


class TestAPIWithToolCalls(TestAPI):
    def encode_response(self, output: Any) -> Any:
        yield _message(
            role="assistant",
            content="",
            tool_calls=[
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "function_1", "arguments": '{"arg_1": "arg_1_value"}'},
                }
            ],
        )


class TestAPIWithStructuredOutput(TestAPI):
    def encode_response(self, output: Any) -> Any:
        yield _message(
            role="assistant",
            content='{"name": "Science Fair", "date": "Friday", "participants": ["Alice", "Bob"]}',
        )


class OpenAIBatchContext(LitAPI):
    """A batched stream of twenty words that sets, then checks, each request's context."""

    WORDS = (
        *("Hi!", "It's", "nice", "to", "meet", "you.", "Is", "there", "something", "I"),
        *("can", "help", "you", "with", "or", "would", "you", "like", "to", "chat?"),
    )

    def setup(self, device: str) -> None:
        self.model = None

    def batch(self, inputs: list[Any]) -> Any:
        return inputs

    def predict(self, inputs: Any, context: Any = None) -> Any:
        assert isinstance(context, list)
        for ctx in context:
            ctx["temperature"] = 1.0
        for word in self.WORDS:
            time.sleep(0.01)
            yield [word + " "] * len(inputs)

    def unbatch(self, output: Any) -> Any:
        return output

    def encode_response(self, output_stream: Any, context: Any = None) -> Any:
        for outputs in output_stream:
            yield [{"role": "assistant", "content": output} for output in outputs]
        for ctx in context:
            assert ctx["temperature"] == 1.0, f"context {ctx} is not 1.0"


USAGE = {"prompt_tokens": 25, "completion_tokens": 10, "total_tokens": 35}


class OpenAIWithUsage(LitAPI):
    """One answer that carries its own token counts."""

    def setup(self, device: str) -> None:
        self.model = None

    def predict(self, x: Any) -> Any:
        yield {"role": "assistant", "content": "10 + 6 is equal to 16.", **USAGE}


class OpenAIWithUsageEncodeResponse(LitAPI):
    """Streamed tokens, then an empty piece that carries the token counts."""

    def setup(self, device: str) -> None:
        self.model = None

    def predict(self, x: Any) -> Any:
        yield from ["10", " +", " ", "6", " is", " equal", " to", " ", "16", "."]

    def encode_response(self, output: Any) -> Any:
        for out in output:
            yield {"role": "assistant", "content": out}
        yield {"role": "assistant", "content": "", **USAGE}


class OpenAIBatchingWithUsage(OpenAIWithUsage):
    """The usage answer, batched: the counts come in a last piece per request."""

    def batch(self, inputs: list[Any]) -> Any:
        return inputs

    def predict(self, x: Any) -> Any:
        yield ["10 + 6 is equal to 16."] * len(x)

    def encode_response(self, output_stream_batch: Any, context: Any = None) -> Any:
        for output_batch in output_stream_batch:
            yield [{"role": "assistant", "content": out} for out in output_batch]
        yield [{"role": "assistant", "content": "", **USAGE}] * len(context)

    def unbatch(self, output: Any) -> Any:
        return output
