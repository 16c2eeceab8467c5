"""The errors the frontend makes itself, in the shapes its clients expect.

Every error it makes is JSON ``{"detail": "..."}``, as FastAPI (and so LitServe) writes it; an
error that ends a stream already begun is written in the stream's own format.
"""

from __future__ import annotations

import json
from typing import Any

import tornado.web

from zeroserve.common import protocol as p


def error_body(error: Any) -> dict[str, Any]:
    """An error as FastAPI, and so LitServe, writes it."""
    return {"detail": error}


def error_json(error: Any) -> bytes:
    """``error_body`` as the bytes of an answer."""
    return json.dumps(error_body(error), separators=(",", ":")).encode()


#: LitServe's MaxSizeMiddleware's words for a body over the limit, and its whole answer.
PAYLOAD_TOO_LARGE = "Payload too large"
TOO_LARGE = error_json(PAYLOAD_TOO_LARGE)


class JSONErrorMixin(tornado.web.RequestHandler):
    request_id: str | None = None

    def write_json_error(
        self, status: int, error: Any, headers: dict[str, str] | None = None
    ) -> None:
        self.write_json(status, error_json(error), headers)

    def write_json(
        self, status: int, body: bytes | str, headers: dict[str, str] | None = None
    ) -> None:
        self.clear()
        self.set_status(status)
        if self.request_id:
            self.set_header("X-Request-Id", self.request_id)
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json")
        self.finish(body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.write_json_error(status_code, message)


def stream_error(content_type: str, meta: p.AnswerMeta) -> bytes:
    """An error that ends a stream already begun and brings no last words of its own, in the
    stream's own format.

    Here because the frontend ends streams itself (a lost broker: 502, the deadline: 504);
    a worker's error in a stream is framed by its spec (worker/openai_spec.py) and written
    as it comes.
    """
    status, error = meta.get("status", 502), meta.get("error", "error")
    if content_type.startswith("text/event-stream"):
        # LitServe's shape for an error in a begun OpenAI stream (OpenAI's error object).
        event = {
            "error": {"message": error, "type": "internal", "param": None, "code": "internal_error"}
        }
        return b"data: " + json.dumps(event).encode() + b"\n\n"
    return json.dumps({"error": error, "status": status}).encode() + b"\n"
