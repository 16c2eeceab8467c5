"""CORS as Starlette's ``CORSMiddleware`` answers it, so that a LitServer given that
middleware answers browsers here exactly as under LitServe (same headers, same preflight
texts and statuses)."""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field

#: Starlette's "*" for methods, and the headers a browser may always send.
ALL_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY")
SAFELISTED_HEADERS = frozenset({"Accept", "Accept-Language", "Content-Language", "Content-Type"})
PREFLIGHT_VARY = (
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers, "
    "Access-Control-Request-Private-Network"
)


@dataclass(frozen=True)
class CorsPolicy:
    """``CORSMiddleware``'s arguments; ``preflight`` and ``add_headers`` are its two answers."""

    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ("GET",)
    allow_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    allow_origin_regex: str | None = None
    expose_headers: tuple[str, ...] = ()
    max_age: int = 600
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if "*" in self.allow_methods:
            object.__setattr__(self, "allow_methods", ALL_METHODS)
        if self.allow_origin_regex is not None:
            object.__setattr__(self, "_regex", re.compile(self.allow_origin_regex))

    @property
    def all_origins(self) -> bool:
        return "*" in self.allow_origins

    def is_allowed_origin(self, origin: str) -> bool:
        if self.all_origins or origin in self.allow_origins:
            return True
        return self._regex is not None and self._regex.fullmatch(origin) is not None

    @staticmethod
    def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
        return (
            method == "OPTIONS"
            and headers.get("Origin") is not None
            and "Access-Control-Request-Method" in headers
        )

    def preflight(self, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        """The answer to a preflight request: 200 "OK", or 400 naming what is disallowed."""
        explicit_origin = not self.all_origins or self.allow_credentials
        answer = {"Vary": PREFLIGHT_VARY}
        if not explicit_origin:
            answer["Access-Control-Allow-Origin"] = "*"
        answer["Access-Control-Allow-Methods"] = ", ".join(self.allow_methods)
        answer["Access-Control-Max-Age"] = str(self.max_age)
        all_headers = "*" in self.allow_headers
        allowed = sorted(SAFELISTED_HEADERS | set(self.allow_headers))
        if not all_headers:
            answer["Access-Control-Allow-Headers"] = ", ".join(allowed)
        if self.allow_credentials:
            answer["Access-Control-Allow-Credentials"] = "true"
        failures = []
        origin = headers["Origin"]
        if self.is_allowed_origin(origin):
            if explicit_origin:
                answer["Access-Control-Allow-Origin"] = origin
        else:
            failures.append("origin")
        if headers["Access-Control-Request-Method"] not in self.allow_methods:
            failures.append("method")
        requested = headers.get("Access-Control-Request-Headers")
        if all_headers and requested is not None:
            answer["Access-Control-Allow-Headers"] = requested
        elif requested is not None:
            lowered = {h.lower() for h in allowed}
            if any(h.strip() not in lowered for h in requested.lower().split(",")):
                failures.append("headers")
        if headers.get("Access-Control-Request-Private-Network") is not None:
            failures.append("private-network")
        if failures:
            return 400, answer, ("Disallowed CORS " + ", ".join(failures)).encode()
        return 200, answer, b"OK"

    def add_headers(self, origin: str | None, answer: MutableMapping[str, str]) -> None:
        """The headers Starlette adds to every other answer (``answer`` is changed)."""
        if origin is not None:
            if self.all_origins:
                answer["Access-Control-Allow-Origin"] = "*"
            if self.allow_credentials:
                answer["Access-Control-Allow-Credentials"] = "true"
            if self.expose_headers:
                answer["Access-Control-Expose-Headers"] = ", ".join(self.expose_headers)
        if origin is not None and (
            (self.all_origins and self.allow_credentials)
            or (not self.all_origins and self.is_allowed_origin(origin))
        ):
            answer["Access-Control-Allow-Origin"] = origin
        vary = answer.get("Vary")
        answer["Vary"] = f"{vary}, Origin" if vary else "Origin"
