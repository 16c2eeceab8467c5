"""The broker's registry: which workers and frontends are alive, and which services they serve."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import heapq
import itertools
import re
import time
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from zeroserve.broker.queue import RequestKey, ServiceQueue
from zeroserve.common import protocol as p
from zeroserve.common.errors import ProtocolError

_SERVICE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
MAX_CAPACITY = 100_000
#: The most models one worker may say it holds.
MAX_MODELS_HELD = 1024
#: The version of a worker whose READY names none.
DEFAULT_VERSION = "1"


@functools.lru_cache(maxsize=1024)
def version_order(label: str) -> tuple[tuple[int, int | str], ...]:
    """The order "newest" follows: runs of digits compare as numbers, the rest as text, so
    that 2 < 10, 1.9 < 1.10 and v2 < v10. Every broker orders alike, restarted or not."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _RUNS.findall(label))


_RUNS = re.compile(r"\d+|\D+")


@dataclass(eq=False)
class WorkerRecord:
    identity: bytes
    service: str
    routes: list[dict[str, Any]]
    capacity: int
    pid: int
    host: str
    info: dict[str, Any]
    heartbeat_interval_s: float
    last_seen: float
    #: Silence longer than this is death (``LinkConfig.silence_limit_s``).
    expiry_s: float = 0.0
    joined_at: float = field(default_factory=time.monotonic)
    done: int = 0
    #: What the worker said of itself in its last heartbeat.
    reported: dict[str, Any] = field(default_factory=dict)
    #: The socket its heartbeats come from, where the broker's go; None until the first.
    control: bytes | None = None
    #: The device its READY named (``cuda:3``, ``cpu``), or None.
    device: str | None = None
    #: The models it holds or is loading (its API serves many): from its READY and heartbeats,
    #: and every model this broker sent it since (it is loading that one).
    models: frozenset[str] = frozenset()
    #: How many models it holds at most (its READY; 0: its API serves one model).
    max_models: int = 0
    #: The version of its service it serves (``cluster worker --version``).
    model_version: str = DEFAULT_VERSION
    # Changed only through ServiceRecord (assign, release, set_serving), which keeps its
    # ready heap in step with them.
    _assigned: set[RequestKey] = field(default_factory=set)
    _draining: bool = False
    _healthy: bool = True
    #: When it was last picked (or joined): the round-robin order among equal credit.
    _picked: int = 0
    #: Bumped at every change; a ready-heap entry of an older version is stale.
    _version: int = 0

    @property
    def assigned(self) -> AbstractSet[RequestKey]:
        """The requests of this broker it holds (read only: see ServiceRecord.assign)."""
        return self._assigned

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def healthy(self) -> bool:
        """What the API's health() said in the worker's last heartbeat: no new work while
        False."""
        return self._healthy

    @property
    def expires_at(self) -> float:
        return self.last_seen + self.expiry_s

    @property
    def short_id(self) -> str:
        """What status shows: a digest, since a worker's identity would let a peer speak for it."""
        return hashlib.blake2s(self.identity, digest_size=4).hexdigest()

    @property
    def heartbeat_to(self) -> bytes:
        """Where the broker's heartbeats and goodbye go: the control socket, once known."""
        return self.control or self.identity

    @property
    def credit(self) -> int:
        """Free slots, counted from what this broker sent and saw answered, so it cannot drift."""
        return self.capacity - len(self._assigned) if self.serves else 0

    @property
    def serves(self) -> bool:
        """May be given new work: not draining, and healthy."""
        return self._healthy and not self._draining

    @property
    def state(self) -> str:
        if self.draining:
            return "draining"
        if not self.healthy:
            return "unhealthy"
        return "busy" if self.credit <= 0 else "ready"


@dataclass(eq=False)
class FrontendRecord:
    identity: bytes
    host: str
    pid: int
    expires_at: float
    last_seen: float


@dataclass(eq=False)
class LauncherRecord:
    """A worker launcher as its LAUNCHER messages describe it (it serves nothing itself).
    Each field after ``expires_at`` is what a LAUNCHER reports; its default is the value when
    the LAUNCHER leaves it out (or had it wrong: ``p.parse_launcher`` drops such a field)."""

    identity: bytes
    last_seen: float
    expires_at: float
    host: str = ""
    pid: int = 0
    api: str = ""
    service: str = ""
    processes: int = 0
    running: int = 0
    #: Why its processes keep failing, in its own words ("" while none does).
    problem: str = ""
    #: Its autoscaling range (0 and 0: a fixed count).
    min_processes: int = 0
    max_processes: int = 0
    #: The threads each of its processes may start (0: the environment's thread variables
    #: govern), and those variables as its processes get them.
    threads_per_process: int = 0
    thread_env: str = ""


#: The fields of a launcher record its LAUNCHER reports.
LAUNCHER_REPORTED = tuple(
    f for f in dataclasses.fields(LauncherRecord) if f.default is not dataclasses.MISSING
)


def _count(meta: dict[str, Any], key: str, maximum: int = MAX_CAPACITY) -> int:
    value = meta.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum:
        return value
    return 0


@dataclass(eq=False)
class ServiceRecord:
    name: str
    routes: list[dict[str, Any]]
    queue: ServiceQueue
    models: list[str] = field(default_factory=list)
    #: Its workers read request headers (a stage takes ``context``): frontends forward them.
    headers: bool = False
    #: Every one of its workers runs its API's ``authorize()``, which then decides instead
    #: of LitServe's API key (LitServe's rule).
    authorize: bool = False
    #: The JSON schema of its request body, when its API's decode_request declares one.
    request_schema: dict[str, Any] | None = None
    #: The MCP tool its API is (``LitAPI(mcp=MCP(...))``), which frontends serve at /mcp/.
    mcp_tool: dict[str, Any] | None = None
    workers: dict[bytes, WorkerRecord] = field(default_factory=dict)
    #: The traffic split between its versions (``cluster route``); empty: the newest takes all.
    weights: dict[str, int] = field(default_factory=dict)
    #: Its last worker was lost at a request it could not be given (it died, and its launcher
    #: is starting another): until then requests wait in its queue, as they would have for the
    #: lost worker's heartbeats, instead of being refused (0: no such wait).
    awaiting_until: float = 0.0
    #: Per version of the service, its workers with credit, best first: (-credit, picked,
    #: version, worker). An entry whose version is not its worker's is stale and skipped; so
    #: no request walks the workers.
    _ready: dict[str, list[tuple[int, int, int, WorkerRecord]]] = field(default_factory=dict)
    _serving: int = 0
    #: Workers per version, and those of them that may take new work.
    _members: dict[str, int] = field(default_factory=dict)
    _serving_by: dict[str, int] = field(default_factory=dict)
    #: Smooth weighted round robin: each weighted version's running score.
    _scores: dict[str, int] = field(default_factory=dict)
    _clock: Iterator[int] = field(default_factory=itertools.count)
    #: The workers holding each model (``WorkerRecord.models``, indexed).
    _holders: dict[str, set[WorkerRecord]] = field(default_factory=dict)
    #: Its workers whose API serves many models (none: dispatch never reads a model).
    _multiplexed: int = 0

    @property
    def multiplexed(self) -> bool:
        return self._multiplexed > 0

    def ready_workers(self) -> int:
        """Workers that may be given new work (busy or not)."""
        return self._serving

    def in_flight(self) -> int:
        """Requests its workers hold (for status: it walks the workers)."""
        return sum(len(w.assigned) for w in self.workers.values())

    def has_ready_worker(self) -> bool:
        """Asked for every request: whether a worker may take work, now or once it has a slot."""
        return self._serving > 0

    # -- versions ------------------------------------------------------------------------

    def versions(self) -> dict[str, int]:
        """Each version with workers here, and how many of them may take new work."""
        return {v: self._serving_by.get(v, 0) for v in self._members}

    def has_version(self, version: str) -> bool:
        return version in self._members

    def serves_version(self, version: str) -> bool:
        return self._serving_by.get(version, 0) > 0

    def newest(self) -> str | None:
        """The newest version (``version_order``) with a worker that may take new work."""
        serving = [v for v, n in self._serving_by.items() if n > 0]
        return max(serving, key=version_order) if serving else None

    def set_weights(self, weights: dict[str, int]) -> None:
        self.weights = {v: w for v, w in weights.items() if w > 0}
        self._scores = dict.fromkeys(self.weights, 0)

    def choose_version(self) -> str | None:
        """The version a new request (pinning none) goes to: by the weights, among the
        weighted versions that have a worker taking new work (smooth weighted round robin, so
        that the split holds over a few requests); when none has, or no weights are set, the
        newest version that has. O(versions)."""
        if len(self._serving_by) == 1:
            only = next(iter(self._serving_by))
            if not self.weights or only in self.weights:
                return only if self._serving_by[only] > 0 else None
        live = [v for v in self.weights if self._serving_by.get(v, 0) > 0]
        if not live:
            return self.newest()
        if len(live) == 1:
            return live[0]
        scores, total = self._scores, 0
        for version in live:
            weight = self.weights[version]
            scores[version] += weight
            total += weight
        chosen = max(live, key=scores.__getitem__)
        scores[chosen] -= total
        return chosen

    def _count(self, worker: WorkerRecord, sign: int) -> None:
        """`worker` joins (1) or leaves (-1) its version's counts."""
        version = worker.model_version
        self._members[version] = self._members.get(version, 0) + sign
        self._serving_by[version] = self._serving_by.get(version, 0) + sign * worker.serves
        if self._members[version] <= 0:
            del self._members[version]
            self._serving_by.pop(version, None)
            self._ready.pop(version, None)

    # -- the only ways a worker's credit or state changes ------------------------------

    def add(self, worker: WorkerRecord) -> None:
        """A new worker: last in the round-robin order, as one just picked."""
        self.workers[worker.identity] = worker
        worker._picked = next(self._clock)
        self._serving += worker.serves
        self._count(worker, 1)
        self._multiplexed += worker.max_models > 0
        self._offer(worker)

    def remove(self, worker: WorkerRecord) -> None:
        """A worker leaves: no new work; what it holds stays in ``assigned`` for the caller."""
        if self.workers.pop(worker.identity, None) is not None:
            self._serving -= worker.serves
            self._count(worker, -1)
            self._multiplexed -= worker.max_models > 0
            worker._version += 1
            self.set_models(worker, frozenset())

    def holders(self, model: str) -> AbstractSet[WorkerRecord]:
        return self._holders.get(model, frozenset())

    def set_models(self, worker: WorkerRecord, models: frozenset[str]) -> None:
        """What `worker` holds now (its READY or heartbeat said so)."""
        for gone in worker.models - models:
            holders = self._holders.get(gone)
            if holders is not None:
                holders.discard(worker)
                if not holders:
                    del self._holders[gone]
        if self.workers.get(worker.identity) is worker:
            for new in models - worker.models:
                self._holders.setdefault(new, set()).add(worker)
        worker.models = models

    def pick(self, model: str | None = None, version: str | None = None) -> WorkerRecord | None:
        """A worker of `version` (None: of the version ``choose_version`` gives) for a request.
        For one naming `model`: the holder of it with the most free slots, if one has any.
        Otherwise (and for every request naming none): the worker with the most free slots;
        among equals, the one picked least recently."""
        if version is None:
            version = self.choose_version()
            if version is None:
                return None
        if model is not None:
            holders = self._holders.get(model)
            if holders:
                best = max(
                    (h for h in holders if h.model_version == version),
                    key=_free_then_oldest,
                    default=None,
                )
                if best is not None and best.credit > 0:
                    return best
        ready = self._ready.get(version)
        while ready:
            _, _, stamp, worker = ready[0]
            if stamp == worker._version:
                return worker
            heapq.heappop(ready)
        return None

    def assign(self, worker: WorkerRecord, key: RequestKey, model: str | None = None) -> None:
        """`worker` is given `key`: one slot fewer, and last in the round-robin order. A
        request naming a model makes it a holder of that model (it loads it, if need be), so
        the requests after it follow while it has free slots."""
        if model is not None and worker.max_models and model not in worker.models:
            self.set_models(worker, worker.models | {model})
        worker._assigned.add(key)
        worker._picked = next(self._clock)
        self._offer(worker)

    def release(self, worker: WorkerRecord, key: RequestKey) -> bool:
        """`worker` no longer holds `key`; True when it did (a slot came free)."""
        if key not in worker._assigned:
            return False
        worker._assigned.discard(key)
        self._offer(worker)
        return True

    def release_all(self, worker: WorkerRecord) -> set[RequestKey]:
        """Everything `worker` held, taken back (it is gone, or its session ended)."""
        held, worker._assigned = worker._assigned, set()
        self._offer(worker)
        return held

    def set_capacity(self, worker: WorkerRecord, capacity: int) -> None:
        """Its slots changed (a heartbeat said so): its credit follows."""
        if capacity != worker.capacity:
            worker.capacity = capacity
            self._offer(worker)

    def set_serving(
        self, worker: WorkerRecord, *, healthy: bool | None = None, draining: bool | None = None
    ) -> None:
        """Its health or drain changed: it stops, or starts again, taking new work."""
        member = self.workers.get(worker.identity) is worker
        version = worker.model_version
        if member:
            self._serving -= worker.serves
            self._serving_by[version] -= worker.serves
        if healthy is not None:
            worker._healthy = healthy
        if draining is not None:
            worker._draining = draining
        if member:
            self._serving += worker.serves
            self._serving_by[version] += worker.serves
        self._offer(worker)

    def _offer(self, worker: WorkerRecord) -> None:
        """Its entry in the ready heap, replacing any it had (that one turns stale)."""
        worker._version += 1
        credit = worker.credit
        if credit <= 0 or self.workers.get(worker.identity) is not worker:
            return
        version = worker.model_version
        ready = self._ready.setdefault(version, [])
        heapq.heappush(ready, (-credit, worker._picked, worker._version, worker))
        if len(ready) > 2 * self._members.get(version, 0) + 64:
            # Stale entries outnumber the live ones: rebuild (amortized, once per many pushes).
            ready[:] = [
                (-w.credit, w._picked, w._version, w)
                for w in self.workers.values()
                if w.credit > 0 and w.model_version == version
            ]
            heapq.heapify(ready)


def _free_then_oldest(worker: WorkerRecord) -> tuple[int, int]:
    return (worker.credit, -worker._picked)


def parse_models(raw: Any) -> frozenset[str]:
    """The models a READY or heartbeat says the worker holds (a bad list says none)."""
    if not isinstance(raw, list) or len(raw) > MAX_MODELS_HELD:
        return frozenset()
    return frozenset(m for m in raw if isinstance(m, str) and 0 < len(m) <= p.MAX_MODEL_ID)


def _routes_from(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw or len(raw) > 64:
        raise ProtocolError("READY needs a list of 1 to 64 routes")
    routes = []
    for item in raw:
        if not isinstance(item, dict):
            raise ProtocolError("a route must be a map")
        path, methods = item.get("path"), item.get("methods", ["POST"])
        if not isinstance(path, str) or not path.startswith("/") or len(path) > 512:
            raise ProtocolError(f"bad route path {path!r}")
        if not isinstance(methods, list) or not methods or not set(methods) <= _HTTP_METHODS:
            raise ProtocolError(f"bad methods {methods!r} for route {path}")
        routes.append({"path": path, "methods": sorted(set(methods))})
    return routes


def _mcp_tool_from(raw: Any) -> dict[str, Any] | None:
    """A READY's MCP tool: name, description, input schema and route, or None."""
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or not all(isinstance(raw.get(k), str) for k in ("name", "description", "endpoint"))
        or not isinstance(raw.get("inputSchema"), dict)
    ):
        raise ProtocolError("'mcp_tool' needs a name, description, inputSchema and endpoint")
    return {k: raw[k] for k in ("name", "description", "inputSchema", "endpoint")}


def parse_ready(meta: dict[str, Any]) -> dict[str, Any]:
    """Validate a READY announcement; never trust a peer's frames."""
    service = meta.get("service")
    if not isinstance(service, str) or not _SERVICE_NAME.match(service):
        raise ProtocolError(f"bad service name {service!r}")
    capacity = meta.get("capacity")
    if not isinstance(capacity, int) or isinstance(capacity, bool):
        raise ProtocolError("READY needs an integer capacity")
    if not 1 <= capacity <= MAX_CAPACITY:
        raise ProtocolError(f"capacity {capacity} out of range 1..{MAX_CAPACITY}")
    interval = meta.get("heartbeat_interval_s", p.HEARTBEAT_INTERVAL_S)
    if not isinstance(interval, (int, float)) or not 0 < interval <= 3600:
        raise ProtocolError(f"bad heartbeat interval {interval!r}")
    pid = meta.get("pid", 0)
    host = meta.get("host", "")
    models = meta.get("models") or []
    version = meta.get("model_version", DEFAULT_VERSION)
    if not isinstance(version, str) or not p.VERSION_LABEL.match(version):
        raise ProtocolError(f"bad version label {version!r}")
    schema = meta.get("request_schema")
    device = meta.get("device")
    if (
        not isinstance(models, list)
        or len(models) > 16
        or not all(isinstance(m, str) and 0 < len(m) <= 256 for m in models)
    ):
        raise ProtocolError("'models' must be a short list of names")
    return {
        "models": models,
        "headers": meta.get("headers") is True,
        "authorize": meta.get("authorize") is True,
        "request_schema": schema if isinstance(schema, dict) else None,
        "mcp_tool": _mcp_tool_from(meta.get("mcp_tool")),
        "device": device if isinstance(device, str) and 0 < len(device) <= 64 else None,
        "service": service,
        "routes": _routes_from(meta.get("routes")),
        "capacity": capacity,
        "heartbeat_interval_s": float(interval),
        "pid": pid if isinstance(pid, int) else 0,
        "host": host[:255] if isinstance(host, str) else "",
        "loaded_models": parse_models(meta.get("loaded_models")),
        "max_models": _count(meta, "max_models", MAX_MODELS_HELD),
        "model_version": version,
    }


class Registry:
    """Workers, frontends and services, with the routing rules between them."""

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self.workers: dict[bytes, WorkerRecord] = {}
        #: The data socket of each worker's session here, by the worker's name
        #: (``p.session_of``): one session per worker at a time.
        self.sessions: dict[bytes, bytes] = {}
        self.frontends: dict[bytes, FrontendRecord] = {}
        self.launchers: dict[bytes, LauncherRecord] = {}
        self.services: dict[str, ServiceRecord] = {}

    def route_conflict(self, service: str, routes: list[dict[str, Any]]) -> str | None:
        """Why these routes cannot be served by `service`, or None when they can."""
        paths = {r["path"] for r in routes}
        for other in self.services.values():
            if other.name == service:
                if other.workers and {r["path"] for r in other.routes} != paths:
                    return (
                        f"service {service!r} already serves routes "
                        f"{sorted(r['path'] for r in other.routes)}; this worker announced "
                        f"{sorted(paths)}"
                    )
                continue
            if other.workers and paths & {r["path"] for r in other.routes}:
                clash = sorted(paths & {r["path"] for r in other.routes})
                return f"route(s) {clash} already belong to service {other.name!r}"
        return None

    def add_worker(
        self, identity: bytes, ready: dict[str, Any], info: dict[str, Any], now: float
    ) -> WorkerRecord:
        name = ready["service"]
        service = self.services.get(name)
        if service is None:
            service = self.services[name] = ServiceRecord(
                name, ready["routes"], ServiceQueue(self.max_queue), ready["models"]
            )
        elif not service.workers:
            service.routes = ready["routes"]
            service.models = ready["models"]
            service.headers = False
            service.request_schema = None
            service.mcp_tool = None
        service.authorize = ready["authorize"] and (service.authorize or not service.workers)
        service.headers = service.headers or ready["headers"]
        service.request_schema = ready["request_schema"] or service.request_schema
        service.mcp_tool = ready["mcp_tool"] or service.mcp_tool
        # A route released by a service that has no worker left moves to this one.
        for other in self.services.values():
            if other is not service and not other.workers:
                paths = {r["path"] for r in ready["routes"]}
                other.routes = [r for r in other.routes if r["path"] not in paths]
        worker = WorkerRecord(
            identity=identity,
            service=name,
            routes=ready["routes"],
            capacity=ready["capacity"],
            pid=ready["pid"],
            host=ready["host"],
            info=info,
            device=ready["device"],
            heartbeat_interval_s=ready["heartbeat_interval_s"],
            last_seen=now,
            max_models=ready["max_models"],
            model_version=ready["model_version"],
        )
        self.workers[identity] = worker
        self.sessions[p.session_of(identity)[0]] = identity
        service.add(worker)
        service.set_models(worker, ready["loaded_models"])
        return worker

    def set_weights(self, name: str, weights: dict[str, int]) -> ServiceRecord:
        """`cluster route`: the traffic split of service `name`, kept even before its first
        worker joins (a broker started with --weights)."""
        service = self.services.get(name)
        if service is None:
            service = self.services[name] = ServiceRecord(name, [], ServiceQueue(self.max_queue))
        service.set_weights(weights)
        return service

    def remove_worker(self, identity: bytes) -> WorkerRecord | None:
        worker = self.workers.pop(identity, None)
        if worker is not None:
            name = p.session_of(identity)[0]
            if self.sessions.get(name) == identity:
                del self.sessions[name]
            service = self.services.get(worker.service)
            if service is not None:
                service.remove(worker)
        return worker

    def service_of(self, worker: WorkerRecord) -> ServiceRecord:
        return self.services[worker.service]

    def expired_workers(self, now: float) -> list[WorkerRecord]:
        return [w for w in self.workers.values() if w.expires_at < now]

    def expired_frontends(self, now: float) -> list[FrontendRecord]:
        return [f for f in self.frontends.values() if f.expires_at < now]

    def touch_launcher(
        self, identity: bytes, meta: Mapping[str, Any], now: float, expiry_s: float
    ) -> tuple[LauncherRecord, bool]:
        """Record a launcher's LAUNCHER (as ``p.parse_launcher`` read it); returns the record
        and whether it is new."""
        fields = {f.name: meta.get(f.name, f.default) for f in LAUNCHER_REPORTED}
        record = self.launchers.get(identity)
        new = record is None
        if record is None:
            record = self.launchers[identity] = LauncherRecord(
                identity=identity, last_seen=now, expires_at=now, **fields
            )
        else:
            for name, value in fields.items():
                setattr(record, name, value)
        record.last_seen, record.expires_at = now, now + expiry_s
        return record, new

    def expire_launchers(self, now: float) -> list[LauncherRecord]:
        gone = [r for r in self.launchers.values() if r.expires_at < now]
        for record in gone:
            del self.launchers[record.identity]
        return gone

    def iter_services(self) -> Iterator[ServiceRecord]:
        return iter(self.services.values())

    def route_table(self) -> dict[str, Any]:
        """What frontends need to route: every service, its routes and live workers."""
        return {
            name: {
                "routes": s.routes,
                "workers": s.ready_workers(),
                "models": s.models,
                "headers": s.headers,
                "authorize": s.authorize,
                "request_schema": s.request_schema,
                "mcp_tool": s.mcp_tool,
            }
            for name, s in self.services.items()
            if s.routes
        }
