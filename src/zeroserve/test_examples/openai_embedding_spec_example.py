"""APIs for the embeddings spec (``spec=OpenAIEmbeddingSpec()``): random 768-dimension
vectors, batched or not, with usage, yielded, or in shapes the spec refuses."""

from __future__ import annotations

import random
from typing import Any

from zeroserve.worker.api import LitAPI

DIMENSIONS = 768


def _vectors(count: int) -> list[list[float]]:
    return [[random.random() for _ in range(DIMENSIONS)] for _ in range(count)]


class TestEmbedAPI(LitAPI):
    def setup(self, device: str) -> None:
        self.model = None

    def predict(self, x: Any) -> Any:
        return _vectors(len(x) if isinstance(x, list) else 1)

    def encode_response(self, output: Any) -> Any:
        return {"embeddings": output}


class TestEmbedBatchedAPI(TestEmbedAPI):
    def predict(self, batch: Any) -> Any:
        return [_vectors(len(x)) for x in batch]


class TestEmbedAPIWithUsage(TestEmbedAPI):
    def encode_response(self, output: Any) -> Any:
        return {"embeddings": output, "prompt_tokens": 10, "total_tokens": 10}


class TestEmbedAPIWithYieldPredict(TestEmbedAPI):
    def predict(self, x: Any) -> Any:
        yield from _vectors(1)[0]


class TestEmbedAPIWithYieldEncodeResponse(TestEmbedAPI):
    def encode_response(self, output: Any) -> Any:
        yield {"embeddings": output}


class TestEmbedAPIWithNonDictOutput(TestEmbedAPI):
    def encode_response(self, output: Any) -> Any:
        return output


class TestEmbedAPIWithMissingEmbeddings(TestEmbedAPI):
    def encode_response(self, output: Any) -> Any:
        return {"output": output}
