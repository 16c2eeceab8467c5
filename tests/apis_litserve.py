"""Classes written for LitServe, untouched: they subclass litserve's own LitAPI."""

from __future__ import annotations

import os
from typing import Any

import litserve as ls
from fastapi import HTTPException
from litserve.loops import ContinuousBatchingLoop, Output
from litserve.loops.continuous_batching_loop import DefaultContinuousBatchingLoop
from litserve.utils import LitAPIStatus


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


class LitSteps(ls.LitAPI):
    """Written for LitServe's ContinuousBatchingLoop: each sequence counts to its "n"."""

    def __init__(self) -> None:
        super().__init__(stream=True, max_batch_size=4, loop=ContinuousBatchingLoop())

    def setup(self, device: str) -> None:
        self.active: dict[str, list[int]] = {}

    def add_request(self, uid: str, request: Any) -> None:
        self.active[uid] = [int(request["n"]), 0]

    def has_capacity(self) -> bool:
        return len(self.active) < self.max_batch_size

    def has_active_requests(self) -> bool:
        return bool(self.active)

    def step(self, prev_outputs: list[Output] | None) -> list[Output]:
        outputs = []
        for uid, state in list(self.active.items()):
            n, i = state
            outputs.append(Output(uid, i, LitAPIStatus.OK))
            state[1] = i + 1
            if state[1] >= n:
                outputs.append(Output(uid, "", LitAPIStatus.FINISH_STREAMING))
                del self.active[uid]
        return outputs

    def encode_response(self, output: Any) -> Any:
        return {"token": output}


class LitDefaultSteps(ls.LitAPI):
    """LitServe's default variant: predict gives one token per sequence, has_finished ends one."""

    def __init__(self) -> None:
        super().__init__(stream=True, max_batch_size=4, loop=DefaultContinuousBatchingLoop())

    def setup(self, device: str) -> None:
        self.lengths: dict[str, int] = {}

    def decode_request(self, request: Any) -> Any:
        return int(request["n"])

    def predict(self, inputs: list[int], generated: list[list[Any]]) -> list[Any]:
        return [f"t{len(seq)}/{n}" for n, seq in zip(inputs, generated, strict=True)]

    def has_finished(self, uid: str, token: str, max_sequence_length: int) -> bool:
        done, n = token[1:].split("/")
        return int(done) + 1 >= int(n)

    def encode_response(self, output: Any) -> Any:
        return {"token": output}


class LitUpload(ls.LitAPI):
    """Reads a multipart file field the way LitServe examples do."""

    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request: Any) -> Any:
        upload = request["content"]
        return {
            "name": upload.filename,
            "type": upload.content_type,
            "size": upload.size,
            "head": upload.file.read(5).decode(),
            "note": request["note"],
        }

    def predict(self, x: Any) -> Any:
        return x


class LitOpenAIChat(ls.LitAPI):
    """Built with LitServe's OpenAISpec: predict gets LitServe's request object."""

    def __init__(self) -> None:
        super().__init__(spec=ls.OpenAISpec())

    def setup(self, device: str) -> None:
        pass

    def predict(self, request: Any) -> Any:
        if request.tools:
            function = request.tools[0].function.name
            call = {"name": function, "arguments": '{"city": "Oslo"}'}
            yield {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "call_1", "type": "function", "function": call}],
            }
            return
        words = request.messages[-1].content.split()
        yield f"t={request.temperature}"
        for word in words:
            yield " " + word


class LitOpenAIEmbed(ls.LitAPI):
    """Built with LitServe's OpenAIEmbeddingSpec: predict gets the input."""

    def __init__(self) -> None:
        super().__init__(spec=ls.OpenAIEmbeddingSpec())

    def setup(self, device: str) -> None:
        pass

    def predict(self, inputs: Any) -> Any:
        texts = inputs if isinstance(inputs, list) else [inputs]
        return [[float(len(t)), 1.0] for t in texts]
