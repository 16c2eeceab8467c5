"""Classes written for LitServe, untouched: they subclass litserve's own LitAPI."""

from __future__ import annotations

import os
from typing import Any

import litserve as ls
from fastapi import HTTPException


class LitEcho(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = lambda x: x * 2
        self.seen_device = device

    def decode_request(self, request: Any) -> Any:
        if "input" not in request:
            raise HTTPException(status_code=422, detail="input is missing")
        return request["input"]

    def predict(self, x: Any) -> Any:
        return self.model(x)

    def encode_response(self, output: Any) -> Any:
        return {"output": output, "device": self.seen_device, "pid": os.getpid()}


class LitBatched(ls.LitAPI):
    """Relies on LitServe's default unbatch, which LitServe sets up in pre_setup."""

    def __init__(self) -> None:
        super().__init__(max_batch_size=4, batch_timeout=0.05, api_path="/double")

    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, xs: list[Any]) -> list[Any]:
        return [{"output": x * 2, "batch": len(xs)} for x in xs]


class LitStreaming(ls.LitAPI):
    def __init__(self) -> None:
        super().__init__(stream=True)

    def setup(self, device: str) -> None:
        pass

    def predict(self, x: Any, context: dict) -> Any:
        context["seen"] = True
        for i in range(int(x["n"])):
            yield {"i": i}

    def encode_response(self, output: Any, context: dict) -> Any:
        for item in output:
            yield {**item, "context_kept": context.get("seen", False)}
