"""Running the user's code on one batch: decode, batch, predict, unbatch, encode.

Runs in the worker's single executor thread, never on the event loop, so
heartbeats go on while the model works. Every failure becomes an answer for
the requests it touched; nothing here raises.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from tornado.httputil import parse_body_arguments

from zeroserve.common.errors import http_status_of
from zeroserve.worker.api import Response

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
MAX_ERROR_CHARS = 300


@dataclass(slots=True)
class Job:
    """One request as a worker process holds it."""

    client: bytes
    rid: bytes
    meta: dict[str, Any]
    body: bytes
    deadline: float
    arrived: float
    generation: int
    cancelled: bool = False

    @property
    def key(self) -> tuple[bytes, bytes]:
        return (self.client, self.rid)


@dataclass(slots=True)
class Answer:
    """A whole answer, or an error when ``error`` is set."""

    status: int = 200
    content_type: str = "application/json"
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    error: Any = None


class RequestError(Exception):
    """The request itself is unusable (its body, its content type): the client's fault."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def failure(status: int, error: Any) -> Answer:
    return Answer(status=status, error=error)


class Pipeline:
    """Calls the user's methods in LitServe's order; one instance per worker process."""

    def __init__(self, api: Any, max_batch_size: int) -> None:
        self.api = api
        self.max_batch_size = max_batch_size
        self.name = type(api).__name__
        self._loop: asyncio.AbstractEventLoop | None = None

    def _call(self, method: str, *args: Any) -> Any:
        result = getattr(self.api, method)(*args)
        if inspect.isawaitable(result):
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            result = self._loop.run_until_complete(_await(result))
        return result

    def run_batch(self, jobs: list[Job]) -> list[Answer]:
        answers: list[Answer | None] = [None] * len(jobs)
        inputs: list[Any] = []
        positions: list[int] = []
        for i, job in enumerate(jobs):
            try:
                inputs.append(self._call("decode_request", parse_body(job)))
                positions.append(i)
            except RequestError as exc:
                answers[i] = failure(exc.status, str(exc))
            except Exception as exc:
                answers[i] = self._user_failure("decode_request", exc)
        if inputs:
            try:
                outputs = self._predict(inputs)
            except Exception as exc:
                failed = self._user_failure("predict", exc)
                outputs = None
                for i in positions:
                    answers[i] = failed
            if outputs is not None:
                for i, output in zip(positions, outputs, strict=True):
                    answers[i] = self._encode(output)
        return [a if a is not None else failure(500, "no answer was produced") for a in answers]

    def _predict(self, inputs: list[Any]) -> list[Any] | None:
        if self.max_batch_size == 1:
            return [self._call("predict", inputs[0])]
        batched = self._call("batch", inputs)
        outputs = list(self._call("unbatch", self._call("predict", batched)))
        if len(outputs) != len(inputs):
            message = (
                f"{self.name}: predict/unbatch returned {len(outputs)} output(s) "
                f"for a batch of {len(inputs)} input(s)"
            )
            log.warning(message)
            raise _BatchMismatch(message)
        return outputs

    def _encode(self, output: Any) -> Answer:
        try:
            encoded = self._call("encode_response", output)
        except Exception as exc:
            return self._user_failure("encode_response", exc)
        if isinstance(encoded, Response):
            body = encoded.body.encode() if isinstance(encoded.body, str) else encoded.body
            return Answer(encoded.status, encoded.content_type, body, dict(encoded.headers))
        if isinstance(encoded, (bytes, bytearray, memoryview)):
            return Answer(200, "application/octet-stream", bytes(encoded))
        try:
            body = json.dumps(encoded, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            log.warning(
                "%s.encode_response returned a value JSON cannot encode: %s", self.name, exc
            )
            return failure(500, f"encode_response returned a value that is not JSON: {exc}")
        return Answer(200, "application/json", body)

    def _user_failure(self, stage: str, exc: Exception) -> Answer:
        if isinstance(exc, _BatchMismatch):
            return failure(500, str(exc))
        status = http_status_of(exc)
        if status is not None:
            detail = getattr(exc, "detail", None)
            if not isinstance(detail, (str, int, float, list, dict)) or detail in ("", None):
                detail = str(exc) or "error"
            return failure(status, detail)
        log.error("%s.%s raised", self.name, stage, exc_info=exc)
        text = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        return failure(500, f"{stage} failed: {text}")


class _BatchMismatch(Exception):
    pass


async def _await(awaitable: Any) -> Any:
    return await awaitable


def parse_body(job: Job) -> Any:
    """The request as LitServe hands it to decode_request.

    JSON (also when no content type is given) becomes Python values, a form a
    dict of fields (files as tornado ``HTTPFile``), text a str; any other
    content type arrives as bytes.
    """
    content_type = str(job.meta.get("ct", "")).split(";", 1)[0].strip().lower()
    body = job.body
    if not body:
        if job.meta.get("method", "POST") in ("GET", "DELETE"):
            return None
        raise RequestError(400, "the request body is empty")
    if content_type in JSON_TYPES or content_type.endswith("+json"):
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"malformed JSON body: {exc}") from None
    if content_type in FORM_TYPES:
        arguments: dict[str, list[bytes]] = {}
        files: dict[str, list[Any]] = {}
        parse_body_arguments(str(job.meta.get("ct")), body, arguments, files)
        form: dict[str, Any] = {k: v[-1].decode(errors="replace") for k, v in arguments.items()}
        form.update({k: v[-1] for k, v in files.items()})
        return form
    if content_type.startswith("text/"):
        try:
            return body.decode()
        except UnicodeDecodeError:
            raise RequestError(400, "the text body is not valid UTF-8") from None
    return body
