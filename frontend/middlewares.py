"""LitServer's served middlewares (CORS, GZip) applied to every answer of the frontend: the
forwarded ones (``serve.ServeDelegate``) and the frontend's own endpoints (``Transform``)."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import tornado.httputil
import tornado.web

from zeroserve.frontend.config import FrontendConfig

PLAIN_TEXT = "text/plain; charset=utf-8"


def preflight(
    config: FrontendConfig, method: str, headers: Mapping[str, str]
) -> tuple[int, dict[str, str], bytes] | None:
    """CORS's answer to a preflight request, which no route or key check sees, as under
    Starlette; None for any other request."""
    cors = config.cors
    if cors is None or not cors.is_preflight(method, headers):
        return None
    status, answer, body = cors.preflight(headers)
    answer["Content-Type"] = PLAIN_TEXT
    return status, answer, body


def shape(
    config: FrontendConfig,
    request_headers: Mapping[str, str],
    status: int,
    answer: MutableMapping[str, str],
    body: bytes | None,
) -> bytes | None:
    """The answer's headers as CORS and GZip set them, and its body, compressed when it is
    whole (``body`` given) and GZip applies. A stream (``body`` None) is not compressed."""
    if config.cors is not None:
        config.cors.add_headers(request_headers.get("Origin"), answer)
    if body is not None and config.gzip is not None:
        body = config.gzip.apply(request_headers.get("Accept-Encoding", ""), status, answer, body)
    return body


class Transform(tornado.web.OutputTransform):
    """``shape`` for the Tornado handlers of the frontend's own endpoints."""

    def __init__(self, config: FrontendConfig, request: tornado.httputil.HTTPServerRequest):
        self.config = config
        self.request = request

    def transform_first_chunk(
        self,
        status_code: int,
        headers: tornado.httputil.HTTPHeaders,
        chunk: bytes,
        finishing: bool,
    ) -> tuple[int, tornado.httputil.HTTPHeaders, bytes]:
        body = shape(
            self.config, self.request.headers, status_code, headers, chunk if finishing else None
        )
        return status_code, headers, chunk if body is None else body

    def transform_chunk(self, chunk: bytes, finishing: bool) -> bytes:
        return chunk


def transforms(config: FrontendConfig) -> list[Any]:
    """The Tornado application's output transforms (none when neither is configured)."""
    if config.cors is None and config.gzip is None:
        return []
    return [lambda request: Transform(config, request)]
