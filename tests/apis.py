"""API classes the integration tests serve; each request says what the worker should do."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path
from typing import Any

from zeroserve import (
    ContinuousBatchingLoop,
    HTTPException,
    LitAPI,
    LitAPIStatus,
    OpenAIEmbeddingSpec,
    OpenAISpec,
    Output,
    Response,
    threads_per_process,
)
from zeroserve.worker.threads import THREAD_VARIABLES

#: The thread variables as they were when the worker process imported this module.
THREADS_AT_IMPORT = {name: os.environ.get(name) for name in THREAD_VARIABLES}


class EchoAPI(LitAPI):
    """{"value": V} -> {"echo": V, "pid": ...}; "op" asks for a failure, a sleep, an HTTP error;
    "gate" holds the request until that file exists."""

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
            time.sleep(float(x["seconds"]))  # the model's work time the request asks for
        if "gate" in x:
            _wait_for(x["gate"])
        if "mark" in x:
            Path(x["mark"]).write_text(str(os.getpid()))
        return {"echo": x.get("value"), "pid": os.getpid(), "host": socket.gethostname()}

    def encode_response(self, output: dict[str, Any]) -> Any:
        answer = output.get("echo")
        if isinstance(answer, dict) and "response" in answer:
            # The client asks for an answer with this content type and these headers.
            return Response("{}", **answer["response"])
        return output


class OtherRouteAPI(EchoAPI):
    api_path = "/other"


class BatchAPI(LitAPI):
    """Records the size of the batch each request was part of."""

    max_batch_size = 8
    batch_timeout = 0.05
    #: What the model's own work takes per batch (not a wait in a test).
    work_s = 0.02

    def predict(self, xs: list[Any]) -> list[dict[str, Any]]:
        time.sleep(self.work_s)  # the model's work time
        return [{"value": x["value"], "batch": len(xs), "pid": os.getpid()} for x in xs]


class ShortUnbatchAPI(BatchAPI):
    """Loses an output whenever a batch has more than one input."""

    def unbatch(self, output: list[Any]) -> list[Any]:
        return output[:-1] if len(output) > 1 else output


class BadSetupAPI(EchoAPI):
    def setup(self, device: str) -> None:
        raise RuntimeError("the model file is missing")


def _wait_for(path: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # poll


class StreamAPI(LitAPI):
    """Yields {"i": i, "pid": ...} n times; can wait for a gate file, sleep, and record progress."""

    stream = True

    def predict(self, x: dict[str, Any]) -> Any:
        progress = x.get("progress")
        i = -1
        try:
            for i in range(int(x.get("n", 3))):
                if i == 1 and x.get("gate"):
                    _wait_for(x["gate"])
                if i == x.get("fail_at"):
                    raise RuntimeError("the model broke mid-stream")
                yield {"i": i, "pid": os.getpid()}
                if x.get("sleep"):
                    time.sleep(float(x["sleep"]))  # the model's step time the request asks for
        finally:
            if progress:
                Path(progress).write_text(f"stopped after {i + 1}")

    def encode_response(self, output: Any) -> Any:
        yield from output


class BatchStreamAPI(LitAPI):
    """Streams of different lengths in one batch: a short one ends while the others go on."""

    max_batch_size = 4
    batch_timeout = 0.3
    stream = True
    #: What each step of the model takes (not a wait in a test).
    step_s = 0.05

    def predict(self, xs: list[dict[str, Any]]) -> Any:
        from zeroserve import STREAM_END

        for step in range(max(x["n"] for x in xs)):
            yield [{"step": step, "batch": len(xs)} if step < x["n"] else STREAM_END for x in xs]
            time.sleep(self.step_s)  # the model's step time


class EchoChatAPI(LitAPI):
    """Yields the last user message back word by word; "boom" fails after the first word."""

    def predict(self, messages: list[dict[str, Any]], context: dict[str, Any]) -> Any:
        text = messages[-1]["content"]
        for n, word in enumerate(text.split()):
            if n == 1 and "boom" in text:
                raise RuntimeError("the model fell over")
            yield word if n == 0 else " " + word


class AsyncChatAPI(LitAPI):
    """An async generator chat model: each word after awaiting a remote model; a system
    message "gate:PATH" holds the words after the first until that file exists."""

    #: What the remote model takes per word (not a wait in a test).
    word_s = 0.1

    async def predict(self, messages: list[dict[str, Any]]) -> Any:
        gates = [m["content"][5:] for m in messages if m["content"].startswith("gate:")]
        for n, word in enumerate(messages[-1]["content"].split()):
            await asyncio.sleep(self.word_s)  # the time a word takes
            yield word if n == 0 else " " + word
            for gate in gates:
                deadline = time.monotonic() + 30
                while not Path(gate).exists() and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)  # poll


class UsageChatAPI(LitAPI):
    """Reports its own token counts, as LitServe's OpenAI spec allows."""

    def predict(self, messages: list[dict[str, Any]]) -> Any:
        yield {"role": "assistant", "content": "16", "prompt_tokens": 25, "completion_tokens": 10}


class EmbedAPI(LitAPI):
    """Four numbers per text, computed from it."""

    def predict(self, inputs: Any) -> list[list[float]]:
        texts = [inputs] if isinstance(inputs, str) else inputs
        return [[float(len(t)), float(t.count(" ")), 1.0, -1.0] for t in texts]


class RecordingCallback:
    """Appends each event, with the time it fired, to the file named by $ZS_TEST_EVENTS."""

    def __getattr__(self, event: str) -> Any:
        if not event.startswith("on_"):
            raise AttributeError(event)

        def record(*args: Any, **kwargs: Any) -> None:
            path = os.environ.get("ZS_TEST_EVENTS")
            if path:
                with open(path, "a") as f:
                    f.write(f"{event} {time.monotonic()}\n")
            if event == "on_after_decode_request" and os.environ.get("ZS_TEST_CALLBACK_RAISES"):
                raise RuntimeError("a callback that fails")

        return record


class RecordingLogger:
    def process(self, key: str, value: Any) -> None:
        path = os.environ.get("ZS_TEST_EVENTS")
        if path:
            with open(path, "a") as f:
                f.write(f"log {key}={value} {time.monotonic()}\n")


class LoggingAPI(EchoAPI):
    callbacks = [RecordingCallback()]  # noqa: RUF012
    loggers = [RecordingLogger()]  # noqa: RUF012

    def predict(self, x: dict[str, Any]) -> dict[str, Any]:
        path = os.environ.get("ZS_TEST_EVENTS")
        if path:
            with open(path, "a") as f:
                f.write(f"predict {time.monotonic()}\n")
        self.log("seen", x.get("value"))
        return super().predict(x)


class GeneratorWithoutStream(LitAPI):
    def predict(self, x: Any) -> Any:
        yield x


class StreamWithoutGenerator(LitAPI):
    stream = True

    def predict(self, x: Any) -> Any:
        return x


class ZeroBatch(EchoAPI):
    max_batch_size = 0


class NoPredict(LitAPI):
    pass


class AsyncFlagWithoutAsync(EchoAPI):
    enable_async = True


class ChatWithPlainEncode(LitAPI):
    def predict(self, messages: Any) -> Any:
        yield "hi"

    def encode_response(self, output: Any) -> Any:
        return {"not": "a generator"}


class AsyncSleepAPI(LitAPI):
    """predict awaits {"seconds"} (I/O, not a wait in a test); {"block": S} blocks the event
    loop with time.sleep; {"progress": FILE} records how the await ended."""

    async def decode_request(self, request: Any) -> Any:
        if not isinstance(request, dict):
            raise HTTPException(422, "send a JSON object")
        return request

    #: How many predicts await at once now, and at most so far, in this process; each answer
    #: says both, "awaiting" as it was when its predict began to await.
    awaiting = most_awaiting = 0

    async def predict(self, x: dict[str, Any]) -> dict[str, Any]:
        if x.get("block"):
            time.sleep(float(x["block"]))  # the mistake under test: a blocking call in async def
        if x.get("op") == "fail":
            raise ValueError("boom")
        self.awaiting += 1
        began_with = self.awaiting
        self.most_awaiting = max(self.most_awaiting, self.awaiting)
        try:
            await asyncio.sleep(float(x.get("seconds", 0)))  # the model's wait the request asks for
        except asyncio.CancelledError:
            if x.get("progress"):
                Path(x["progress"]).write_text("cancelled")
            raise
        finally:
            self.awaiting -= 1
        return {
            "echo": x.get("value"),
            "pid": os.getpid(),
            "most_awaiting": self.most_awaiting,
            "awaiting": began_with,
        }

    async def encode_response(self, output: Any) -> Any:
        return output


class AsyncStreamAPI(LitAPI):
    """An async generator: n pieces, each after awaiting {"seconds"}; each piece says how many
    generators of this process were running when it was made."""

    stream = True
    running = 0

    async def predict(self, x: dict[str, Any]) -> Any:
        self.running += 1
        try:
            for i in range(int(x.get("n", 3))):
                await asyncio.sleep(float(x.get("seconds", 0)))  # the model's wait, asked for
                yield {"i": i, "value": x.get("value"), "running": self.running}
        finally:
            self.running -= 1

    async def encode_response(self, output: Any) -> Any:
        async for item in output:
            yield item


class AsyncBatchAPI(LitAPI):
    """An async predict per batch of up to 4, awaiting a remote service's half second."""

    max_batch_size = 4
    batch_timeout = 0.05
    #: What the remote service takes per batch (not a wait in a test).
    remote_s = 0.5

    #: How many batches await at once now, and at most so far, in this process.
    awaiting = most_awaiting = 0

    async def predict(self, xs: list[Any]) -> list[dict[str, Any]]:
        self.awaiting += 1
        self.most_awaiting = max(self.most_awaiting, self.awaiting)
        try:
            await asyncio.sleep(self.remote_s)  # a remote call's time
        finally:
            self.awaiting -= 1
        return [{"value": x["value"], "batch": len(xs), "most": self.most_awaiting} for x in xs]


class CountingSteps(LitAPI):
    """A step-style model: each sequence yields {"n"} steps; {"fail": true} makes step raise.
    Cancelled sequences are recorded in the file named by $ZS_TEST_EVENTS."""

    stream = True
    max_batch_size = 4
    loop = ContinuousBatchingLoop()
    #: What one step of the model takes (not a wait in a test).
    step_s = 0.02

    def setup(self, device: str) -> None:
        self.active: dict[str, dict[str, Any]] = {}

    def add_request(self, uid: str, request: Any) -> None:
        self.active[uid] = {"n": int(request["n"]), "i": 0, "fail": request.get("fail", False)}

    def has_capacity(self) -> bool:
        return len(self.active) < self.max_batch_size

    def has_active_requests(self) -> bool:
        return bool(self.active)

    def cancel_request(self, uid: str) -> None:
        self.active.pop(uid, None)
        path = os.environ.get("ZS_TEST_EVENTS")
        if path:
            with open(path, "a") as f:
                f.write(f"cancel {uid}\n")

    def step(self, prev_outputs: list[Output] | None) -> list[Output]:
        time.sleep(self.step_s)  # the model's step time
        if any(s["fail"] for s in self.active.values()):
            raise RuntimeError("the step fell over")
        outputs = []
        size = len(self.active)
        for uid, s in list(self.active.items()):
            outputs.append(Output(uid, {"i": s["i"], "batch": size}, LitAPIStatus.OK))
            s["i"] += 1
            if s["i"] >= s["n"]:
                outputs.append(Output(uid, "", LitAPIStatus.FINISH_STREAMING))
                del self.active[uid]
        return outputs


class SlowSteps(CountingSteps):
    """Each step takes longer than the heartbeat window of the tests (0.2 s x 3)."""

    step_s = 0.8


class StepWithoutLoop(CountingSteps):
    loop = None


class StepsWithoutStream(CountingSteps):
    stream = False


class StepsWithoutCapacity(CountingSteps):
    has_capacity = None  # type: ignore[assignment]


class LoopWithoutStep(LitAPI):
    stream = True
    loop = ContinuousBatchingLoop()

    def predict(self, inputs: Any, generated: Any) -> Any:
        return inputs


class DeviceAPI(LitAPI):
    """Says what device setup got and which GPUs the process may see."""

    def setup(self, device: str) -> None:
        self.setup_device = device

    def predict(self, x: Any) -> dict[str, Any]:
        return {
            "setup_device": self.setup_device,
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "pid": os.getpid(),
        }


class ThreadsAPI(LitAPI):
    """Says what its process's numeric libraries were told: the thread variables (now and when
    this module was imported), threads_per_process(), and threadpoolctl's view of numpy's
    BLAS when both are installed."""

    def setup(self, device: str) -> None:
        try:
            import numpy

            numpy.ones(2) @ numpy.ones(2)
        except ImportError:
            pass

    def predict(self, x: Any) -> dict[str, Any]:
        try:
            from threadpoolctl import threadpool_info
        except ImportError:
            pools = None
        else:
            pools = [
                {"api": info["user_api"], "threads": info["num_threads"]}
                for info in threadpool_info()
            ]
        return {
            "pid": os.getpid(),
            "env": {name: os.environ.get(name) for name in THREAD_VARIABLES},
            "at_import": THREADS_AT_IMPORT,
            "threads_per_process": threads_per_process(),
            "pools": pools,
        }


class TorchGPUAPI(LitAPI):
    """A tensor model on the device setup gets (for hosts with a GPU and torch)."""

    def setup(self, device: str) -> None:
        import torch

        self.weights = torch.ones(4, device=device)

    def predict(self, x: dict[str, Any]) -> dict[str, Any]:
        return {"sum": float((self.weights * x["x"]).sum()), "device": str(self.weights.device)}


class HealthFileAPI(EchoAPI):
    """health() fails while the file named by $ZS_TEST_UNHEALTHY exists."""

    def health(self) -> bool:
        path = os.environ.get("ZS_TEST_UNHEALTHY")
        return not (path and Path(path).exists())


class AsyncHealthFileAPI(EchoAPI):
    """An async health() that raises while the file named by $ZS_TEST_UNHEALTHY exists."""

    async def health(self) -> bool:
        path = os.environ.get("ZS_TEST_UNHEALTHY")
        if path and Path(path).exists():
            raise RuntimeError("the model server went away")
        return True


class HeadersAPI(LitAPI):
    """Answers with what its context says of the request's headers and query."""

    def decode_request(self, request: Any, context: dict[str, Any]) -> Any:
        headers = context["headers"]
        return {
            "client": headers.get("x-client"),
            "authorization": headers.get("authorization"),
            "query": context["query"],
        }

    def predict(self, x: Any) -> Any:
        return x


class SpecChatAPI(LitAPI):
    """zeroserve's OpenAISpec: decode_request gets the request object, as with LitServe's."""

    spec = OpenAISpec()

    def decode_request(self, request: Any) -> Any:
        # LitServe's ToolChoice is a str enum; its value is what the client sent.
        choice = getattr(request.tool_choice, "value", request.tool_choice)
        return {"last": request.messages[-1].content, "choice": choice}

    def predict(self, x: dict[str, Any]) -> Any:
        yield f"{x['last']} ({x['choice']})"


class SpecEmbedAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(spec=OpenAIEmbeddingSpec())

    def predict(self, inputs: Any) -> Any:
        texts = inputs if isinstance(inputs, list) else [inputs]
        return [[float(len(t))] for t in texts]


class OddSpec:
    """A spec object of no kind zeroserve serves."""


class OddSpecAPI(EchoAPI):
    spec = OddSpec()


class TracedBatchAPI(BatchAPI):
    """Opens a span of its own inside predict, as a model author would."""

    batch_timeout = 0.3

    def predict(self, xs: list[Any]) -> list[dict[str, Any]]:
        from opentelemetry import trace

        with trace.get_tracer("tests.apis").start_as_current_span("model.forward") as span:
            span.set_attribute("model.inputs", len(xs))
            return super().predict(xs)
