"""Who may call the frontend: zeroserve's API key, and LitServe's.

Two keys, each with its own rules, because each has clients that rely on
them:

* zeroserve's (``--api-key``, ``ZEROSERVE_API_KEY``): OpenAI's way
  (``Authorization: Bearer``), LitServe's header (``X-API-Key``) or a
  browser's (HTTP Basic, the key as password); every path but the health
  check, so that probes need no secret. An API's ``authorize()`` runs after
  it, in the worker.
* LitServe's (``LIT_SERVER_API_KEY``), exactly as LitServe checks it:
  ``X-API-Key`` only, on every path, ``/`` and the health check included,
  except an API's routes where that API defines ``authorize()``, which then
  decides alone.

Kubernetes' probes (``/livez``, ``/readyz``, ``/startupz``) are under neither key: the
kubelet sends no credentials, and they tell nothing but ready or not to a caller without them.

A refusal is (status, body bytes, headers); None lets the request through.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Mapping

#: (status, JSON body, headers) of a request that is refused.
Refusal = tuple[int, bytes, dict[str, str]]

#: The answer to a missing or wrong zeroserve key, in OpenAI's error shape.
API_KEY_ERROR = {
    "message": "missing or wrong API key; send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
    "type": "invalid_request_error",
    "param": None,
    "code": "invalid_api_key",
}
UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
#: A browser asks for the key (as a password) when it meets this.
BROWSER_UNAUTHORIZED = {"WWW-Authenticate": 'Basic realm="zeroserve", charset="UTF-8"'}

#: LitServe's (FastAPI's ``APIKeyHeader``) answers, byte for byte.
LIT_MISSING: Refusal = (401, b'{"detail":"Not authenticated"}', {"WWW-Authenticate": "APIKey"})
LIT_WRONG: Refusal = (
    401,
    b'{"detail":"Invalid API Key. Check that you are passing a correct '
    b"'X-API-Key' in your header.\"}",
    {},
)

#: The headers that carry the keys: never shown to user code that did not ask for them.
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})


def _same(given: str, key: str) -> bool:
    """Compared as bytes in constant time, so that a non-ASCII header is a mismatch."""
    return hmac.compare_digest(given.encode(errors="replace"), key.encode())


def api_key_ok(headers: Mapping[str, str], api_key: str) -> bool:
    """zeroserve's key, in any of the three places it may come."""
    given = headers.get("X-API-Key")
    if given is None:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            try:
                given = base64.b64decode(token.strip(), validate=True).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                return False
        elif scheme == "bearer":
            given = token
        else:
            return False
    return _same(given.strip(), api_key)


def zeroserve_refusal(
    headers: Mapping[str, str], api_key: str | None, challenge: dict[str, str] = UNAUTHORIZED
) -> Refusal | None:
    if not api_key or api_key_ok(headers, api_key):
        return None
    body = {"error": API_KEY_ERROR, "detail": API_KEY_ERROR}
    return 401, json.dumps(body).encode(), challenge


def litserve_refusal(headers: Mapping[str, str], lit_api_key: str | None) -> Refusal | None:
    if not lit_api_key:
        return None
    given = headers.get("X-API-Key")
    if not given:
        return LIT_MISSING
    return None if _same(given, lit_api_key) else LIT_WRONG


def refusal(
    headers: Mapping[str, str],
    api_key: str | None,
    lit_api_key: str | None,
    challenge: dict[str, str] = UNAUTHORIZED,
) -> Refusal | None:
    """Both keys' verdict on a request to one of the frontend's own endpoints."""
    return zeroserve_refusal(headers, api_key, challenge) or litserve_refusal(headers, lit_api_key)
