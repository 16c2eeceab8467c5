"""``litserve.specs.openai`` under zeroserve's name: the OpenAI spec and OpenAI's chat
completion objects as pydantic models, field for field as LitServe models them."""

from __future__ import annotations

import time
import uuid
from enum import Enum
from typing import Literal

from zeroserve.specs._pydantic import pydantic
from zeroserve.worker.api import LitSpec, OpenAISpec

BaseModel = pydantic.BaseModel
Field = pydantic.Field

__all__ = [
    "AudioContent",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatCompletionResponseChoice",
    "ChatCompletionStreamingChoice",
    "ChatMessage",
    "ChatMessageWithUsage",
    "ChoiceDelta",
    "Function",
    "FunctionCall",
    "ImageContent",
    "ImageContentURL",
    "ImageDetail",
    "InputAudio",
    "JSONSchema",
    "LitSpec",
    "OpenAISpec",
    "ResponseFormatJSONObject",
    "ResponseFormatJSONSchema",
    "ResponseFormatText",
    "TextContent",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "UsageInfo",
]


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:22]}"


def _now() -> int:
    return int(time.time())


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0


class TextContent(BaseModel):
    type: str
    text: str


class ImageDetail(str, Enum):
    auto = "auto"
    low = "low"
    high = "high"


class ImageContentURL(BaseModel):
    url: str
    detail: ImageDetail = ImageDetail.auto


class ImageContent(BaseModel):
    type: str
    image_url: str | ImageContentURL


class InputAudio(BaseModel):
    #: Base64-encoded audio.
    data: str
    format: Literal["wav", "mp3"]


class AudioContent(BaseModel):
    type: Literal["input_audio"]
    input_audio: InputAudio


class Function(BaseModel):
    name: str
    description: str
    parameters: dict[str, object]


class ToolChoice(str, Enum):
    auto = "auto"
    none = "none"
    any = "any"


class Tool(BaseModel):
    type: Literal["function"]
    function: Function


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    index: int = 0
    id: str | None = None
    type: str = "function"
    function: FunctionCall


class ResponseFormatText(BaseModel):
    type: Literal["text"]


class ResponseFormatJSONObject(BaseModel):
    type: Literal["json_object"]


class JSONSchema(BaseModel):
    name: str
    description: str | None = None
    schema_: dict[str, object] | None = Field(None, alias="schema")
    strict: bool | None = False


class ResponseFormatJSONSchema(BaseModel):
    json_schema: JSONSchema
    type: Literal["json_schema"]


ResponseFormat = ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema


class ChatMessage(BaseModel):
    role: str
    content: str | list[TextContent | ImageContent | AudioContent] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class ChatMessageWithUsage(ChatMessage):
    prompt_tokens: int | None = 0
    total_tokens: int | None = 0
    completion_tokens: int | None = 0


class ChoiceDelta(ChatMessage):
    content: str | None = None
    role: Literal["system", "user", "assistant", "tool"] | None = None  # type: ignore[assignment]


class ChatCompletionRequest(BaseModel):
    model: str | None = ""
    messages: list[ChatMessage]
    temperature: float | None = 0.7
    top_p: float | None = 1.0
    n: int | None = 1
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    presence_penalty: float | None = 0.0
    frequency_penalty: float | None = 0.0
    user: str | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = ToolChoice.auto
    response_format: ResponseFormat | None = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    metadata: dict[str, str] | None = None


class ChatCompletionResponseChoice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: Literal["stop", "length"] | None


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=_completion_id)
    object: str = "chat.completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[ChatCompletionResponseChoice]
    usage: UsageInfo


class ChatCompletionStreamingChoice(BaseModel):
    delta: ChoiceDelta | None
    finish_reason: (
        Literal["stop", "length", "tool_calls", "content_filter", "function_call"] | None
    ) = None
    index: int
    logprobs: dict | None = None


class ChatCompletionChunk(BaseModel):
    id: str = Field(default_factory=_completion_id)
    object: str = "chat.completion.chunk"
    created: int = Field(default_factory=_now)
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatCompletionStreamingChoice]
    usage: UsageInfo | None
