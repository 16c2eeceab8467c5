"""LitServe serving the benchmark's APIs with its defaults, in the benchmark's own environment."""

from __future__ import annotations

import asyncio
import base64
import sys
from typing import Any

import litserve as ls
from steps_api import MixedSteps


class DoubleAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request):  # no annotation: LitServe reads it as the body type
        return request["input"]

    def predict(self, x: Any) -> Any:
        return x * 2

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


class BatchedDoubleAPI(DoubleAPI):
    def __init__(self) -> None:
        super().__init__(max_batch_size=16, batch_timeout=0.002)

    def predict(self, xs: list[Any]) -> list[Any]:
        return [x * 2 for x in xs]


class ImageSizeAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request):  # no annotation: LitServe reads it as the body type
        return base64.b64decode(request["image"])

    def predict(self, image: bytes) -> Any:
        return len(image)

    def encode_response(self, output: Any) -> Any:
        return {"bytes": output}


class AsyncIOAPI(ls.LitAPI):
    """predict awaits 100 ms, like a call to another service (LitServe's async loop)."""

    def __init__(self) -> None:
        super().__init__(enable_async=True)

    def setup(self, device: str) -> None:
        pass

    async def decode_request(self, request):  # no annotation: LitServe reads it as the body type
        return request["input"]

    async def predict(self, x: Any) -> Any:
        await asyncio.sleep(0.1)
        return x

    async def encode_response(self, output: Any) -> Any:
        return {"output": output}


MODES = {
    "plain": DoubleAPI,
    "batched": BatchedDoubleAPI,
    "async": AsyncIOAPI,
    "steps": MixedSteps,
    "image": ImageSizeAPI,
}

if __name__ == "__main__":
    api = MODES[sys.argv[2]]()
    ls.LitServer(api, accelerator="cpu").run(port=int(sys.argv[1]), generate_client_file=False)
