"""A request's body as LitServe hands it to ``decode_request``, and its validation against the
pydantic model ``decode_request`` is annotated with (pydantic itself is never imported here).

Forms are parsed by Tornado's ``parse_body_arguments`` (urlencoded and multipart, the parser
the frontend's HTTP server is built on), imported only when a form arrives: one function,
``form_fields``, is all the worker knows of it.
"""

from __future__ import annotations

import inspect
import json
import typing
from typing import Any

from zeroserve.common import protocol as p
from zeroserve.worker.api import Upload
from zeroserve.worker.job import Job, RequestError

JSON_TYPES = ("application/json", "")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
#: Most validation errors an answer lists.
MAX_VALIDATION_ERRORS = 20


def parse_body(job: Job) -> Any:
    """The request as LitServe hands it to decode_request.

    JSON (also when no content type is given) becomes Python values, a form a
    dict of fields (files as ``Upload`` objects, with LitServe's ``filename``,
    ``content_type``, ``file``, ``read()`` and ``size``), text a str; any
    other content type arrives as bytes.
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
        return form_fields(str(job.meta.get("ct")), body)
    if content_type.startswith("text/"):
        try:
            return body.decode()
        except UnicodeDecodeError:
            raise RequestError(400, "the text body is not valid UTF-8") from None
    return body


def form_fields(content_type: str, body: bytes) -> dict[str, Any]:
    """A form's fields, the last of each name: text as str, files as ``Upload``."""
    from tornado.httputil import HTTPInputError, parse_body_arguments

    arguments: dict[str, list[bytes]] = {}
    files: dict[str, list[Any]] = {}
    try:
        parse_body_arguments(content_type, body, arguments, files)
    except HTTPInputError as exc:
        raise RequestError(400, f"malformed form body: {exc}") from None
    form: dict[str, Any] = {k: v[-1].decode(errors="replace") for k, v in arguments.items()}
    for name, uploaded in files.items():
        f = uploaded[-1]
        form[name] = Upload(f.filename, f.content_type, f.body)
    return form


def request_model_of(api: Any) -> Any:
    """The pydantic model (or any class with ``model_validate``) that ``decode_request``'s
    first parameter is annotated with, as LitServe reads it; None without one."""
    decode = getattr(api, "decode_request", None)
    if decode is None:
        return None
    try:
        hints = typing.get_type_hints(decode)
        first = next(iter(inspect.signature(decode).parameters))
    except Exception:  # unresolvable annotations, or none: nothing to validate with
        return None
    model = hints.get(first)
    return model if inspect.isclass(model) and hasattr(model, "model_validate") else None


def validate(model: Any, request: Any) -> Any:
    """The body as an instance of `model`, or a 422 with pydantic's list of errors, each
    located in the body as FastAPI locates them."""
    # FastAPI validates a body with attributes allowed, which also names a non-object's error.
    options = {"from_attributes": True} if hasattr(model, "__pydantic_validator__") else {}
    try:
        return model.model_validate(request, **options)
    except Exception as exc:
        to_json = getattr(exc, "json", None)
        if not callable(to_json):
            raise RequestError(422, f"the body does not fit {model.__name__}: {exc}") from None
        errors = json.loads(to_json(include_url=False))
        for error in errors:
            error["loc"] = ["body", *error.get("loc", [])]
        raise RequestError(
            422, "invalid body", [p.error_answer(422, errors[:MAX_VALIDATION_ERRORS])]
        ) from None
