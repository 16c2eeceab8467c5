"""The APIs the benchmark serves: the same trivial work everywhere."""

from __future__ import annotations

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


class BatchedDoubleAPI(DoubleAPI):
    max_batch_size = 16
    batch_timeout = 0.002

    def predict(self, xs: list[Any]) -> list[Any]:
        return [x * 2 for x in xs]
