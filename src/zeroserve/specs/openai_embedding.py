"""``litserve.specs.openai_embedding`` under zeroserve's name: the embeddings spec and
OpenAI's embedding objects as pydantic models, as LitServe models them."""

from __future__ import annotations

from typing import Literal

from zeroserve.specs._pydantic import pydantic
from zeroserve.worker.api import LitSpec, OpenAIEmbeddingSpec

BaseModel = pydantic.BaseModel

__all__ = [
    "Embedding",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "LitSpec",
    "OpenAIEmbeddingSpec",
    "UsageInfo",
]


class EmbeddingRequest(BaseModel):
    input: str | list[str] | list[int] | list[list[int]]
    model: str
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    def get_num_items(self) -> int:
        """How many texts (or, for one tokenised text, tokens) the input holds."""
        if isinstance(self.input, list):
            return (
                len(self.input[0])
                if self.input and isinstance(self.input[0], list)
                else len(self.input)
            )
        return 1

    def ensure_list(self) -> list:
        return self.input if isinstance(self.input, list) else [self.input]


class Embedding(BaseModel):
    index: int
    embedding: list[float] | str
    object: Literal["embedding"] = "embedding"


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingResponse(BaseModel):
    data: list[Embedding]
    model: str
    object: Literal["list"] = "list"
    usage: UsageInfo
