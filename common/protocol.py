"""The zeroserve wire protocol: every frame layout, and its encoding and decoding.

Every message is a ZeroMQ multipart message ``[signature, command, *args]``
(a ROUTER adds or strips the peer identity in front). The signature carries
the protocol version, so that a peer of another version gets a clear error
instead of a misread frame. The number of ``args`` is fixed per command and
per direction; the tables below are the whole protocol.

Metadata frames are msgpack maps decoded with size limits; bodies are raw
bytes passed through untouched. Nothing here ever unpickles.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from zeroserve.common.errors import ProtocolError, VersionMismatch

SIGNATURE = b"ZS01"
SIGNATURE_PREFIX = b"ZS"

READY = b"\x01"
HEARTBEAT = b"\x02"
REQUEST = b"\x03"
REPLY = b"\x04"
CHUNK = b"\x05"
END = b"\x06"
ERROR = b"\x07"
CANCEL = b"\x08"
DISCONNECT = b"\x09"
STATUS = b"\x0a"
ROUTES = b"\x0b"

COMMAND_NAMES: dict[bytes, str] = {
    READY: "READY",
    HEARTBEAT: "HEARTBEAT",
    REQUEST: "REQUEST",
    REPLY: "REPLY",
    CHUNK: "CHUNK",
    END: "END",
    ERROR: "ERROR",
    CANCEL: "CANCEL",
    DISCONNECT: "DISCONNECT",
    STATUS: "STATUS",
    ROUTES: "ROUTES",
}

#: Commands that end a request: each frees the worker slot that carried it.
TERMINAL = frozenset({REPLY, END, ERROR})
#: Commands that carry (part of) an answer from a worker to a frontend.
ANSWERS = frozenset({REPLY, CHUNK, END, ERROR})

# Frames after [signature, command], per direction.
#: frontend or status client -> broker: HEARTBEAT [meta], REQUEST [rid, meta, body], ...
FROM_FRONTEND: dict[bytes, int] = {HEARTBEAT: 1, REQUEST: 3, CANCEL: 1, STATUS: 1, DISCONNECT: 0}
#: broker -> frontend: answers are [rid, meta, body]; STATUS is [rid, meta].
TO_FRONTEND: dict[bytes, int] = {
    HEARTBEAT: 1,
    ROUTES: 1,
    REPLY: 3,
    CHUNK: 3,
    END: 3,
    ERROR: 3,
    STATUS: 2,
    DISCONNECT: 1,
}
#: worker -> broker: answers are [client, rid, meta, body]. A worker process has two
#: DEALERs: its data socket (READY, answers, its drain and goodbye; its identity is the
#: worker's) and its control socket, whose HEARTBEAT and DISCONNECT meta name the worker as
#: ``{"worker": <data socket identity>}``. Broker heartbeats go to the control socket.
FROM_WORKER: dict[bytes, int] = {
    READY: 1,
    HEARTBEAT: 1,
    REPLY: 4,
    CHUNK: 4,
    END: 4,
    ERROR: 4,
    DISCONNECT: 1,
}
#: broker -> worker: REQUEST is [client, rid, meta, body], CANCEL is [client, rid].
TO_WORKER: dict[bytes, int] = {HEARTBEAT: 1, REQUEST: 4, CANCEL: 2, DISCONNECT: 1}

MAX_META_BYTES = 64 * 1024
MAX_ID_BYTES = 255
MAX_ITEMS = 4096
#: Budget of a request whose sender gave none (and the frontend's default timeout).
DEFAULT_TIMEOUT_S = 30.0
#: Heartbeats: every peer's default interval, and how many may be missed before death.
HEARTBEAT_INTERVAL_S = 1.0
HEARTBEAT_LIVENESS = 3

EMPTY_META = msgpack.packb({})


def command_name(command: bytes) -> str:
    return COMMAND_NAMES.get(command, f"0x{command.hex()}")


def _as_bytes(frame: Any) -> bytes:
    """Frames arrive as bytes or as zmq.Frame (``copy=False``); read both."""
    if isinstance(frame, bytes):
        return frame
    data = getattr(frame, "bytes", None)
    if isinstance(data, bytes):
        return data
    raise ProtocolError(f"frame of unexpected type {type(frame).__name__}")


def parse(frames: Sequence[Any], table: Mapping[bytes, int]) -> tuple[bytes, list[Any]]:
    """Check signature, command and frame count; return the command and its frames.

    The argument frames are returned as they came (bytes or zmq.Frame) so that
    bodies can be forwarded without a copy.
    """
    if len(frames) < 2:
        raise ProtocolError(f"message of {len(frames)} frame(s) is too short")
    signature = _as_bytes(frames[0])
    if signature != SIGNATURE:
        if signature.startswith(SIGNATURE_PREFIX) and len(signature) == len(SIGNATURE):
            raise VersionMismatch(
                f"protocol version mismatch: peer speaks {signature!r}, we speak {SIGNATURE!r}"
            )
        raise ProtocolError("bad signature frame")
    command = _as_bytes(frames[1])
    arity = table.get(command)
    if arity is None:
        raise ProtocolError(f"unexpected command {command_name(command)}")
    args = list(frames[2:])
    if len(args) != arity:
        raise ProtocolError(
            f"{command_name(command)} needs {arity} frame(s) after the command, got {len(args)}"
        )
    return command, args


def pack_meta(meta: Mapping[str, Any]) -> bytes:
    return msgpack.packb(meta, use_bin_type=True)


def unpack_meta(frame: Any) -> dict[str, Any]:
    """Decode a metadata frame: a msgpack map of at most MAX_META_BYTES."""
    data = _as_bytes(frame)
    if len(data) > MAX_META_BYTES:
        raise ProtocolError(f"metadata frame of {len(data)} bytes exceeds {MAX_META_BYTES}")
    try:
        # Limits on top of msgpack's own (which never exceed the frame's length).
        meta = msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_array_len=MAX_ITEMS, max_map_len=MAX_ITEMS
        )
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise ProtocolError(f"undecodable metadata: {type(exc).__name__}") from None
    if not isinstance(meta, dict):
        raise ProtocolError("metadata is not a map")
    return meta


def identity(frame: Any) -> bytes:
    """Read a request id or client route, refusing empty or oversized ones."""
    data = _as_bytes(frame)
    if not data or len(data) > MAX_ID_BYTES:
        raise ProtocolError(f"identity frame of {len(data)} bytes")
    return data


def message(command: bytes, *args: Any) -> list[Any]:
    return [SIGNATURE, command, *args]


def heartbeat(meta: Mapping[str, Any] | None = None) -> list[Any]:
    return [SIGNATURE, HEARTBEAT, pack_meta(meta) if meta else EMPTY_META]


def disconnect(meta: bytes | Mapping[str, Any]) -> list[Any]:
    """DISCONNECT and what it means: a drain, its acknowledgement, a goodbye, or a refusal."""
    return [SIGNATURE, DISCONNECT, meta if isinstance(meta, bytes) else pack_meta(meta)]


def error_fields(status: int, error: Any, retry_after_s: float | None = None) -> dict[str, Any]:
    """The metadata of an ERROR: its status, what went wrong, and when to come back."""
    meta: dict[str, Any] = {"status": status, "error": error}
    if retry_after_s is not None:
        meta["retry_after"] = retry_after_s
    return meta


def error_meta(status: int, error: str, retry_after_s: float | None = None) -> bytes:
    return pack_meta(error_fields(status, error, retry_after_s))


def remaining_ms(deadline: float, now: float | None = None) -> int:
    """Turn a local monotonic deadline into the budget that travels on the wire."""
    return max(0, int((deadline - (time.monotonic() if now is None else now)) * 1000))


def deadline_from(
    meta: Mapping[str, Any], default_s: float = DEFAULT_TIMEOUT_S, now: float | None = None
) -> float:
    """Turn the budget in a request's metadata into a local monotonic deadline."""
    budget_ms = meta.get("timeout_ms")
    base = time.monotonic() if now is None else now
    if isinstance(budget_ms, int) and not isinstance(budget_ms, bool) and budget_ms >= 0:
        return base + budget_ms / 1000.0
    return base + default_s
