"""``litserve.specs`` under zeroserve's name.

The request and response models (``ChatCompletionRequest``, ...) are pydantic
models, loaded when first named, so that ``import zeroserve`` needs no pydantic.
"""

from typing import Any

from zeroserve.worker.api import LitSpec, OpenAIEmbeddingSpec, OpenAISpec

__all__ = [
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "LitSpec",
    "OpenAIEmbeddingSpec",
    "OpenAISpec",
]

_MODELS = {
    "ChatCompletionChunk": "openai",
    "ChatCompletionRequest": "openai",
    "ChatCompletionResponse": "openai",
    "EmbeddingRequest": "openai_embedding",
    "EmbeddingResponse": "openai_embedding",
}


def __getattr__(name: str) -> Any:
    module = _MODELS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
