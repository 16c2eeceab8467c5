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

import re
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypedDict, cast

import msgpack

from zeroserve.common.errors import ProtocolError, VersionMismatch
from zeroserve.common.snapshot import Snapshot, parse_snapshot

SIGNATURE = b"ZS03"
SIGNATURE_PREFIX = b"ZS"

READY = b"\x01"
HEARTBEAT = b"\x02"
REQUEST = b"\x03"
REPLY = b"\x04"
CHUNK = b"\x05"
END = b"\x06"
ERROR = b"\x07"
CANCEL = b"\x08"
#: A goodbye: the sender is leaving (a worker, a frontend, a broker that stops).
DISCONNECT = b"\x09"
STATUS = b"\x0a"
ROUTES = b"\x0b"
#: Worker -> broker: give me no new work. Broker -> worker: acknowledged; everything sent
#: before it is on the wire already.
DRAIN = b"\x0c"
#: Broker -> peer: you may not join (a route taken, another protocol version); final.
REFUSED = b"\x0d"
#: Broker -> worker: this broker does not know you (it restarted): say READY again.
ANNOUNCE = b"\x0e"
#: Admin -> broker: set a service's traffic split between its versions (``cluster route``);
#: answered with the same command.
ROUTE = b"\x0f"
#: Admin -> broker: retire a version of a service (``cluster drain``), answered with the same
#: command; broker -> worker: finish what you hold, take nothing new, and exit.
RETIRE = b"\x10"
#: Launcher -> broker (worker port): what it runs, once a heartbeat; broker -> launcher: its
#: service's load, by which it autoscales.
LAUNCHER = b"\x11"

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
    DRAIN: "DRAIN",
    REFUSED: "REFUSED",
    ANNOUNCE: "ANNOUNCE",
    ROUTE: "ROUTE",
    RETIRE: "RETIRE",
    LAUNCHER: "LAUNCHER",
}

#: Commands that end a request: each frees the worker slot that carried it.
TERMINAL = frozenset({REPLY, END, ERROR})
#: Commands that carry (part of) an answer from a worker to a frontend.
ANSWERS = frozenset({REPLY, CHUNK, END, ERROR})

# Frames after [signature, command], per direction.
#: frontend or status client -> broker: HEARTBEAT [meta], REQUEST [rid, meta, body],
#: CANCEL [rid], STATUS [rid], DISCONNECT [meta]; an admin's ROUTE and RETIRE [rid, meta].
FROM_FRONTEND: dict[bytes, int] = {
    HEARTBEAT: 1,
    REQUEST: 3,
    CANCEL: 1,
    STATUS: 1,
    DISCONNECT: 1,
    ROUTE: 2,
    RETIRE: 2,
}
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
    REFUSED: 1,
    ROUTE: 2,
    RETIRE: 2,
}
#: worker (or launcher) -> broker, on its worker port: answers are [client, rid, meta, body].
#: A worker process has two DEALERs: its data socket (READY, answers, DRAIN and its goodbye;
#: named by the worker and its session with that broker, ``session_name``) and its control
#: socket, whose HEARTBEAT and DISCONNECT meta name the worker as
#: ``{"worker": <data socket identity>}``. Broker heartbeats go to the
#: control socket, which is bound to its worker by its first heartbeat. A worker launcher
#: says LAUNCHER [meta] once a heartbeat, and DISCONNECT [meta] when it stops.
FROM_WORKER: dict[bytes, int] = {
    READY: 1,
    HEARTBEAT: 1,
    REPLY: 4,
    CHUNK: 4,
    END: 4,
    ERROR: 4,
    DRAIN: 0,
    DISCONNECT: 1,
    LAUNCHER: 1,
}
#: broker -> worker: REQUEST is [client, rid, meta, hop, body]: the frontend's metadata
#: frame as it came, and the hop frame (``hop``) with the budget left and the attempt;
#: CANCEL is [client, rid].
TO_WORKER: dict[bytes, int] = {
    HEARTBEAT: 1,
    REQUEST: 5,
    CANCEL: 2,
    DRAIN: 0,
    REFUSED: 1,
    ANNOUNCE: 0,
    DISCONNECT: 1,
    RETIRE: 0,
}
#: broker -> launcher: LAUNCHER [meta] answers its LAUNCHER; REFUSED [meta] on the wrong port.
TO_LAUNCHER: dict[bytes, int] = {
    LAUNCHER: 1,
    REFUSED: 1,
}

MAX_META_BYTES = 64 * 1024
#: A status snapshot grows with the workers (about 250 bytes each): room for tens of
#: thousands, from a broker the asker chose to trust.
MAX_STATUS_BYTES = 16 * 1024 * 1024
MAX_ID_BYTES = 255
MAX_ITEMS = 4096
#: The longest model id a request may name (X-Model-Id).
MAX_MODEL_ID = 256
#: A version label (``cluster worker --version``): short, and safe in a header and a log.
VERSION_LABEL = re.compile(r"^[A-Za-z0-9_.+\-]{1,64}$")
#: The largest weight of one version in a traffic split.
MAX_WEIGHT = 1_000_000
#: The header naming a version: on every answer of a worker, and on a request that pins one.
VERSION_HEADER = "X-Model-Version"
#: Budget of a request whose sender gave none (and the frontend's default timeout).
DEFAULT_TIMEOUT_S = 30.0
#: Heartbeats: every peer's default interval, and how many may be missed before death.
HEARTBEAT_INTERVAL_S = 1.0
HEARTBEAT_LIVENESS = 3
#: The hop frame of a REQUEST to a worker: the budget left in ms, and the attempt (network
#: byte order, unsigned).
HOP = struct.Struct("!QI")
#: The most processes a launcher's LAUNCHER may name (a larger count is left out).
MAX_PROCESSES = 100_000

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


def unpack_meta(frame: Any, limit: int = MAX_META_BYTES, items: int = MAX_ITEMS) -> dict[str, Any]:
    """Decode a metadata frame: a msgpack map of at most `limit` bytes."""
    data = _as_bytes(frame)
    if len(data) > limit:
        raise ProtocolError(f"metadata frame of {len(data)} bytes exceeds {limit}")
    try:
        # Limits on top of msgpack's own (which never exceed the frame's length).
        meta = msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_array_len=items, max_map_len=items
        )
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise ProtocolError(f"undecodable metadata: {type(exc).__name__}") from None
    if not isinstance(meta, dict):
        raise ProtocolError("metadata is not a map")
    return meta


def unpack_status(frame: Any) -> Snapshot:
    """A STATUS answer: the one map that grows with the cluster, so its bounds are wider;
    checked against its schema once, here (ProtocolError when it does not fit)."""
    return parse_snapshot(unpack_meta(frame, MAX_STATUS_BYTES, MAX_STATUS_BYTES // 16))


def unpack_request_meta(frame: Any, hop_frame: Any = None) -> RequestMeta:
    """A REQUEST's metadata, typed; its fields are checked where they are used. A worker
    passes the broker's hop frame too, whose budget and attempt win over the metadata's."""
    meta = cast(RequestMeta, unpack_meta(frame))
    if hop_frame is not None:
        meta["timeout_ms"], meta["attempt"] = parse_hop(hop_frame)
    return meta


def unpack_answer_meta(frame: Any) -> AnswerMeta:
    """An answer's metadata, typed; its fields are checked where they are used."""
    return cast(AnswerMeta, unpack_meta(frame))


def identity(frame: Any) -> bytes:
    """Read a request id or client route, refusing empty or oversized ones."""
    data = _as_bytes(frame)
    if not data or len(data) > MAX_ID_BYTES:
        raise ProtocolError(f"identity frame of {len(data)} bytes")
    return data


#: Bytes of a session number at the end of a worker's data-socket name.
SESSION_BYTES = 4


def session_name(worker: bytes, session: int) -> bytes:
    """The name of a worker's data socket in one session with a broker: the worker's own name
    and the session's number. Each READY comes from a fresh socket with a new name, so that an
    earlier socket's connection still being made when it was closed can never take the live
    one's name (the broker's ROUTER hands a name to the newest connection that claims it)."""
    return worker + struct.pack("!I", session % 2**32)


def session_of(name: bytes) -> tuple[bytes, int]:
    """A data socket's name as (the worker's name, the session's number); a name too short to
    hold a session number is a worker's name of session 0."""
    if len(name) <= SESSION_BYTES:
        return name, 0
    return name[:-SESSION_BYTES], struct.unpack("!I", name[-SESSION_BYTES:])[0]


# -- metadata shapes -------------------------------------------------------------------
# Every key a metadata map may carry, per message. ``total=False``: a peer may leave any out,
# and every reader checks what it reads.


class RequestMeta(TypedDict, total=False):
    """REQUEST, frontend -> broker -> worker."""

    service: str
    path: str
    method: str
    #: The request's Content-Type.
    ct: str
    #: The budget left, in ms (never a wall-clock time). To a worker, the hop frame's.
    timeout_ms: int
    request_id: str
    #: Request headers and query string, only for a service whose API reads them.
    headers: dict[str, str]
    query: str
    #: The model it names (its X-Model-Id header): the broker prefers a worker holding it.
    model: str
    #: The version of its service it pins (its X-Model-Version header).
    version: str
    #: 1 on the first worker, more after a worker was lost: the hop frame's, set by the
    #: broker (the metadata frame is passed on as the frontend sent it).
    attempt: int
    #: The trace context (W3C ``traceparent``, ``tracestate``) when tracing is on.
    trace: dict[str, str]
    #: Requests the frontend process holds, this one included: the ``active_requests`` that
    #: LitServe's ``on_request`` callbacks hear.
    active: int


class AnswerMeta(TypedDict, total=False):
    """REPLY, CHUNK, END and ERROR, worker (or broker) -> frontend. A stream's first message
    carries status and content type; the pieces after it usually carry nothing."""

    status: int
    ct: str
    headers: dict[str, str]
    #: ERROR: what went wrong, a string or a JSON-able detail.
    error: Any
    #: ERROR: seconds the client should wait before it tries again.
    retry_after: float


class ReadyMeta(TypedDict, total=False):
    """READY, worker -> broker: what it serves and how (see ``broker.registry.parse_ready``)."""

    service: str
    routes: list[dict[str, Any]]
    capacity: int
    pid: int
    host: str
    device: str
    #: zeroserve's own version; ``model_version`` is the served version of its service.
    version: str
    model_version: str
    heartbeat_interval_s: float
    loop: str
    models: list[str]
    headers: bool
    #: Its API defines ``authorize()``, which it runs on every request.
    authorize: bool
    request_schema: dict[str, Any] | None
    #: ``LitAPI(mcp=MCP(...))``: the tool (name, description, inputSchema, endpoint).
    mcp_tool: dict[str, Any] | None
    #: For ``cluster status``: its spec's class name, its host's cores, its API's class
    #: name and its batching and streaming settings.
    spec: str | None
    cores: int
    api: str
    max_batch_size: int
    batch_timeout_s: float
    stream: bool
    #: The threads its numeric libraries may start, and the thread variables in effect.
    threads_per_process: int
    thread_env: str
    #: An API that serves many models: how many a process holds, and those it holds now.
    max_models: int
    loaded_models: list[str]


class HeartbeatMeta(TypedDict, total=False):
    """HEARTBEAT, any way. A worker's names its data socket (of its session with the broker it
    goes to) and reports its counters; a frontend's names its host; a broker's names itself."""

    heartbeat_interval_s: float
    broker_id: str
    worker: bytes
    host: str
    pid: int
    healthy: bool
    #: A worker's requests waiting in it, and those it holds.
    queued: int
    in_flight: int
    #: A worker whose API serves many models: those it holds (or is loading), and its
    #: requests that found their model loaded, those that did not, loads and evictions.
    loaded_models: list[str]
    model_hits: int
    model_misses: int
    model_loads: int
    model_evictions: int
    #: A worker's slots at this broker now (its READY said them first; a sync worker whose
    #: requests are measured fast holds more).
    capacity: int


class LauncherMeta(TypedDict, total=False):
    """LAUNCHER, both ways on the worker port. A worker launcher's (on a socket of its own)
    says what it runs and, when its processes keep failing, why; the broker's answer names
    itself and carries the launcher's service's load."""

    heartbeat_interval_s: float
    host: str
    pid: int
    api: str
    service: str
    processes: int
    running: int
    problem: str
    #: Its autoscaling range (absent: a fixed count).
    min_processes: int
    max_processes: int
    #: Its processes' threads (0: the environment's thread variables govern).
    threads_per_process: int
    thread_env: str
    #: The broker's answer: itself, and its service's requests waiting, and in flight.
    broker_id: str
    queued: int
    in_flight: int


class RouteMeta(TypedDict, total=False):
    """ROUTE, admin -> broker: a service's weights by version (empty: the newest version takes
    all). The broker's answer carries them back as set, or an ``error``."""

    service: str
    weights: dict[str, int]
    error: str


class RetireMeta(TypedDict, total=False):
    """RETIRE, admin -> broker: a version of a service to drain. The broker's answer says how
    many of its workers were told to, or an ``error``."""

    service: str
    version: str
    workers: int
    error: str


class DisconnectMeta(TypedDict, total=False):
    """DISCONNECT: why the sender leaves; a worker's control socket names its worker."""

    reason: str
    worker: bytes


class RoutesMeta(TypedDict, total=False):
    """ROUTES, broker -> frontend: every service with its routes and live workers."""

    broker_id: str
    services: dict[str, dict[str, Any]]


class RoutePath(NamedTuple):
    """A path a service serves, and the methods it takes there."""

    path: str
    methods: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServiceRoutes:
    """One service of a ROUTES table, as ``parse_routes`` reads it (once, where it comes in)."""

    routes: tuple[RoutePath, ...] = ()
    #: Its ready workers at the broker that sent the table.
    workers: int = 0
    models: tuple[str, ...] = ()
    #: Its requests carry their headers and query string.
    headers: bool = False
    #: Its API's ``authorize()`` decides who may call it.
    authorize: bool = False
    request_schema: dict[str, Any] | None = None
    mcp_tool: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        """As the broker wrote it (the frontend's ``/info`` shows it)."""
        return {
            "routes": [{"path": r.path, "methods": list(r.methods)} for r in self.routes],
            "workers": self.workers,
            "models": list(self.models),
            "headers": self.headers,
            "authorize": self.authorize,
            "request_schema": self.request_schema,
            "mcp_tool": self.mcp_tool,
        }


#: One answer as a frontend's waiter and a worker's framer both hold it: command, its
#: metadata, and the body.
Answer = tuple[bytes, AnswerMeta, bytes]


def error_fields(status: int, error: Any, retry_after_s: float | None = None) -> AnswerMeta:
    """The metadata of an ERROR: its status, what went wrong, and when to come back."""
    meta: AnswerMeta = {"status": status, "error": error}
    if retry_after_s is not None:
        meta["retry_after"] = retry_after_s
    return meta


def error_answer(status: int, error: Any, retry_after_s: float | None = None) -> Answer:
    """An ERROR answer, made where the failure was found (worker, broker or frontend)."""
    return (ERROR, error_fields(status, error, retry_after_s), b"")


# -- builders: one per message, each a plain list. What only the broker sends starts with
# the peer's identity, for its ROUTER; what several send, the broker prefixes itself.


def ready(meta: ReadyMeta) -> list[Any]:
    return [SIGNATURE, READY, pack_meta(meta)]


def heartbeat(meta: HeartbeatMeta | Mapping[str, Any] | None = None) -> list[Any]:
    return [SIGNATURE, HEARTBEAT, pack_meta(meta) if meta else EMPTY_META]


def request(rid: bytes, meta: RequestMeta, body: Any) -> list[Any]:
    """Frontend -> broker."""
    return [SIGNATURE, REQUEST, rid, pack_meta(meta), body]


def request_to_worker(
    worker: bytes,
    client: bytes,
    rid: bytes,
    meta_frame: Any,
    body: Any,
    *,
    timeout_ms: int,
    attempt: int,
) -> list[Any]:
    """Broker -> worker: the frontend's request, its metadata frame as it came, and a hop
    frame with the budget left and the attempt (so the metadata is never re-packed)."""
    return [worker, SIGNATURE, REQUEST, client, rid, meta_frame, hop(timeout_ms, attempt), body]


def hop(timeout_ms: int, attempt: int) -> bytes:
    """The hop frame: what the broker says of a request beyond the frontend's metadata."""
    return HOP.pack(min(max(timeout_ms, 0), 2**64 - 1), min(max(attempt, 0), 2**32 - 1))


def cancel(rid: bytes) -> list[Any]:
    """Frontend -> broker: nobody waits for this request any more."""
    return [SIGNATURE, CANCEL, rid]


def cancel_to_worker(worker: bytes, client: bytes, rid: bytes) -> list[Any]:
    return [worker, SIGNATURE, CANCEL, client, rid]


def answer(command: bytes, client: bytes, rid: bytes, meta: AnswerMeta, body: Any) -> list[Any]:
    """Worker -> broker: one message of an answer."""
    return [SIGNATURE, command, client, rid, pack_meta(meta) if meta else EMPTY_META, body]


def answer_to_frontend(
    frontend: bytes, command: bytes, rid: bytes, meta_frame: Any, body: Any
) -> list[Any]:
    """Broker -> frontend: a worker's answer, its metadata frame passed on as it came."""
    return [frontend, SIGNATURE, command, rid, meta_frame, body]


def error(
    frontend: bytes, rid: bytes, status: int, why: str, retry_after_s: float | None = None
) -> list[Any]:
    """Broker -> frontend: an ERROR made by the broker."""
    meta = pack_meta(error_fields(status, why, retry_after_s))
    return [frontend, SIGNATURE, ERROR, rid, meta, b""]


def status_request(rid: bytes = b"status") -> list[Any]:
    return [SIGNATURE, STATUS, rid]


def status_reply(client: bytes, rid: bytes, snapshot: Snapshot) -> list[Any]:
    return [client, SIGNATURE, STATUS, rid, pack_meta(snapshot)]


def routes(table: RoutesMeta) -> list[Any]:
    return [SIGNATURE, ROUTES, pack_meta(table)]


def drain() -> list[Any]:
    """A worker asks for no new work; the broker sends the same back as its acknowledgement."""
    return [SIGNATURE, DRAIN]


def refused(status: int, why: str) -> list[Any]:
    return [SIGNATURE, REFUSED, pack_meta(error_fields(status, why))]


def announce() -> list[Any]:
    return [SIGNATURE, ANNOUNCE]


def route(rid: bytes, service: str, weights: Mapping[str, int]) -> list[Any]:
    """Admin -> broker: split `service`'s new requests between its versions by `weights`."""
    return [SIGNATURE, ROUTE, rid, pack_meta({"service": service, "weights": dict(weights)})]


def route_reply(client: bytes, rid: bytes, meta: RouteMeta) -> list[Any]:
    return [client, SIGNATURE, ROUTE, rid, pack_meta(meta)]


def retire(rid: bytes, service: str, version: str) -> list[Any]:
    """Admin -> broker: drain every worker of `version` of `service`."""
    return [SIGNATURE, RETIRE, rid, pack_meta({"service": service, "version": version})]


def retire_reply(client: bytes, rid: bytes, meta: RetireMeta) -> list[Any]:
    return [client, SIGNATURE, RETIRE, rid, pack_meta(meta)]


def retire_worker(worker: bytes) -> list[Any]:
    """Broker -> worker: finish what you hold, take nothing new, and exit."""
    return [worker, SIGNATURE, RETIRE]


def launcher(meta: LauncherMeta) -> list[Any]:
    """A launcher's word to a broker, and the broker's answer (it prefixes the launcher)."""
    return [SIGNATURE, LAUNCHER, pack_meta(meta)]


def disconnect(reason: str = "", worker: bytes | None = None) -> list[Any]:
    meta: DisconnectMeta = {"reason": reason} if reason else {}
    if worker is not None:
        meta["worker"] = worker
    return [SIGNATURE, DISCONNECT, pack_meta(meta) if meta else EMPTY_META]


# -- parsers of what the builders make -------------------------------------------------


def parse_hop(frame: Any) -> tuple[int, int]:
    """A REQUEST's hop frame (see ``hop``): its (timeout_ms, attempt), or ProtocolError when
    it is not one. A plain tuple: this runs on every request a worker takes."""
    data = _as_bytes(frame)
    if len(data) != HOP.size:
        raise ProtocolError(f"hop frame of {len(data)} bytes, not {HOP.size}")
    timeout_ms, attempt = HOP.unpack(data)
    return timeout_ms, attempt


#: A LAUNCHER's fields: text (and its longest) or count (and its largest).
_LAUNCHER_TEXT = {
    "host": 255,
    "api": 256,
    "service": 128,
    "problem": 1000,
    "thread_env": 1000,
    "broker_id": 255,
}
_LAUNCHER_COUNT = {
    "pid": 2**31,
    "processes": MAX_PROCESSES,
    "running": MAX_PROCESSES,
    "min_processes": MAX_PROCESSES,
    "max_processes": MAX_PROCESSES,
    "threads_per_process": MAX_PROCESSES,
    "queued": 2**63,
    "in_flight": 2**63,
}


def parse_launcher(frame: Any) -> LauncherMeta:
    """A LAUNCHER frame (either way): each field it carries, checked; a field of the wrong
    type or out of range is left out (a peer's frames are not trusted)."""
    meta = unpack_meta(frame)
    parsed: dict[str, Any] = {}
    for key, longest in _LAUNCHER_TEXT.items():
        text = meta.get(key)
        if isinstance(text, str):
            parsed[key] = text[:longest]
    for key, largest in _LAUNCHER_COUNT.items():
        count = meta.get(key)
        if isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= largest:
            parsed[key] = count
    interval = meta.get("heartbeat_interval_s")
    if isinstance(interval, (int, float)) and not isinstance(interval, bool):
        parsed["heartbeat_interval_s"] = float(interval)
    return cast(LauncherMeta, parsed)


def parse_refusal(frame: Any) -> tuple[int, str]:
    """A REFUSED frame's (status, why)."""
    meta = unpack_meta(frame)
    status, why = meta.get("status"), meta.get("error")
    if not isinstance(status, int) or isinstance(status, bool):
        status = 400
    return status, str(why) if why is not None else "no reason given"


def parse_weights(raw: Any) -> dict[str, int]:
    """A traffic split: version label -> weight (0 to MAX_WEIGHT), or ProtocolError."""
    if not isinstance(raw, dict) or len(raw) > 64:
        raise ProtocolError("weights must be a map of at most 64 versions")
    for label, weight in raw.items():
        if not isinstance(label, str) or not VERSION_LABEL.match(label):
            raise ProtocolError(f"bad version label {label!r}")
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= MAX_WEIGHT:
            raise ProtocolError(f"weight of version {label!r} must be 0 to {MAX_WEIGHT}")
    if raw and not any(raw.values()):
        raise ProtocolError("at least one version needs a weight above 0")
    return dict(raw)


def _service_of(meta: Mapping[str, Any]) -> str:
    service = meta.get("service")
    if not isinstance(service, str) or not 0 < len(service) <= 128:
        raise ProtocolError(f"bad service name {service!r}")
    return service


def parse_route(frame: Any) -> RouteMeta:
    """A ROUTE (either way): its service, its weights, and an error when it is an answer."""
    meta = unpack_meta(frame)
    if isinstance(meta.get("error"), str):
        return {"error": meta["error"][:1000]}
    return {"service": _service_of(meta), "weights": parse_weights(meta.get("weights"))}


def parse_retire(frame: Any) -> RetireMeta:
    """A RETIRE (either way): its service and version, and when an answer, the workers told
    or an error."""
    meta = unpack_meta(frame)
    if isinstance(meta.get("error"), str):
        return {"error": meta["error"][:1000]}
    version = meta.get("version")
    if not isinstance(version, str) or not VERSION_LABEL.match(version):
        raise ProtocolError(f"bad version label {version!r}")
    parsed: RetireMeta = {"service": _service_of(meta), "version": version}
    workers = meta.get("workers")
    if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0:
        parsed["workers"] = workers
    return parsed


def parse_disconnect(frame: Any) -> DisconnectMeta:
    """A DISCONNECT frame: a reason (a string, maybe empty) and the worker it names, if any."""
    meta = unpack_meta(frame)
    reason, worker = meta.get("reason"), meta.get("worker")
    parsed: DisconnectMeta = {"reason": reason[:255] if isinstance(reason, str) else ""}
    if isinstance(worker, bytes) and worker:
        parsed["worker"] = worker
    return parsed


def parse_routes(frame: Any) -> dict[str, ServiceRoutes] | None:
    """A ROUTES frame's services by name (None: it names none); an entry or a route of the
    wrong shape is left out."""
    services = unpack_meta(frame).get("services")
    if not isinstance(services, dict):
        return None
    parsed: dict[str, ServiceRoutes] = {}
    for name, entry in services.items():
        if not isinstance(name, str) or not isinstance(entry, dict):
            continue
        listed = entry.get("routes")
        routes = tuple(
            RoutePath(r["path"], tuple(str(m) for m in r["methods"]))
            for r in (listed if isinstance(listed, list) else ())
            if isinstance(r, dict)
            and isinstance(r.get("path"), str)
            and isinstance(r.get("methods"), list)
        )
        workers, models = entry.get("workers"), entry.get("models")
        schema, tool = entry.get("request_schema"), entry.get("mcp_tool")
        parsed[name] = ServiceRoutes(
            routes=routes,
            workers=max(0, workers) if type(workers) is int else 0,
            models=tuple(m for m in models if isinstance(m, str))
            if isinstance(models, list)
            else (),
            headers=entry.get("headers") is True,
            authorize=entry.get("authorize") is True,
            request_schema=schema if isinstance(schema, dict) else None,
            mcp_tool=tool if isinstance(tool, dict) else None,
        )
    return parsed


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
