"""Compression of whole answers as Starlette's ``GZipMiddleware`` does it, which LitServe
puts on every server without a streaming API (``minimum_size=1000``)."""

from __future__ import annotations

import gzip
from collections.abc import MutableMapping
from dataclasses import dataclass

#: Starlette's content types that are never compressed (``type/*`` covers a whole type).
EXCLUDED_CONTENT_TYPES = frozenset(
    {
        "application/grpc",
        "application/gzip",
        "application/x-gzip",
        "application/zip",
        "audio/*",
        "font/woff",
        "font/woff2",
        "image/avif",
        "image/gif",
        "image/jpeg",
        "image/png",
        "image/webp",
        "text/event-stream",
        "video/*",
    }
)


@dataclass(frozen=True)
class GzipPolicy:
    """``GZipMiddleware``'s ``minimum_size`` and ``compresslevel``."""

    minimum_size: int = 500
    compresslevel: int = 9

    def apply(
        self, accept_encoding: str, status: int, answer: MutableMapping[str, str], body: bytes
    ) -> bytes:
        """The body to send; ``answer``'s headers are changed to match it."""
        if "Content-Encoding" in answer or status == 206 or len(body) < self.minimum_size:
            return body
        media = answer.get("Content-Type", "").partition(";")[0].strip().lower()
        if {media, media.partition("/")[0] + "/*"} & EXCLUDED_CONTENT_TYPES:
            return body
        vary = answer.get("Vary")
        answer["Vary"] = f"{vary}, Accept-Encoding" if vary else "Accept-Encoding"
        if "gzip" not in accept_encoding:
            return body
        compressed = gzip.compress(body, self.compresslevel, mtime=0)
        answer["Content-Encoding"] = "gzip"
        answer["Content-Length"] = str(len(compressed))
        return compressed
