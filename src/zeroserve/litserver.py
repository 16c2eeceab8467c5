"""``zeroserve.LitServer``: a LitServe ``server.py`` runs on zeroserve by changing its import.

``LitServer(api_or_apis, ...).run(...)`` takes LitServe's arguments, gives
each its zeroserve meaning, and starts what ``cluster up`` starts: a broker
on private Unix sockets, a worker launcher per API and the HTTP frontend,
all stopped together on Ctrl-C or SIGTERM. The API objects themselves, as
``server.py`` made them (constructor arguments included), reach the worker
processes the way LitServe hands them over: each launcher is a ``spawn``
child of this process, so multiprocessing re-imports ``server.py`` there
(not its ``__main__`` block) and passes the objects through a pipe. Nothing
of it crosses a socket.

An argument with no equivalent here is refused with a line that says what
to do instead; none is silently dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import threading
import warnings
from dataclasses import replace
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

from zeroserve.common.errors import ConfigError
from zeroserve.common.link import LinkConfig
from zeroserve.common.logs import LEVELS, configure_logging
from zeroserve.common.tracing import check as check_tracing
from zeroserve.middlewares import frontend_flags as middleware_flags
from zeroserve.up import Up, UpConfig
from zeroserve.worker.config import WorkerConfig
from zeroserve.worker.devices import plan_devices
from zeroserve.worker.loader import GivenAPI, check_apis
from zeroserve.worker.openai_spec import openai_spec_for, route_of, spec_object_of

log = logging.getLogger(__name__)

#: A request budget standing for "no timeout" (LitServe's timeout=False or -1): a year.
NO_TIMEOUT_S = 365 * 24 * 3600.0

#: LitServe arguments that mean nothing here, with what to do instead; each is refused
#: unless it has its default value.
NO_EQUIVALENT: dict[str, tuple[Any, str]] = {
}  # fmt: skip
#: run() arguments of LitServe's that have no equivalent, as above.
RUN_NO_EQUIVALENT = {
    "api_server_worker_type": ("process", "the HTTP frontend always runs as processes "
                               "(num_api_servers sets how many)"),
    "pretty_logs": (False, "logs have one plain format: drop pretty_logs"),
}  # fmt: skip
#: Settings of an API that LitServe still accepts on the server, with LitServe's defaults;
#: one given another value is applied to every API.
API_SETTINGS = {
    "max_batch_size": None,
    "batch_timeout": 0.0,
    "stream": False,
    "api_path": None,
    "loop": None,
    "spec": None,
}


class LitServer:
    """Serve one or several LitAPI objects, as LitServe's ``LitServer`` does."""

    # LitServe's positional order is the contract a server.py relies on.
    def __init__(  # noqa: PLR0917
        self,
        lit_api: Any,
        accelerator: str = "auto",
        devices: int | str = "auto",
        workers_per_device: int | list[int] | dict[str, int] = 1,
        timeout: float | bool = 30,
        healthcheck_path: str = "/health",
        info_path: str = "/info",
        shutdown_path: str = "/shutdown",
        enable_shutdown_api: bool = False,
        model_metadata: dict[str, Any] | None = None,
        spec: Any = None,
        max_payload_size: int | str | None = None,
        track_requests: bool = False,
        callbacks: Any = None,
        middlewares: Any = None,
        loggers: Any = None,
        fast_queue: bool = False,
        disable_openapi_url: bool = False,
        max_batch_size: int | None = None,
        batch_timeout: float = 0.0,
        stream: bool = False,
        api_path: str | None = None,
        loop: Any = None,
        restart_workers: bool = False,
    ) -> None:
        """LitServe's arguments, in LitServe's order. ``fast_queue`` always holds here (queues
        are ZeroMQ's); without ``restart_workers`` a worker process that dies stops the server,
        as in LitServe; requests in flight are counted in ``/metrics``, and callbacks'
        ``on_request`` hears the count only with ``track_requests``, as in LitServe."""
        self.apis = list(lit_api) if isinstance(lit_api, (list, tuple)) else [lit_api]
        if not self.apis:
            raise ConfigError("LitServer needs at least one LitAPI")
        if enable_shutdown_api and not str(shutdown_path).startswith("/"):
            raise ConfigError(
                "shutdown_path must start with '/'. "
                "Please provide a valid api path like '/shutdown'"
            )
        self.shutdown_path = shutdown_path if enable_shutdown_api else None
        given = {
            "spec": spec,
            "max_batch_size": max_batch_size,
            "batch_timeout": batch_timeout,
            "stream": stream,
            "api_path": api_path,
            "loop": loop,
        }
        for name, value in given.items():
            if name in API_SETTINGS:
                if value != API_SETTINGS[name]:
                    for api in self.apis:
                        setattr(api, name, value)
            else:
                default, advice = NO_EQUIVALENT[name]
                if value != default:
                    raise ConfigError(f"LitServer({name}=...) has no equivalent here: {advice}")
        self.openapi = not disable_openapi_url
        self.track_requests = bool(track_requests)
        self.restart_workers = bool(restart_workers)
        _check_paths(self.apis, healthcheck_path, info_path)
        _check_specs(self.apis)
        self.accelerator = accelerator
        self.devices = _devices_wanted(devices)
        self.plans = _devices_per_api(self.apis, accelerator, self.devices, workers_per_device)
        self.timeout_s = _timeout_s(timeout)
        self.healthcheck_path = healthcheck_path
        self.info_path = info_path
        if model_metadata is not None:
            try:
                json.dumps(model_metadata)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"model_metadata must be JSON serialisable: {exc}") from None
        self.model_metadata = model_metadata
        self.middlewares, self.middleware_flags, self.max_body_bytes = middleware_flags(
            middlewares,
            any(_streams(api) for api in self.apis),
            _size_in_bytes(max_payload_size),
        )
        #: The info endpoint's "server" block, with the values given, as LitServe shows them.
        self.server_info = {
            "devices": _devices_shown(self.plans),
            "workers_per_device": workers_per_device,
            "timeout": timeout,
            "stream": {route_of(api): bool(getattr(api, "stream", False)) for api in self.apis},
            "max_payload_size": max_payload_size,
            "track_requests": self.track_requests,
        }
        self.callbacks = _as_list(callbacks)
        self.loggers = _as_list(loggers)

    def run(  # noqa: PLR0917 - LitServe's positional order
        self,
        host: str = "0.0.0.0",
        port: int | str = 8000,
        num_api_servers: int | None = None,
        log_level: str = "info",
        generate_client_file: bool = True,
        api_server_worker_type: str = "process",
        pretty_logs: bool = False,
        **others: Any,
    ) -> None:
        """Serve until Ctrl-C or SIGTERM; a setting that cannot work ends it with one line."""
        others = {
            "api_server_worker_type": api_server_worker_type,
            "pretty_logs": pretty_logs,
            **others,
        }
        level = str(log_level).upper()
        configure_logging(level if level in LEVELS else "INFO", "server")
        try:
            if level not in LEVELS:
                raise ConfigError(f"log_level must be one of {', '.join(LEVELS).lower()}")
            code = self._run(
                host,
                port,
                num_api_servers=num_api_servers,
                level=level,
                generate_client_file=generate_client_file,
                others=others,
            )
        except ConfigError as exc:
            log.error("%s", exc)
            raise SystemExit(2) from None
        if code:
            raise SystemExit(code)

    def _run(
        self,
        host: str,
        port: int | str,
        *,
        num_api_servers: int | None,
        level: str,
        generate_client_file: bool,
        others: dict[str, Any],
    ) -> int:
        for name, value in others.items():
            if name not in RUN_NO_EQUIVALENT:
                raise ConfigError(
                    f"LitServer.run() got an unexpected argument {name!r} "
                    "(no uvicorn settings apply here)"
                )
            default, advice = RUN_NO_EQUIVALENT[name]
            if value != default:
                raise ConfigError(f"LitServer.run({name}=...) has no equivalent here: {advice}")
        for name, path in (
            ("healthcheck_path", self.healthcheck_path),
            ("info_path", self.info_path),
        ):
            if not str(path).startswith("/"):
                raise ConfigError(f"LitServer({name}={path!r}): a path must start with '/'")
        check_tracing()
        given = [GivenAPI(api, self.callbacks, self.loggers, self) for api in self.apis]
        configs = [
            WorkerConfig(
                brokers=(),
                api=f"{type(api).__module__}:{type(api).__qualname__}",
                service=service,
                processes=len(plan),
                accelerator=self.accelerator,
                devices=self.devices,
                link=LinkConfig(log_level=level),
                restart=self.restart_workers,
            )
            for api, service, plan in zip(
                self.apis, _service_names(self.apis), self.plans, strict=True
            )
        ]
        settings = check_apis(configs, given)
        if generate_client_file:
            _write_client_file(int(port), settings[0].route)
        frontend_flags = [
            "--request-timeout", str(self.timeout_s),
            "--health-path", self.healthcheck_path,
            "--info-path", self.info_path,
            "--processes", str(num_api_servers or 1),
        ]  # fmt: skip
        if not self.openapi:
            frontend_flags.append("--no-openapi")
        if self.shutdown_path is not None:
            frontend_flags += ["--shutdown-path", self.shutdown_path]
        if self.max_body_bytes is not None:
            frontend_flags += ["--max-body", str(self.max_body_bytes)]
        frontend_flags += self.middleware_flags
        if self.model_metadata is not None:
            frontend_flags += ["--model-metadata", json.dumps(self.model_metadata)]
        frontend_flags += ["--server-info", json.dumps(self.server_info, default=str)]
        up = _InProcessUp(
            UpConfig(
                apis=tuple(c.api for c in configs),
                host=host,
                port=int(port),
                workers=None,
                frontend_flags=tuple(frontend_flags),
                link=LinkConfig(log_level=level),
                health_path=self.healthcheck_path,
                routes=tuple(route["path"] for s in settings for route in s.routes),
                shutdown_key=self._shutdown_key(port),
            ),
            configs,
            given,
        )
        return up.run()

    def _shutdown_key(self, port: int | str) -> str | None:
        """LitServe's rule: LIT_SHUTDOWN_API_KEY, or one made now and logged."""
        if self.shutdown_path is None:
            return None
        from zeroserve import server

        if not server.SHUTDOWN_API_KEY:
            server.SHUTDOWN_API_KEY = secrets.token_urlsafe(32)
            log.warning(
                "the shutdown API is enabled but LIT_SHUTDOWN_API_KEY is not set; "
                "generated shutdown API key: %s", server.SHUTDOWN_API_KEY,
            )  # fmt: skip
        log.info(
            "to shut the server down: curl -X POST http://localhost:%s%s "
            "-H 'Authorization: Bearer <SHUTDOWN_API_KEY>'", port, self.shutdown_path,
        )  # fmt: skip
        return server.SHUTDOWN_API_KEY


class _LauncherThread:
    """A worker launcher run as a thread of this process, watched and stopped like a
    ``Popen``: its worker processes are ``spawn`` children of this process, so the API
    objects reach them through multiprocessing's pipe, and no launcher process imports
    ``server.py`` (and what it imports) only to hand them on."""

    def __init__(self, config: WorkerConfig, given: GivenAPI) -> None:
        from zeroserve.worker.launcher import build_launcher

        self.args = f"worker ({config.service})"
        #: No process of its own: the kill of a stop that overruns goes to its workers.
        self.pid = os.getpid()
        self.returncode: int | None = None
        self.supervisor, self._link = build_launcher(config, given, embedded=True)
        self._thread = threading.Thread(target=self._run, name=self.args, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from zeroserve.worker.launcher import serve_launcher

        try:
            code = serve_launcher(self.supervisor, self._link)
        except Exception:
            log.exception("the worker launcher of %s failed", self.args)
            code = 1
        self.returncode = code

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, signum: int) -> None:
        self.supervisor.request_stop(signum)

    def wait(self, timeout: float | None = None) -> int | None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.returncode

    def kill(self) -> None:
        """Its worker processes and their process groups (one that has not yet made its own
        is killed all the same)."""
        for pid in self.supervisor.pids():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class _InProcessUp(Up):
    """``cluster up``, with launchers that get the API objects in hand."""

    def __init__(self, config: UpConfig, workers: list[WorkerConfig], given: list[GivenAPI]):
        super().__init__(config)
        self.workers = workers
        self.given = given

    def _start_launchers(self, common: list[str]) -> list[Any]:
        launchers = []
        for named, given in zip(self.workers, self.given, strict=True):
            config = replace(
                named,
                exit_on_setup_failure=True,
                brokers=(self.backend_endpoint,),
                link=self.config.link,
                drain_timeout_s=5.0,
            )
            try:
                ForkingPickler.dumps(given)
            except Exception as exc:
                raise ConfigError(
                    f"{type(given.api).__name__} cannot be handed to its worker processes "
                    f"({type(exc).__name__}: {exc}); create such state in setup(), which "
                    "runs in each of them"
                ) from None
            launchers.append(_LauncherThread(config, given))
        return launchers


def _check_paths(apis: list[Any], healthcheck_path: str, info_path: str) -> None:
    """Two APIs on one path, or one on the server's own, refused as LitServe refuses them."""
    reserved = {healthcheck_path: "LitServe healthcheck", info_path: "LitServe info"}
    taken: dict[str, str] = {}
    for api in apis:
        path = route_of(api)
        owner = taken.get(path) or reserved.get(path)
        if owner is not None:
            raise ConfigError(f"api_path {path} is already in use by {owner}")
        taken[path] = type(api).__name__


def _check_specs(apis: list[Any]) -> None:
    """A class its spec cannot serve, refused here as LitServe refuses it; a chat route that
    OpenAI's SDK will not call, warned of as LitServe warns."""
    for api in apis:
        if spec_object_of(api) is None:
            continue
        spec = openai_spec_for(api, type(api).__name__)
        spec.check(api)
        if spec.route != spec.default_route:
            warnings.warn(
                f"Custom API path detected: '{spec.route}'. The OpenAI SDK only calls "
                f"'{spec.default_route}'; send requests to '{spec.route}' directly, or keep "
                "the default",
                stacklevel=3,
            )


def _streams(api: Any) -> bool:
    """LitServe's ``any_stream`` test: the API streams, or its spec does."""
    return bool(
        getattr(api, "stream", False) or getattr(getattr(api, "spec", None), "stream", False)
    )


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _service_names(apis: list[Any]) -> list[str]:
    """The class name, made unique with the route when one class serves several paths."""
    names = [type(api).__name__ for api in apis]
    return [
        name if names.count(name) == 1 else f"{name}{_path_suffix(api)}"
        for name, api in zip(names, apis, strict=True)
    ]


def _path_suffix(api: Any) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", route_of(api)).rstrip("-")


def _devices_wanted(devices: Any) -> int | tuple[int, ...] | None:
    if devices == "auto":
        return None
    if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        return devices
    if isinstance(devices, (list, tuple)) and all(isinstance(d, int) for d in devices):
        return tuple(devices)
    raise ConfigError(f"devices must be 'auto', a count or a list of GPU indices, not {devices!r}")


def _devices_shown(plans: list[list[str]]) -> list[Any]:
    """The devices as LitServe's info lists them: ``["cpu"]``, else one list per device."""
    names = list(dict.fromkeys(name for plan in plans for name in plan))
    if names == ["cpu"]:
        return names
    return [[name if ":" in name else f"{name}:0"] for name in names]


def _devices_per_api(
    apis: list[Any], accelerator: str, wanted: int | tuple[int, ...] | None, workers_per_device: Any
) -> list[list[str]]:
    """The device of each worker process of each API, as LitServe assigns them: devices x
    workers per device, worker k on device k mod n (one device on the CPU)."""
    paths = [route_of(api) for api in apis]
    if isinstance(workers_per_device, int) and not isinstance(workers_per_device, bool):
        per_api = [workers_per_device] * len(apis)
    elif isinstance(workers_per_device, (list, tuple)):
        if len(workers_per_device) != len(apis):
            raise ConfigError(
                f"workers_per_device has {len(workers_per_device)} value(s) for {len(apis)} API(s)"
            )
        per_api = list(workers_per_device)
    elif isinstance(workers_per_device, dict):
        unknown = sorted(set(workers_per_device) - set(paths))
        if unknown:
            raise ConfigError(f"workers_per_device names unknown api_path(s): {unknown}")
        per_api = [workers_per_device.get(path, 1) for path in paths]
    else:
        raise ConfigError(
            "workers_per_device must be an integer, a list of them, or a dict by api_path"
        )
    for value in per_api:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"workers_per_device values must be integers >= 1, not {value!r}")
    cpu_devices = wanted if isinstance(wanted, int) else 1
    return [
        plan_devices(accelerator, wanted, count, None, default_processes=cpu_devices * count)
        for count in per_api
    ]


def _timeout_s(timeout: Any) -> float:
    if timeout is False or timeout == -1:
        return NO_TIMEOUT_S
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError(f"timeout must be seconds (> 0), -1 or False, not {timeout!r}")
    return float(timeout)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?B)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def _size_in_bytes(size: Any) -> int | None:
    """LitServe's max_payload_size: bytes, or a string such as "50MB"."""
    if size is None:
        return None
    if isinstance(size, (int, float)) and not isinstance(size, bool) and size > 0:
        return int(size)
    match = _SIZE.match(size) if isinstance(size, str) else None
    if match is None:
        raise ConfigError(f"max_payload_size must be bytes or a size like '50MB', not {size!r}")
    return max(1, int(float(match.group(1)) * _UNITS[(match.group(2) or "B").upper()]))


CLIENT_FILE = """\
# client.py: a first request to the server that zeroserve.LitServer started.
# LitServer.run(generate_client_file=False) stops it from writing this file.
import requests

response = requests.post("http://127.0.0.1:{port}{route}", json={{"input": 4.0}})
print(f"Status: {{response.status_code}}\\nResponse:\\n {{response.text}}")
"""


def _write_client_file(port: int, route: str) -> None:
    """As LitServe does: a client.py in the working directory, unless one is there."""
    path = Path.cwd() / "client.py"
    if path.exists():
        return
    try:
        path.write_text(CLIENT_FILE.format(port=port, route=route))
    except OSError as exc:
        log.warning("could not write %s: %s", path, exc)
