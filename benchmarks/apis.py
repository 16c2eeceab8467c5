"""The APIs the benchmark serves: the same trivial work everywhere."""

from __future__ import annotations

import asyncio
import base64
import time
from itertools import pairwise
from typing import Any

from zeroserve import LitAPI


class DoubleAPI(LitAPI):
    """{"input": x} -> {"output": 2x}."""

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Any:
        return x * 2

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


class ImageSizeAPI(LitAPI):
    """{"image": base64} -> {"bytes": n}: a large body decoded, as an image model's would be."""

    def decode_request(self, request: Any) -> Any:
        return base64.b64decode(request["image"])

    def predict(self, image: bytes) -> Any:
        return len(image)

    def encode_response(self, output: Any) -> Any:
        return {"bytes": output}


class BatchedDoubleAPI(DoubleAPI):
    max_batch_size = 16
    batch_timeout = 0.002

    def predict(self, xs: list[Any]) -> list[Any]:
        return [x * 2 for x in xs]


class TokenStreamAPI(LitAPI):
    """Streams 16 pieces; each step costs 2 ms of "model" time, like a token of a small model."""

    stream = True
    steps = 16

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Any:
        for i in range(self.steps):
            time.sleep(0.002)
            yield f"{x}-{i} "


class BatchedTokenStreamAPI(TokenStreamAPI):
    """The same steps, but one step serves the whole batch."""

    max_batch_size = 8
    batch_timeout = 0.005

    def predict(self, xs: list[Any]) -> Any:
        for i in range(self.steps):
            time.sleep(0.002)
            yield [f"{x}-{i} " for x in xs]


class SleepAPI(LitAPI):
    """Each predict waits 50 ms, like a model bound by a device rather than the CPU."""

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Any:
        time.sleep(0.05)
        return x

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


class SleepBatchedAPI(SleepAPI):
    """One 50 ms wait serves the whole batch (set its size with --max-batch-size)."""

    batch_timeout = 0.01

    def predict(self, xs: list[Any]) -> list[Any]:
        time.sleep(0.05)
        return xs


class AsyncIOAPI(LitAPI):
    """predict awaits 100 ms, like a call to another service; nothing else costs."""

    io_s = 0.1

    async def decode_request(self, request: Any) -> Any:
        return request["input"]

    async def predict(self, x: Any) -> Any:
        await asyncio.sleep(self.io_s)
        return x

    async def encode_response(self, output: Any) -> Any:
        return {"output": output}


class NumpyMLP(LitAPI):
    """A 784-1024-1024-10 perceptron in numpy, in batches of 16: CPU-bound work in a BLAS
    that starts threads of its own. {"input": x}, x a number (a 784-vector of it) or 784
    numbers -> {"output": the class}. Needs numpy (benchmarks/requirements.txt)."""

    max_batch_size = 16
    batch_timeout = 0.002
    sizes = (784, 1024, 1024, 10)

    def setup(self, device: str) -> None:
        import numpy as np

        self.np = np
        rng = np.random.default_rng(0)
        self.layers = [
            (
                rng.standard_normal((n_in, n_out), dtype=np.float32) / np.sqrt(n_in),
                np.zeros(n_out, dtype=np.float32),
            )
            for n_in, n_out in pairwise(self.sizes)
        ]

    def decode_request(self, request: Any) -> Any:
        x = request["input"]
        if isinstance(x, (int, float)):
            return self.np.full(self.sizes[0], x, dtype=self.np.float32)
        return self.np.asarray(x, dtype=self.np.float32).reshape(self.sizes[0])

    def predict(self, xs: list[Any]) -> list[int]:
        h = self.np.stack(xs)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                self.np.maximum(h, 0, out=h)
        return h.argmax(axis=1).tolist()

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


class ModelZooAPI(LitAPI):
    """Many models (benchmarks/models.py): {"input": x} with X-Model-Id M -> {"output": x * k}.

    A load takes ``ZOO_LOAD_MS`` (a model read from disk, say), a request ``ZOO_PREDICT_MS``;
    a process holds 2 models."""

    max_models_per_worker = 2

    def setup(self, device: str) -> None:
        import os

        self.load_s = float(os.environ.get("ZOO_LOAD_MS", "100")) / 1000
        self.predict_s = float(os.environ.get("ZOO_PREDICT_MS", "2")) / 1000

    def load_model(self, model_id: str) -> Any:
        if not model_id.startswith("m"):
            raise KeyError(model_id)
        time.sleep(self.load_s)  # the model's load
        return len(model_id)

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any, context: dict[str, Any]) -> Any:
        time.sleep(self.predict_s)  # the model's work
        return x * context["model"]

    def encode_response(self, output: Any) -> Any:
        return {"output": output}
