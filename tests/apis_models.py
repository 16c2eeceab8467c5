"""APIs that serve many models (``load_model``), for tests/test_models.py and the benchmark.

A "model" is a multiplier. Loads and unloads are appended to the file ``MODELS_LOG`` names
(when it is set), one ``PID EVENT MODEL`` line each; ``MODELS_LOAD_S`` makes a load slow.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from zeroserve import LitAPI

FACTORS = {"double": 2, "triple": 3, "tenfold": 10, "half": 0.5, "zero": 0}


def _note(event: str, model_id: str) -> None:
    log = os.environ.get("MODELS_LOG")
    if log:
        with Path(log).open("a") as f:
            f.write(f"{os.getpid()} {event} {model_id}\n")


class ModelsAPI(LitAPI):
    """{"x": N} with X-Model-Id M -> {"y": N * factor of M, "model": M, "pid": ...}."""

    max_models_per_worker = 2

    def load_model(self, model_id: str) -> dict[str, Any]:
        if model_id not in FACTORS:
            raise KeyError(model_id)
        time.sleep(float(os.environ.get("MODELS_LOAD_S", "0")))  # a model's load time
        _note("load", model_id)
        return {"factor": FACTORS[model_id]}

    def unload_model(self, model_id: str, model: dict[str, Any]) -> None:
        _note("unload", model_id)

    def predict(self, x: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        model = context["model"]
        return {"y": x["x"] * model["factor"], "model": context["model_id"], "pid": os.getpid()}


class AsyncModelsAPI(ModelsAPI):
    """The same, with an async load_model and predict (the async loop: loads are shared)."""

    async def load_model(self, model_id: str) -> dict[str, Any]:  # type: ignore[override]
        if model_id not in FACTORS:
            raise KeyError(model_id)
        await asyncio.sleep(float(os.environ.get("MODELS_LOAD_S", "0")))  # a model's load time
        _note("load", model_id)
        return {"factor": FACTORS[model_id]}

    async def predict(self, x: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        await asyncio.sleep(0.01)  # the model's work time
        return {"y": x["x"] * context["model"]["factor"], "model": context["model_id"]}


class BatchModelsAPI(ModelsAPI):
    """Batches of up to 4: each answer lists the models its batch saw."""

    max_batch_size = 4
    batch_timeout = 0.1

    def predict(self, xs: list[Any], context: list[dict[str, Any]]) -> list[Any]:  # type: ignore[override]
        seen = sorted({c["model_id"] for c in context})
        return [
            {"y": x["x"] * c["model"]["factor"], "batch_models": seen}
            for x, c in zip(xs, context, strict=True)
        ]


class ChatModelsAPI(LitAPI):
    """A chat model of many (``--spec openai``): it says which model answered."""

    max_models_per_worker = 2

    def load_model(self, model_id: str) -> str:
        if model_id not in FACTORS:
            raise KeyError(model_id)
        return model_id.upper()

    def predict(self, messages: Any, context: dict[str, Any]) -> Any:
        yield f"{context['model']} heard {messages[-1]['content']}"
