"""The built-in demo API: LitServe's quick-start model (x squared), batched, no download needed."""

from __future__ import annotations

from typing import Any

from zeroserve.common.errors import HTTPException
from zeroserve.worker.api import LitAPI


class SquareAPI(LitAPI):
    """POST {"input": 4} to /predict and get {"output": 16}."""

    max_batch_size = 8
    batch_timeout = 0.002

    def setup(self, device: str) -> None:
        self.model = lambda x: x**2

    def decode_request(self, request: Any) -> float:
        value = request.get("input") if isinstance(request, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HTTPException(422, 'send a JSON object with a number, like {"input": 4}')
        return value

    def predict(self, x: list[float]) -> list[float]:
        return [self.model(v) for v in x]

    def encode_response(self, output: float) -> dict[str, float]:
        return {"output": output}
