"""API classes the integration tests serve; each request says what the worker should do."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from zeroserve import HTTPException, LitAPI


class EchoAPI(LitAPI):
    """{"value": V} -> {"echo": V, "pid": ...}; "op" asks for a failure, a sleep, an HTTP error."""

    def setup(self, device: str) -> None:
        self.device = device

    def decode_request(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise HTTPException(422, "send a JSON object")
        if request.get("op") == "http":
            raise HTTPException(request.get("status", 418), "asked for it")
        return request

    def predict(self, x: dict[str, Any]) -> dict[str, Any]:
        op = x.get("op", "echo")
        if op == "fail":
            raise ValueError("boom")
        if op == "sleep":
            time.sleep(float(x["seconds"]))
        if "mark" in x:
            Path(x["mark"]).write_text(str(os.getpid()))
        return {"echo": x.get("value"), "pid": os.getpid()}


class OtherRouteAPI(EchoAPI):
    api_path = "/other"


class BatchAPI(LitAPI):
    """Records the size of the batch each request was part of."""

    max_batch_size = 8
    batch_timeout = 0.05

    def predict(self, xs: list[Any]) -> list[dict[str, Any]]:
        time.sleep(0.02)
        return [{"value": x["value"], "batch": len(xs), "pid": os.getpid()} for x in xs]


class ShortUnbatchAPI(BatchAPI):
    """Loses an output whenever a batch has more than one input."""

    def unbatch(self, output: list[Any]) -> list[Any]:
        return output[:-1] if len(output) > 1 else output


class BadSetupAPI(EchoAPI):
    def setup(self, device: str) -> None:
        raise RuntimeError("the model file is missing")
