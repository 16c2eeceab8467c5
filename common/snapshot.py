"""The STATUS answer's schema: what a broker says of the cluster, as its readers get it.

A broker builds it (``broker.snapshot.build``); ``protocol.unpack_status`` checks it
against these records once, at the door, so that ``cluster status``, ``cluster up``, the
dashboard and ``/metrics`` read fields without guessing. To add a field, declare it in its
record here and fill it in ``broker.snapshot``: the check follows the declaration. A field
that an older broker of the same protocol does not send goes in a ``total=False`` base of
its record (``_WorkerStatusAdded``): checked when present, not required.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable
from typing import Any, TypedDict, cast

from zeroserve.common.errors import ProtocolError


class BrokerStatus(TypedDict):
    """The answering broker itself."""

    id: str
    version: str
    host: str
    pid: int
    uptime_s: float
    frontend_endpoint: str
    backend_endpoint: str
    requests_held: int


class _WorkerStatusAdded(TypedDict, total=False):
    """Fields of a worker's record that a broker may not send yet."""

    #: The version of its service it serves (``cluster worker --version``).
    model_version: str


class WorkerStatus(_WorkerStatusAdded):
    """One worker process as this broker knows it (a worker joins every broker)."""

    #: A digest of its identity (the identity itself would let a peer speak for it).
    id: str
    host: str
    pid: int
    service: str
    #: ``ready``, ``busy``, ``draining`` or ``unhealthy``.
    state: str
    device: str | None
    #: Its slots at this broker, those free, and the requests it holds from this broker.
    capacity: int
    free: int
    in_flight: int
    #: Requests it answered through this broker.
    done: int
    last_heartbeat_s: float
    uptime_s: float
    #: The plain values of its READY (api, loop, threads_per_process, max_models, ...).
    info: dict[str, Any]
    #: What its last heartbeat said of itself (model_hits, model_loads, ...).
    reported: dict[str, Any]
    #: The models it holds or is loading, when its API serves many.
    models: list[str]


class _ServiceStatusAdded(TypedDict, total=False):
    """Fields of a service's record that a broker may not send yet."""

    #: Each version with workers at this broker, oldest first, and how many of them take
    #: new work; the split set by ``cluster route`` (empty: none); the newest version that
    #: takes new work (None: none does).
    versions: dict[str, int]
    weights: dict[str, int]
    newest: str | None


class ServiceStatus(_ServiceStatusAdded):
    routes: list[str]
    workers: int
    ready: int
    queued: int
    in_flight: int
    model_routing: bool


class FrontendStatus(TypedDict):
    host: str
    pid: int
    last_heartbeat_s: float


class LauncherStatus(TypedDict):
    """A ``cluster worker`` launcher: what it runs and, when its processes keep failing, why."""

    host: str
    pid: int
    api: str
    service: str
    processes: int
    running: int
    problem: str
    min_processes: int
    max_processes: int
    threads_per_process: int
    thread_env: str
    last_heartbeat_s: float


class Snapshot(TypedDict):
    """One broker's STATUS answer."""

    broker: BrokerStatus
    workers: list[WorkerStatus]
    services: dict[str, ServiceStatus]
    frontends: list[FrontendStatus]
    launchers: list[LauncherStatus]
    counters: dict[str, int]


class MergedSnapshot(TypedDict):
    """Every live broker's snapshot in one, as a frontend's ``/metrics`` and dashboard show
    it: counters and queues summed, each worker, frontend and launcher once."""

    brokers: list[BrokerStatus]
    workers: list[WorkerStatus]
    services: dict[str, ServiceStatus]
    frontends: list[FrontendStatus]
    launchers: list[LauncherStatus]
    counters: dict[str, int]


def parse_snapshot(data: Any) -> Snapshot:
    """`data` (a decoded STATUS map) as a Snapshot; ProtocolError names the first field that
    does not fit its record."""
    _checker(Snapshot)(data, "status")
    return cast(Snapshot, data)


_Check = Callable[[Any, str], None]


def _fail(where: str, expected: str, value: Any) -> typing.NoReturn:
    raise ProtocolError(
        f"malformed status answer: {where} is {type(value).__name__}, not {expected}"
    )


@functools.cache
def _checker(kind: Any) -> _Check:
    """A function that checks a value against `kind` (a record, a list, a dict, a union or a
    plain type), made once per type from its declaration."""
    if typing.is_typeddict(kind):
        fields = {name: _checker(t) for name, t in typing.get_type_hints(kind).items()}
        required = kind.__required_keys__

        def check_record(value: Any, where: str) -> None:
            if not isinstance(value, dict):
                _fail(where, "a map", value)
            for name, check in fields.items():
                if name in value:
                    check(value[name], f"{where}.{name}")
                elif name in required:
                    raise ProtocolError(f"malformed status answer: {where} has no {name!r}")

        return check_record
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is list:
        item = _checker(args[0])

        def check_list(value: Any, where: str) -> None:
            if not isinstance(value, list):
                _fail(where, "a list", value)
            for i, element in enumerate(value):
                item(element, f"{where}[{i}]")

        return check_list
    if origin is dict:
        entry = _checker(args[1])

        def check_dict(value: Any, where: str) -> None:
            if not isinstance(value, dict):
                _fail(where, "a map", value)
            for key, element in value.items():
                entry(element, f"{where}[{key!r}]")

        return check_dict
    if origin in (typing.Union, types.UnionType):
        options = tuple(_checker(a) for a in args)

        def check_union(value: Any, where: str) -> None:
            for option in options:
                try:
                    option(value, where)
                    return
                except ProtocolError:
                    continue
            _fail(where, " or ".join(getattr(a, "__name__", str(a)) for a in args), value)

        return check_union
    if kind is Any:
        return lambda value, where: None
    accepted: tuple[type, ...] = (int, float) if kind is float else (kind,)

    def check_plain(value: Any, where: str) -> None:
        if not isinstance(value, accepted) or (kind is int and isinstance(value, bool)):
            _fail(where, kind.__name__, value)

    return check_plain
