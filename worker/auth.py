"""An API's ``authorize()``, enforced in the worker before anything else of the request runs.

LitServe runs ``authorize`` as a FastAPI dependency of each API's route, so
authors write ``authorize(self, auth: HTTPAuthorizationCredentials =
Depends(HTTPBearer()))``. The frontend knows no model, so the check runs
here, in the process that holds the API: the frontend forwards the
request's headers (credentials included) to APIs that define it, and the
worker answers what ``authorize`` decides before ``decode_request``.

An ``authorize`` written with FastAPI's dependencies is run by FastAPI
itself (imported only because the author's own code did): a one-route app
with ``Depends(api.authorize)``, called in-process with the request's
headers, so the statuses, bodies and ``WWW-Authenticate`` headers are
FastAPI's. Any other ``authorize`` is called with zeroserve's ``Request``
(or with nothing, when it takes no argument); raising an HTTP error refuses.
"""

from __future__ import annotations

import inspect
import json
import logging
from typing import Any

from zeroserve.common import protocol as p
from zeroserve.common.errors import INTERNAL_ERROR, http_status_of
from zeroserve.worker.api import Request, Response
from zeroserve.worker.framing import response_answer

log = logging.getLogger(__name__)

#: What the FastAPI route answers when every dependency passed.
_PASSED = 299
JSON = "application/json"


def has_authorize(api: Any) -> bool:
    return callable(getattr(api, "authorize", None))


def _uses_fastapi(method: Any) -> bool:
    """True when a parameter's annotation or default comes from FastAPI or Starlette."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    for parameter in parameters:
        for thing in (parameter.default, parameter.annotation):
            if thing is inspect.Parameter.empty:
                continue
            module = getattr(thing, "__module__", None) or type(thing).__module__
            if module.split(".")[0] in ("fastapi", "starlette"):
                return True
    return False


class Authorizer:
    """Runs one API's ``authorize`` for each request; ``check`` gives None when it passes,
    else the answer that ends the request."""

    def __init__(self, api: Any) -> None:
        self.method = api.authorize
        self.name = type(api).__name__
        self._app: Any = _fastapi_app(self.method) if _uses_fastapi(self.method) else None
        try:
            self._takes_request = bool(inspect.signature(self.method).parameters)
        except (TypeError, ValueError):
            self._takes_request = False

    async def check(self, meta: p.RequestMeta, body: bytes) -> list[p.Answer] | None:
        if self._app is not None:
            return await self._check_with_fastapi(meta, body)
        try:
            result = self.method(request_of(meta, body)) if self._takes_request else self.method()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            return [self._refusal(exc, meta)]
        return None

    def _refusal(self, exc: Exception, meta: p.RequestMeta) -> p.Answer:
        status = http_status_of(exc)
        if status is None:
            log.error(
                "%s.authorize raised (request_id=%s)",
                self.name,
                meta.get("request_id") or "-",
                exc_info=exc,
            )
            return p.error_answer(500, INTERNAL_ERROR)
        detail = getattr(exc, "detail", None) or str(exc)
        headers = getattr(exc, "headers", None)
        content = json.dumps({"detail": detail}, separators=(",", ":"))
        return response_answer(
            Response(content, status, headers if isinstance(headers, dict) else None, JSON)
        )

    async def _check_with_fastapi(self, meta: p.RequestMeta, body: bytes) -> list[p.Answer] | None:
        sent: dict[str, Any] = {"status": 500, "headers": [], "body": b""}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
                sent["headers"] = message.get("headers") or []
            elif message["type"] == "http.response.body":
                sent["body"] += message.get("body", b"")

        try:
            await self._app(asgi_scope(meta), receive, send)
        except Exception as exc:
            # Starlette has already answered 500; the traceback belongs in the log.
            log.error(
                "%s.authorize raised (request_id=%s)",
                self.name,
                meta.get("request_id") or "-",
                exc_info=exc,
            )
        if sent["status"] == _PASSED:
            return None
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in sent["headers"]}
        return [response_answer(Response(sent["body"], sent["status"], headers))]


def request_of(meta: p.RequestMeta, body: bytes) -> Request:
    headers = meta.get("headers")
    return Request(
        method=str(meta.get("method", "POST")),
        path=str(meta.get("path", "/")),
        headers=headers if isinstance(headers, dict) else {},
        query=str(meta.get("query", "")),
        body=body,
    )


def asgi_scope(meta: p.RequestMeta) -> dict[str, Any]:
    headers = meta.get("headers")
    pairs = [
        (str(k).encode("latin-1", "replace"), str(v).encode("latin-1", "replace"))
        for k, v in (headers.items() if isinstance(headers, dict) else ())
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": str(meta.get("method", "POST")),
        "scheme": "http",
        "path": str(meta.get("path", "/")),
        "raw_path": str(meta.get("path", "/")).encode(),
        "query_string": str(meta.get("query", "")).encode("latin-1", "replace"),
        "root_path": "",
        "headers": pairs,
        "client": None,
        "server": None,
    }


def _fastapi_app(authorize: Any) -> Any:
    """A FastAPI app whose every path runs `authorize` as LitServe's routes do, then answers
    ``_PASSED``."""
    from fastapi import Depends, FastAPI
    from fastapi import Response as FastAPIResponse

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    async def passed() -> Any:
        return FastAPIResponse(status_code=_PASSED)

    app.add_api_route(
        "/{path:path}",
        passed,
        response_model=None,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
        dependencies=[Depends(authorize)],
    )
    return app
