"""Running the user's code on one batch, in LitServe's order.

decode_request per request, then batch, predict, unbatch, and
encode_response per output; for a stream, predict and encode_response are
generators and every piece is sent as it comes. Methods that name a
``context`` parameter get a per-request dict (a list of them where a whole
batch is handled at once), as in LitServe.

The stages are written once, as coroutines: the async loop awaits them
(``serve``), the sync batching and continuous loops drive them to their end
at once (``run``); ``bridge.py`` is how. Either way the pipeline runs in the
worker's serving thread, never beside the heartbeats. Every failure becomes
an answer for the requests it touched; nothing here raises but
``CancelledError``, which the async loop gives.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeroserve.common import protocol as p
from zeroserve.common.errors import INTERNAL_ERROR, http_status_of
from zeroserve.common.tracing import NO_SPAN, Tracing
from zeroserve.worker.api import STREAM_END
from zeroserve.worker.auth import Authorizer, has_authorize
from zeroserve.worker.bodies import parse_body, request_model_of, validate
from zeroserve.worker.bridge import Bridge, drive
from zeroserve.worker.framing import Framer
from zeroserve.worker.hooks import Hooks
from zeroserve.worker.job import Job, RequestError
from zeroserve.worker.models import ModelCache, UnknownModel

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 300

#: Sends messages for a job at once (a streamed piece), from the batching thread.
Emit = Callable[["Job", list[p.Answer]], None]
#: Each job of a batch with the answers it ended with.
Finished = list[tuple["Job", list[p.Answer]]]


class _BatchMismatch(Exception):
    pass


@dataclass(slots=True)
class _Live:
    """A request on its way through the stages."""

    job: Job
    framer: Any
    context: dict[str, Any]
    value: Any = None
    done: bool = False


def takes_context(method: Any) -> bool:
    try:
        return "context" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


class Pipeline:
    """Calls the user's methods; one instance per worker process."""

    def __init__(
        self,
        api: Any,
        *,
        max_batch_size: int,
        stream: bool,
        hooks: Hooks | None = None,
        spec: Any = None,
        emit: Emit | None = None,
        concurrent: bool = False,
        tracing: Tracing | None = None,
        expose_errors: bool = False,
        max_models: int = 0,
    ) -> None:
        self.api = api
        #: A 500 says what was raised; otherwise only LitServe's "Internal server error".
        self.expose_errors = expose_errors
        self.tracing = tracing
        #: Awaits what user code returns as the loop in use needs (the async loop: concurrent).
        self.bridge = Bridge(concurrent)
        self.batched = max_batch_size > 1
        self.stream = stream
        self.hooks = hooks or Hooks(api)
        self.spec = spec
        self.emit = emit or (lambda job, outs: None)
        self.name = type(api).__name__
        self._context_aware = {
            name: takes_context(getattr(api, name))
            for name in ("decode_request", "batch", "predict", "unbatch", "encode_response")
            if hasattr(api, name)
        }
        #: The pydantic model decode_request is annotated with, which validates each body.
        self.request_model = request_model_of(api) if spec is None else None
        #: The API's ``authorize``, run before anything else of each request.
        self.authorizer = Authorizer(api) if has_authorize(api) else None
        #: The models it holds, when its API serves many (``load_model``).
        self.models = (
            ModelCache(
                api.load_model,
                getattr(api, "unload_model", None),
                max_models,
                concurrent=concurrent,
            )
            if max_models > 0
            else None
        )

    @property
    def wants_headers(self) -> bool:
        """Some stage takes ``context``, or the API authorizes: the frontend then forwards
        headers (credentials included, for ``authorize``) and query."""
        return self.authorizer is not None or any(self._context_aware.values())

    # -- spans ------------------------------------------------------------------------

    def waited(self, job: Job) -> None:
        """The job's wait for its turn ends now (a span from its arrival, when traced)."""
        if job.span is not None and self.tracing is not None:
            self.tracing.record(job.span, "worker.queue", job.span.start_time)

    def stage(self, job: Job, name: str) -> Any:
        """A span around one job's stage of user code, when the job is traced."""
        if job.span is None or self.tracing is None:
            return NO_SPAN
        return self.tracing.stage(job.span, name)

    def _batch_stage(self, live: list[_Live]) -> Any:
        """One predict span for the batch, under its first traced request, linked to the others,
        with the batch size."""
        spans = [item.job.span for item in live if item.job.span is not None]
        if not spans or self.tracing is None:
            return NO_SPAN
        return self.tracing.stage(
            spans[0], "predict", links=spans[1:], attributes={"zeroserve.batch_size": len(live)}
        )

    # -- calling user code -----------------------------------------------------------

    def _invoke(self, method: str, value: Any, context: Any) -> Any:
        func = getattr(self.api, method)
        return func(value, context=context) if self._context_aware[method] else func(value)

    async def call(self, method: str, value: Any, context: Any) -> Any:
        """Call one stage of the user's API with its context, if it takes one."""
        result = self._invoke(method, value, context)
        # What async methods return: coroutines, futures (inspect.isawaitable is slower).
        if hasattr(type(result), "__await__"):
            result = await self.bridge.settle(result)
        return result

    async def invoke(self, func: Callable[..., Any], *args: Any) -> Any:
        """Call one of the API's methods that takes no context (``load_model``)."""
        result = func(*args)
        if hasattr(type(result), "__await__"):
            result = await self.bridge.settle(result)
        return result

    def failure(self, stage: str, exc: BaseException, jobs: list[Job]) -> tuple[int, Any]:
        """The (status, error) an exception of user code answers; anything but an HTTP error
        is logged with its traceback."""
        if isinstance(exc, _BatchMismatch):
            return 500, str(exc)
        status = http_status_of(exc)
        if status is not None:
            detail = getattr(exc, "detail", None)
            if not isinstance(detail, (str, int, float, list, dict)) or detail in ("", None):
                detail = str(exc) or "error"
            return status, detail
        ids = ", ".join(str(job.meta.get("request_id") or "-") for job in jobs)
        log.error("%s.%s raised (request_id=%s)", self.name, stage, ids, exc_info=exc)
        if not self.expose_errors:
            return 500, INTERNAL_ERROR
        return 500, f"{stage} failed: {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]

    # -- a batch ----------------------------------------------------------------------------

    def run(self, jobs: list[Job]) -> Finished:
        """Answer every job at once, in the calling thread (a sync API's loops)."""
        return drive(self.serve(jobs))

    async def serve(self, jobs: list[Job]) -> Finished:
        """Answer every job; whole answers are returned, stream messages emitted as they come."""
        finished: Finished = []
        if self.tracing is not None:
            for job in jobs:
                self.waited(job)
        try:
            live = await self._decode(jobs, finished)
            if live and self.models is None:
                await self._run_live(live, finished)
            elif live:
                groups: dict[str, list[_Live]] = {}
                for item in live:
                    groups.setdefault(item.context["model_id"], []).append(item)
                for model_id, group in groups.items():
                    await self._run_model(model_id, group, finished)
        finally:
            self.hooks.flush_logs()
        return finished

    async def _run_live(self, live: list[_Live], finished: Finished) -> None:
        if self.stream:
            with self._batch_stage(live):
                await self._run_stream(live)
        else:
            await self._run_whole(live, finished)

    async def _run_model(self, model_id: str, live: list[_Live], finished: Finished) -> None:
        """Run requests of one model (a batch never mixes models), loading it first if need be;
        the model reaches every stage that takes ``context`` as ``context["model"]``."""
        assert self.models is not None
        try:
            model = await self.models.acquire(model_id, self.invoke)
        except UnknownModel as exc:
            finished.extend((item.job, item.framer.error(404, str(exc))) for item in live)
            return
        except Exception as exc:
            failure = self.failure("load_model", exc, [item.job for item in live])
            finished.extend((item.job, item.framer.error(*failure)) for item in live)
            return
        try:
            for item in live:
                item.context["model"] = model
            await self._run_live(live, finished)
        finally:
            await self.models.release(model_id, self.invoke)

    def model_id(self, job: Job, context: Any) -> str:
        """The model a request names: its X-Model-Id header (the broker routes on it), else
        on the OpenAI routes its body's ``model``."""
        named = job.meta.get("model")
        if not named and self.spec is not None and isinstance(context, dict):
            named = context.get("model")
        if not isinstance(named, str) or not named:
            where = " or the body's 'model'" if self.spec is not None else ""
            raise RequestError(400, f"name a model with the X-Model-Id header{where}")
        if len(named) > p.MAX_MODEL_ID:
            raise RequestError(400, f"a model id is at most {p.MAX_MODEL_ID} characters")
        return named

    def refusal(self, job: Job) -> list[p.Answer] | None:
        """The spec's answer to a request it refuses as it arrives, before it waits for a
        batch (None: it is served as usual). An API with authorize() decides first, in its
        batch: a client it refuses never learns more."""
        if self.spec is None or self.authorizer is not None:
            return None
        return self.spec.refusal(job)

    def open(self, job: Job) -> tuple[Any, dict[str, Any], Any]:
        """The request as decode_request receives it, its context and its framer; a request
        that cannot be read raises RequestError."""
        if job.opened is not None:  # read as it arrived (``refusal``)
            request, context, framer = job.opened
        elif self.spec is not None:
            request, context, framer = self.spec.decode(job)
        else:
            request, context, framer = parse_body(job), {}, Framer()
            if self.request_model is not None:
                request = validate(self.request_model, request)
        headers = job.meta.get("headers")
        if isinstance(headers, dict) and isinstance(context, dict):
            context["headers"] = headers
            context["query"] = str(job.meta.get("query", ""))
        if self.models is not None:
            context["model_id"] = self.model_id(job, context)
        return request, context, framer

    async def decode(self, job: Job) -> tuple[Any, dict[str, Any], Any] | list[p.Answer]:
        """decode_request for one job: (value, context, framer), or the answer that ends it
        (``authorize``'s refusal first of all)."""
        if self.authorizer is not None:
            refused = await self.bridge.settle(self.authorizer.check(job.meta, job.body))
            if refused is not None:
                return refused
        try:
            request, context, framer = self.open(job)
        except RequestError as exc:
            return exc.outs or [p.error_answer(exc.status, str(exc))]
        try:
            return await self.call("decode_request", request, context), context, framer
        except Exception as exc:
            return framer.error(*self.failure("decode_request", exc, [job]))

    async def _decode(self, jobs: list[Job], finished: Finished) -> list[_Live]:
        live = []
        self.hooks.fire("on_before_decode_request")
        for job in jobs:
            with self.stage(job, "decode_request"):
                decoded = await self.decode(job)
            if isinstance(decoded, list):
                finished.append((job, decoded))
                continue
            value, context, framer = decoded
            live.append(_Live(job, framer, context, value))
        self.hooks.fire("on_after_decode_request")
        return live

    async def _predict(self, live: list[_Live]) -> Any:
        if not self.batched:
            return await self.call("predict", live[0].value, live[0].context)
        contexts = [item.context for item in live]
        batched = await self.call("batch", [item.value for item in live], contexts)
        return await self.call("predict", batched, contexts)

    async def _run_whole(self, live: list[_Live], finished: Finished) -> None:
        self.hooks.fire("on_before_predict")
        try:
            with self._batch_stage(live):
                output = await self._predict(live)
                if self.batched:
                    outputs = list(await self.call("unbatch", output, [i.context for i in live]))
                    self._check_count(len(outputs), len(live))
                else:
                    outputs = [output]
        except Exception as exc:
            failure = self.failure("predict", exc, [item.job for item in live])
            finished.extend((item.job, item.framer.error(*failure)) for item in live)
            return
        self.hooks.fire("on_after_predict")
        self.hooks.fire("on_before_encode_response")
        for item, output in zip(live, outputs, strict=True):
            try:
                with self.stage(item.job, "encode_response"):
                    encoded = await self.call("encode_response", output, item.context)
                finished.append((item.job, item.framer.whole(encoded)))
            except Exception as exc:
                finished.append(
                    (
                        item.job,
                        item.framer.error(*self.failure("encode_response", exc, [item.job])),
                    )
                )
        self.hooks.fire("on_after_encode_response")

    def _check_count(self, outputs: int, inputs: int) -> None:
        if outputs != inputs:
            message = (
                f"{self.name}: predict/unbatch returned {outputs} output(s) "
                f"for a batch of {inputs} input(s)"
            )
            log.warning(message)
            raise _BatchMismatch(message)

    async def _run_stream(self, live: list[_Live]) -> None:
        """Send each piece as it comes; a request whose client left stops receiving at once."""
        stage = "predict"
        generator = pieces = None
        self.hooks.fire("on_before_predict")
        try:
            generator = await self._predict(live)
            if not (inspect.isgenerator(generator) or inspect.isasyncgen(generator)):
                raise TypeError("predict must yield its output when stream=True")
            contexts: Any = live[0].context
            steps = generator
            if self.batched:
                contexts = [item.context for item in live]
                steps = await self.call("unbatch", generator, contexts)
            self.hooks.fire("on_before_encode_response")
            stage = "encode_response"
            pieces = await self.call("encode_response", steps, contexts)
            async for step in self.bridge.iterate(pieces):
                per_request = list(step) if self.batched else [step]
                self._check_count(len(per_request), len(live))
                for item, piece in zip(live, per_request, strict=True):
                    self._deliver(item, piece)
                if all(item.done for item in live):
                    break
        except Exception as exc:
            failure = self.failure(self._stage_of(exc, stage), exc, [item.job for item in live])
            for item in live:
                if not item.done:
                    item.done = True
                    self.emit(item.job, item.framer.error(*failure))
            return
        finally:
            await self.bridge.close(self.name, pieces, generator)
        self.hooks.fire("on_after_predict")
        self.hooks.fire("on_after_encode_response")
        for item in live:
            if not item.done:
                item.done = True
                self.emit(item.job, item.framer.end())

    def _stage_of(self, exc: BaseException, stage: str) -> str:
        """predict, when the error rose in its generator while encode_response pulled from it."""
        predict = getattr(self.api.predict, "__func__", self.api.predict)
        code = getattr(predict, "__code__", None)
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code is code:
                return "predict"
            tb = tb.tb_next
        return stage

    def _deliver(self, item: _Live, piece: Any) -> None:
        if item.done:
            return
        if item.job.cancelled:
            item.done = True
            self.emit(item.job, [p.error_answer(499, "cancelled")])
        elif piece is STREAM_END:
            item.done = True
            self.emit(item.job, item.framer.end())
        else:
            try:
                outs = item.framer.piece(piece)
            except Exception as exc:
                item.done = True
                outs = item.framer.error(*self.failure("encode_response", exc, [item.job]))
            self.emit(item.job, outs)
