"""Turning what ``encode_response`` produced into the protocol messages sent for a request.

A framer is made per request. Whole answers become one REPLY; streamed
pieces become CHUNKs and an END; failures an ERROR. A spec (such as the
OpenAI one) brings its own framer; this module holds the plain one.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from zeroserve.common import protocol as p
from zeroserve.common.errors import HTTPException
from zeroserve.worker.api import Response

log = logging.getLogger(__name__)

#: One encoder for every answer: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def to_json(value: Any) -> bytes:
    """JSON bytes, or an HTTPException(500) naming what could not be encoded."""
    if hasattr(value, "model_dump"):  # a pydantic model, as LitServe allows
        value = value.model_dump(exclude_none=True)
    try:
        return _ENCODER.encode(value).encode()
    except (TypeError, ValueError) as exc:
        raise HTTPException(
            500, f"encode_response returned a value that is not JSON: {exc}"
        ) from None


#: ``json.dumps``'s own separators, which LitServe writes streamed dicts with.
_PIECE_ENCODER = json.JSONEncoder()


def piece_json(value: Any) -> bytes:
    """A streamed piece as LitServe writes it: a dict by ``json.dumps``, a pydantic model by
    ``model_dump_json()``; anything else as whole answers are."""
    if isinstance(value, dict):
        try:
            return _PIECE_ENCODER.encode(value).encode()
        except (TypeError, ValueError):
            return to_json(value)  # its error names what could not be encoded
    dump = getattr(value, "model_dump_json", None)
    if callable(dump):
        return str(dump()).encode()
    return to_json(value)


class Framer:
    """Plain framing: JSON (or bytes, or a Response) whole; newline-delimited pieces streamed."""

    def __init__(self) -> None:
        self.started = False

    def whole(self, encoded: Any) -> list[p.Answer]:
        if _is_response(encoded):
            return [response_answer(encoded)]
        if isinstance(encoded, (bytes, bytearray, memoryview)):
            return [(p.REPLY, {"status": 200, "ct": "application/octet-stream"}, bytes(encoded))]
        return [(p.REPLY, {"status": 200, "ct": "application/json"}, to_json(encoded))]

    def piece(self, encoded: Any) -> list[p.Answer]:
        """One streamed piece, written like LitServe does: dicts as JSON lines, text as it is."""
        if isinstance(encoded, (bytes, bytearray, memoryview)):
            data, content_type = bytes(encoded), "application/octet-stream"
        elif isinstance(encoded, str):
            data, content_type = encoded.encode(), "text/plain; charset=utf-8"
        else:
            data, content_type = piece_json(encoded) + b"\n", "application/x-ndjson"
        meta: p.AnswerMeta = {}
        if not self.started:
            self.started = True
            meta = {"status": 200, "ct": content_type}
        return [(p.CHUNK, meta, data)]

    def end(self) -> list[p.Answer]:
        meta: p.AnswerMeta = {}
        if not self.started:
            meta = {"status": 200, "ct": "text/plain; charset=utf-8"}
        return [(p.END, meta, b"")]

    def error(self, status: int, error: Any) -> list[p.Answer]:
        return [p.error_answer(status, error)]


def _is_response(value: Any) -> bool:
    """zeroserve's Response, or Starlette's (FastAPI's, LitServe's) by its shape."""
    return isinstance(value, Response) or (
        isinstance(getattr(value, "body", None), bytes)
        and isinstance(getattr(value, "status_code", None), int)
        and hasattr(value, "headers")
    )


def response_answer(response: Any) -> p.Answer:
    """A REPLY with a Response's status, headers, content type and body bytes."""
    headers: dict[str, str] = {}
    content_type = "application/octet-stream"
    for name, value in response.headers.items():
        key = str(name).lower()
        if key == "content-type":
            content_type = str(value)
        elif key != "content-length":
            headers[key] = str(value)
    meta: p.AnswerMeta = {"status": response.status_code, "ct": content_type}
    if headers:
        meta["headers"] = headers
    return (p.REPLY, meta, response.body)
