"""The ``cluster`` command: one subcommand per process, and the tools around them.

Flags that several subcommands take are defined once below, so they are
spelled and checked the same everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import click

from zeroserve.broker.config import BrokerConfig
from zeroserve.common.errors import ConfigError, ZeroserveError
from zeroserve.common.exits import Exit
from zeroserve.common.link import LinkConfig
from zeroserve.common.logs import LEVELS, configure_logging
from zeroserve.common.protocol import DEFAULT_TIMEOUT_S
from zeroserve.common.runtime import batch_io_threads, tune_gc
from zeroserve.common.security import TOKEN_ENV, token_from_file
from zeroserve.common.snapshot import Snapshot
from zeroserve.common.supervisor import stop_with_parent
from zeroserve.common.tracing import check as check_tracing
from zeroserve.common.tracing import setup as setup_tracing
from zeroserve.frontend.config import FrontendConfig
from zeroserve.http_flags import forwarded, http_options, take_http
from zeroserve.worker.config import WorkerConfig
from zeroserve.worker.threads import refuse_disagreement

log = logging.getLogger(__name__)

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def default_of(config: type, name: str) -> Any:
    """A flag's default is its config's field: each default is written once."""
    return {f.name: f.default for f in dataclasses.fields(config)}[name]


LINK_FIELDS = tuple(f.name for f in dataclasses.fields(LinkConfig))


def take_link(options: dict[str, Any], *, create_token: bool = False) -> LinkConfig:
    """The link settings among a command's options, taken out of them (heartbeats, logging,
    the join token, CurveZMQ: the same for every process). A --token-file is read here; the
    broker's is made when it does not exist (`create_token`)."""
    taken = {name: options.pop(name) for name in LINK_FIELDS if name in options}
    token_file = options.pop("token_file", None)
    if token_file is not None:
        if taken.get("token") is not None:
            raise ConfigError("give --token or --token-file, not both")
        taken["token"] = token_from_file(token_file, create=create_token)
    return LinkConfig(**taken)


def _options(*decorators: Decorator) -> Decorator:
    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


_ENDPOINT = re.compile(r"^(?:tcp://(?:\[[0-9A-Fa-f:.]+\]|[^:/\s]+):(?:\d{1,5}|\*)|ipc://\S+)$")


def _endpoint(_ctx: Any, param: Any, value: Any) -> Any:
    """A ZeroMQ address (or several), checked here so that a wrong one is one line, not a
    traceback."""
    for one in value if isinstance(value, tuple) else (value,):
        if one is not None and not _ENDPOINT.match(one):
            raise click.BadParameter(
                f"{one!r} is not a ZeroMQ address: write tcp://HOST:PORT (or ipc://PATH)",
                param=param,
            )
    return value


def brokers_option(
    default: str | None, side: str, more: str = "", *, required: bool = True
) -> Decorator:
    """--broker, repeatable (a link to each broker); required where it has no default, unless
    the command finds one itself."""
    return click.option(
        "--broker",
        "brokers",
        multiple=True,
        required=default is None and required,
        default=(default,) if default is not None else (),
        show_default=default is not None,
        callback=_endpoint,
        help=f"A broker's {side} endpoint, tcp://HOST:PORT; repeat it for each broker{more}.",
    )


log_level_option = click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    default=default_of(LinkConfig, "log_level"),
    show_default=True,
    help="Log level (logs go to stderr).",
)
heartbeat_options = _options(
    click.option(
        "--heartbeat-interval",
        "heartbeat_interval_s",
        type=click.FloatRange(min=0.01, max=3600),
        default=default_of(LinkConfig, "heartbeat_interval_s"),
        show_default=True,
        help="Seconds between heartbeats.",
    ),
    click.option(
        "--heartbeat-liveness",
        type=click.IntRange(min=1, max=100),
        default=default_of(LinkConfig, "heartbeat_liveness"),
        show_default=True,
        help="Heartbeats missed before a peer counts as dead.",
    ),
)
request_timeout_option = click.option(
    "--request-timeout",
    "request_timeout_s",
    type=click.FloatRange(min=0.001),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds before a request is answered 504.",
)
#: The serving flags, by parameter name; `cluster up` hands them on to `cluster worker`.
SERVING_FLAGS = {
    "max_batch_size": "--max-batch-size",
    "batch_timeout_s": "--batch-timeout",
    "route": "--route",
    "stream": "--stream",
    "spec": "--spec",
    "callbacks": "--callback",
    "loggers": "--logger",
    "expose_errors": "--expose-errors",
    "version": "--version",
}
serving_options = _options(
    click.option(
        "--max-batch-size",
        type=click.IntRange(min=1, max=10_000),
        default=None,
        help="Largest batch given to predict [default: the API's max_batch_size, else 1].",
    ),
    click.option(
        "--batch-timeout",
        "batch_timeout_s",
        type=click.FloatRange(min=0, max=60),
        default=None,
        help="Seconds a batch waits to fill [default: the API's batch_timeout, else 0].",
    ),
    click.option(
        "--route",
        default=None,
        help="HTTP path of the service [default: the API's api_path, else /predict].",
    ),
    click.option(
        "--stream",
        is_flag=True,
        default=False,
        help="Stream answers piece by piece (predict yields) [default: the API's stream].",
    ),
    click.option(
        "--spec",
        type=click.Choice(["openai"]),
        default=None,
        help="Serve the API behind OpenAI-compatible endpoints.",
    ),
    click.option(
        "--callback",
        "callbacks",
        multiple=True,
        metavar="MODULE:ATTR",
        help="A callback object (or class) to add; may be repeated.",
    ),
    click.option(
        "--logger",
        "loggers",
        multiple=True,
        metavar="MODULE:ATTR",
        help="A logger object (or class) that receives self.log(key, value); may be repeated.",
    ),
    click.option(
        "--expose-errors",
        is_flag=True,
        default=False,
        help="Tell clients what your code raised (type and message) instead of LitServe's "
        "'Internal server error'; the log has the traceback either way.",
    ),
    click.option(
        "--version",
        default=None,
        metavar="LABEL",
        help="The version of its service the workers serve; every answer names it in "
        "X-Model-Version [default: the API's version attribute, else 1].",
    ),
)


def _split_text(text: str) -> dict[str, int]:
    """``1=90,2=10`` as {version: weight}, not yet checked as a whole."""
    weights: dict[str, int] = {}
    for part in text.split(","):
        label, sep, weight = part.strip().partition("=")
        if not sep or not weight.strip().isdigit():
            raise click.BadParameter(f"write VERSION=WEIGHT[,VERSION=WEIGHT...], not {text!r}")
        weights[label.strip()] = int(weight)
    return weights


def _checked(weights: dict[str, int]) -> dict[str, int]:
    """A split checked as the broker checks it."""
    from zeroserve.common.errors import ProtocolError
    from zeroserve.common.protocol import parse_weights

    try:
        return parse_weights(weights)
    except ProtocolError as exc:
        raise click.BadParameter(str(exc)) from None


def parse_weights_text(text: str) -> dict[str, int]:
    """``1=90,2=10`` as {version: weight}, checked as the broker checks it."""
    return _checked(_split_text(text))


def _broker_weights(_ctx: Any, _param: Any, value: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """--weights SERVICE:1=90,2=10, repeatable: one per service, or one per version of a
    service (the deploy files write one per version)."""
    weights: dict[str, dict[str, int]] = {}
    for one in value:
        service, sep, split = one.partition(":")
        if not sep or not service:
            raise click.BadParameter(f"write SERVICE:VERSION=WEIGHT,..., not {one!r}")
        weights.setdefault(service, {}).update(_split_text(split))
    return {service: _checked(split) for service, split in weights.items()}


def _parse_devices(_ctx: Any, _param: Any, value: str | None) -> int | tuple[int, ...] | None:
    """--devices N (how many GPUs) or --devices 0,2 (which)."""
    if value is None or value == "auto":
        return None
    try:
        parts = [int(p) for p in value.split(",") if p.strip()]
    except ValueError:
        raise click.BadParameter("give a count (2) or GPU indices (0,2)") from None
    if not parts or min(parts) < 0 or ("," not in value and parts[0] < 1):
        raise click.BadParameter("give a count of at least 1, or GPU indices of 0 or more")
    return tuple(parts) if "," in value else parts[0]


#: The device flags, by parameter name; `cluster up` hands them on to `cluster worker`.
DEVICE_FLAGS = {
    "accelerator": "--accelerator",
    "devices": "--devices",
    "workers_per_device": "--workers-per-device",
}
device_options = _options(
    click.option(
        "--accelerator",
        type=click.Choice(["auto", "cpu", "cuda", "gpu", "mps"]),
        default=None,
        help="Where worker processes run, as in LitServe: cuda where nvidia-smi lists GPUs, "
        "mps on Apple silicon with torch, else cpu [default: auto].",
    ),
    click.option(
        "--devices",
        callback=_parse_devices,
        default=None,
        metavar="N|LIST",
        help="How many GPUs (2) or which (0,2) [default: every one listed, within "
        "CUDA_VISIBLE_DEVICES].",
    ),
    click.option(
        "--workers-per-device",
        type=click.IntRange(min=1, max=1024),
        default=default_of(WorkerConfig, "workers_per_device"),
        show_default=True,
        help="Worker processes per device; worker k runs on device k mod n.",
    ),
)

threads_option = click.option(
    "--threads-per-process",
    type=int,
    default=default_of(WorkerConfig, "threads_per_process"),
    help="Threads each worker process's numeric libraries may start: OMP_NUM_THREADS, "
    "OPENBLAS_NUM_THREADS, MKL_NUM_THREADS, VECLIB_MAXIMUM_THREADS and NUMEXPR_NUM_THREADS "
    "in its environment, threadpoolctl and torch when present [default: max(1, cores // "
    "processes), the cores this process may use (its CPU affinity) shared by --processes, or "
    "--max-processes when autoscaling; any of those variables set in the environment wins].",
)

api_key_option = click.option(
    "--api-key",
    envvar="ZEROSERVE_API_KEY",
    default=None,
    help="Require 'Authorization: Bearer KEY' (or 'X-API-Key: KEY') on every route but the "
    "health check [env: ZEROSERVE_API_KEY]. LitServe's LIT_SERVER_API_KEY, in the "
    "environment, keeps LitServe's rules (see `cluster frontend --help`).",
)
curve_secret_option = click.option(
    "--curve-secret-key",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CurveZMQ: this process's secret key file (NAME.key_secret from `cluster keygen`).",
)
token_options = _options(
    click.option(
        "--token",
        envvar=TOKEN_ENV,
        default=None,
        show_envvar=True,
        help="Join with this token, the one in the broker's --token-file (CurveZMQ, derived "
        "from it). Prefer the environment variable: `ps` shows arguments.",
    ),
    click.option(
        "--token-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="Join with the token in FILE, a copy of the broker's (mode 0600).",
    ),
)
curve_client_options = _options(
    token_options,
    curve_secret_option,
    click.option(
        "--broker-public-key",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="CurveZMQ: the broker's public key file (NAME.key).",
    ),
)
api_option = click.option(
    "--api",
    metavar="MODULE:ATTR",
    help="The API class or instance: an importable module or a path/to/file.py, then :ATTR.",
)


def _run_guarded(func: Callable[[], int], *, serves: bool = False) -> None:
    """Turn our own errors into one line on stderr and a non-zero exit, never a traceback;
    a command that `serves` first checks that the traces the environment asks for can go."""
    try:
        if serves:
            check_tracing()
        code = func()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except ZeroserveError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zeroserve", prog_name="zeroserve")
def main() -> None:
    """zeroserve: serve model APIs over HTTP from a ZeroMQ cluster."""


@main.command()
@click.option(
    "--frontend-bind",
    default="tcp://*:5555",
    show_default=True,
    callback=_endpoint,
    help="Where frontends and `cluster status` connect.",
)
@click.option(
    "--backend-bind",
    default="tcp://*:5556",
    show_default=True,
    callback=_endpoint,
    help="Where workers connect.",
)
@click.option(
    "--max-queue",
    type=click.IntRange(min=1),
    default=default_of(BrokerConfig, "max_queue"),
    show_default=True,
    help="Requests waiting per service before new ones get 503.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=default_of(BrokerConfig, "max_attempts"),
    show_default=True,
    help="Workers that may try one request before it gets 502.",
)
@click.option(
    "--model-routing/--no-model-routing",
    default=True,
    show_default=True,
    help="Send a request naming a model (X-Model-Id) to a worker holding it first.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Peers join with the token in FILE (made, mode 0600, when FILE does not exist; a new "
    "file rotates it); give it to them as --token or ZEROSERVE_TOKEN.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Listen beyond loopback with neither a token nor keys: anyone who reaches the ports "
    "may join as a worker.",
)
@curve_secret_option
@click.option(
    "--authorized-keys",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="CurveZMQ: folder of the public keys (NAME.key) the broker admits.",
)
@click.option(
    "--weights",
    "start_weights",
    multiple=True,
    callback=_broker_weights,
    metavar="SERVICE:V=W,...",
    help="A service's traffic split to start with (as `cluster route` sets it), e.g. "
    "predictor:1=90,2=10; repeat it for each service.",
)
@heartbeat_options
@log_level_option
def broker(**options: Any) -> None:
    """Run the broker: routes requests from frontends to workers."""
    from zeroserve.broker.broker import Broker

    configure_logging(options["log_level"], "broker")
    stop_with_parent()
    batch_io_threads()

    def run() -> int:
        weights = options.pop("start_weights")
        config = BrokerConfig(
            link=take_link(options, create_token=True), weights=weights, **options
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        tracing = setup_tracing("broker")
        instance = Broker(config, tracing=tracing)
        try:
            instance.bind()
        except Exception as exc:
            raise ConfigError(f"cannot bind: {exc}") from exc
        tune_gc()
        try:
            instance.run(stop)
        finally:
            instance.close()
            if tracing is not None:
                tracing.shutdown()
        log.info("broker stopped")
        return 0

    _run_guarded(run, serves=True)


@main.command()
@brokers_option(
    None, "worker-side", " (every process registers with each, its capacity split between them)"
)
@api_option
@click.option(
    "--processes",
    type=click.IntRange(min=1, max=1024),
    default=None,
    help="Worker processes [default: one per physical core].",
)
@click.option(
    "--min-processes",
    type=click.IntRange(min=1, max=1024),
    default=None,
    help="Autoscaling: the fewest worker processes [default: 1 with --max-processes].",
)
@click.option(
    "--max-processes",
    type=click.IntRange(min=1, max=1024),
    default=None,
    help="Autoscaling: add a process while the service's work waits at the brokers, up to this.",
)
@click.option(
    "--scale-down-after",
    "scale_down_after_s",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Autoscaling: seconds a service must be idle before a process is drained and removed "
    "[default: 60].",
)
@click.option("--service", default=None, help="Service name [default: the API class's name].")
@serving_options
@click.option(
    "--capacity",
    type=click.IntRange(min=1, max=100_000),
    default=None,
    help="Requests one process may hold [default: two batches, and at least 8 for a sync API, "
    "256 for an async one, 64 for continuous batching].",
)
@threads_option
@click.option(
    "--drain-timeout",
    "drain_timeout_s",
    type=click.FloatRange(min=0),
    default=default_of(WorkerConfig, "drain_timeout_s"),
    show_default=True,
    help="Seconds a stopping process may spend finishing its work.",
)
@click.option(
    "--hang-grace",
    "hang_grace_s",
    type=click.FloatRange(min=0.1),
    default=default_of(WorkerConfig, "hang_grace_s"),
    show_default=True,
    help="Seconds a batch may run past all its deadlines before the process is recycled.",
)
@click.option(
    "--exit-on-setup-failure",
    is_flag=True,
    help=f"Stop (exit {Exit.SETUP_FAILED:d}) when a process's setup fails, instead of retrying "
    "with back-off.",
)
@click.option(
    "--device",
    default=None,
    help="One device for every process, passed to setup(device) as it is [default: from "
    "--accelerator, else cpu].",
)
@device_options
@curve_client_options
@heartbeat_options
@log_level_option
def worker(api: str | None, **options: Any) -> None:
    """Run worker processes on this host for one API."""
    from zeroserve.worker.launcher import run_launcher

    if not api:
        raise click.UsageError("Missing option '--api'.")
    configure_logging(options["log_level"], "worker")
    stop_with_parent()
    _run_guarded(
        lambda: run_launcher(WorkerConfig(api=api, link=take_link(options), **options)),
        serves=True,
    )


def _json_object(flag: str, value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        given = json.loads(value)
    except ValueError as exc:
        raise ConfigError(f"{flag} is not JSON: {exc}") from None
    if not isinstance(given, dict):
        raise ConfigError(f"{flag} must be a JSON object")
    return given


@main.command()
@brokers_option("tcp://127.0.0.1:5555", "frontend")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    default=default_of(FrontendConfig, "port"),
    show_default=True,
)
@click.option(
    "--processes",
    type=click.IntRange(min=1, max=256),
    default=default_of(FrontendConfig, "processes"),
    show_default=True,
    help="HTTP processes sharing the port.",
)
@click.option(
    "--max-body",
    "max_body_bytes",
    type=click.IntRange(min=1),
    default=default_of(FrontendConfig, "max_body_bytes"),
    show_default=True,
    help="Largest request body in bytes (413 above).",
)
@request_timeout_option
@click.option(
    "--idle-timeout",
    "idle_timeout_s",
    type=click.FloatRange(min=0.1),
    default=default_of(FrontendConfig, "idle_timeout_s"),
    show_default=True,
    help="Seconds a connection may idle or stall (headers, body) before it is closed.",
)
@click.option("--health-path", default="/health", show_default=True, help="The health check.")
@click.option(
    "--openapi/--no-openapi",
    default=True,
    show_default=True,
    help="Serve GET /openapi.json (LitServer's disable_openapi_url=True gives --no-openapi).",
)
@click.option(
    "--expect-route",
    "expected_routes",
    multiple=True,
    metavar="PATH",
    help="The health check says 'not ready' until a worker serves PATH; repeatable "
    "[default: it waits for every service that announced a route].",
)
@click.option("--info-path", default="/info", show_default=True, help="The cluster's info.")
@click.option(
    "--shutdown-path",
    default=None,
    help="LitServe's shutdown endpoint: a POST with 'Authorization: Bearer KEY' stops the "
    "cluster that started this frontend [env: ZEROSERVE_SHUTDOWN_KEY, ZEROSERVE_SHUTDOWN_PID].",
)
@click.option(
    "--model-metadata",
    default=None,
    metavar="JSON",
    help="A JSON object shown under 'model' in the info endpoint.",
)
@click.option(
    "--server-info",
    default=None,
    metavar="JSON",
    help="A JSON object shown under 'server' in the info endpoint (LitServer passes its "
    "settings) [default: the request timeout and the payload limit].",
)
@click.option(
    "--certfile",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Serve HTTPS with this certificate chain (PEM).",
)
@click.option(
    "--keyfile",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The certificate's private key (PEM), when --certfile does not hold it.",
)
@curve_client_options
@heartbeat_options
@api_key_option
@click.option(
    "--litserve-api-key",
    "lit_api_key",
    envvar="LIT_SERVER_API_KEY",
    default=None,
    help="LitServe's key, with LitServe's rules: 'X-API-Key: KEY' on every path, the health "
    "check included, except the routes of APIs that define authorize() "
    "[env: LIT_SERVER_API_KEY].",
)
@http_options
@log_level_option
def frontend(model_metadata: str | None, server_info: str | None, **options: Any) -> None:
    """Run the HTTP frontend."""
    from zeroserve.frontend.server import run_frontend

    configure_logging(options["log_level"], "frontend")
    stop_with_parent()

    def run() -> int:
        http = take_http(options)
        config = FrontendConfig(
            model_metadata=_json_object("--model-metadata", model_metadata),
            server_info=_json_object("--server-info", server_info),
            link=take_link(options),
            **http,
            **options,
        )
        return run_frontend(config)

    _run_guarded(run, serves=True)


@main.command()
@click.option(
    "--api",
    "apis",
    multiple=True,
    metavar="MODULE:ATTR",
    help="An API class or instance, as for `cluster worker`; repeat it to serve several "
    "side by side [default: the built-in demo].",
)
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address the HTTP frontend listens on."
)
@click.option(
    "--port",
    type=click.IntRange(min=1, max=65535),
    default=default_of(FrontendConfig, "port"),
    show_default=True,
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=1024),
    default=None,
    help="Worker processes [default: one per physical core].",
)
@threads_option
@serving_options
@device_options
@request_timeout_option
@heartbeat_options
@api_key_option
@http_options
@log_level_option
def up(apis: tuple[str, ...], **options: Any) -> None:
    """Run broker, workers and frontend on this machine (the built-in demo without --api)."""
    from zeroserve.up import Up, UpConfig
    from zeroserve.worker.loader import DEMO_API, check_apis

    configure_logging(options["log_level"], "up")
    serving = {key: options[key] for key in SERVING_FLAGS}
    worker_flags: list[str] = []
    for key, value in serving.items():
        if value is True:
            worker_flags.append(SERVING_FLAGS[key])
        elif isinstance(value, tuple):
            for item in value:
                worker_flags += [SERVING_FLAGS[key], item]
        elif value is not None and value is not False:
            worker_flags += [SERVING_FLAGS[key], str(value)]
    devices = options["devices"]
    if options["accelerator"] is not None:
        worker_flags += ["--accelerator", options["accelerator"]]
    if devices is not None:
        given = ",".join(map(str, devices)) + "," if isinstance(devices, tuple) else str(devices)
        worker_flags += ["--devices", given]
    if options["workers_per_device"] > 1:
        worker_flags += ["--workers-per-device", str(options["workers_per_device"])]
    threads = options["threads_per_process"]
    if threads is not None:
        worker_flags += ["--threads-per-process", str(threads)]
    specs = apis or (DEMO_API,)
    http_flags = forwarded(options)

    def run() -> int:
        # Check the APIs here, so that a mistake is one clear line before anything starts.
        devices_given = {key: options[key] for key in DEVICE_FLAGS}
        refuse_disagreement(threads)
        settings = check_apis(
            [
                WorkerConfig(
                    brokers=(), api=spec, threads_per_process=threads, **serving, **devices_given
                )
                for spec in specs
            ]
        )
        config = UpConfig(
            apis=specs,
            host=options["host"],
            port=options["port"],
            workers=options["workers"],
            worker_flags=tuple(worker_flags),
            frontend_flags=("--request-timeout", str(options["request_timeout_s"]), *http_flags),
            link=take_link(options),
            api_key=options["api_key"],
            routes=tuple(route["path"] for s in settings for route in s.routes),
        )
        return Up(config).run()

    _run_guarded(run, serves=True)


@main.command()
@brokers_option(
    None,
    "frontend",
    " [default: the newest `cluster up` running on this machine, else tcp://127.0.0.1:5555]",
    required=False,
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.01),
    default=3.0,
    show_default=True,
    help="Seconds to wait for the broker.",
)
@click.option("--watch", is_flag=True, help="Refresh the table in place until Ctrl-C.")
@click.option(
    "--interval",
    "interval_s",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@curve_client_options
@log_level_option
def status(brokers: tuple[str, ...], as_json: bool, timeout_s: float, **options: Any) -> None:
    """Show the cluster: workers, services, frontends, as each broker sees them."""
    from zeroserve.common.status_client import BrokerUnreachable, fetch_status
    from zeroserve.status import format_status, throughput
    from zeroserve.up import local_cluster

    configure_logging(options["log_level"], "status")
    if len(brokers) > 1 and options["watch"]:
        raise click.UsageError("--watch follows one broker; give one --broker")
    broker = brokers[0] if brokers else local_cluster() or "tcp://127.0.0.1:5555"

    def run() -> int:
        keys = take_link(options).client_keys()
        if len(brokers) <= 1:
            snapshot = fetch_status(broker, timeout_s, keys)
            if as_json:
                click.echo(json.dumps(snapshot, indent=2))
                return 0
            if not brokers:  # found, not given: say which cluster this is
                click.echo(f"broker {broker}")
            click.echo(format_status(snapshot))
            return 0
        # Several brokers: each as it sees the cluster (JSON: one entry per broker).
        answers: list[tuple[str, Snapshot | str]] = []
        for endpoint in brokers:
            try:
                answers.append((endpoint, fetch_status(endpoint, timeout_s, keys)))
            except BrokerUnreachable as exc:
                answers.append((endpoint, str(exc)))
        if as_json:
            entries = [
                {"endpoint": e, "error": a} if isinstance(a, str) else {"endpoint": e, **a}
                for e, a in answers
            ]
            click.echo(json.dumps(entries, indent=2))
        else:
            click.echo(
                "\n\n".join(
                    f"== {e}: {a}" if isinstance(a, str) else f"== {e}\n{format_status(a)}"
                    for e, a in answers
                )
            )
        return 1 if any(isinstance(a, str) for _, a in answers) else 0

    def watch() -> int:
        keys = take_link(options).client_keys()
        previous = None
        clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
        try:
            while True:
                snapshot = fetch_status(broker, timeout_s, keys)
                table = format_status(snapshot, throughput(previous, snapshot))
                click.echo(f"{clear}{table}\n\n(every {options['interval_s']:g} s; Ctrl-C stops)")
                previous = snapshot
                time.sleep(options["interval_s"])
        except KeyboardInterrupt:
            return 0

    _run_guarded(watch if options["watch"] else run)


def _each_broker(
    brokers: tuple[str, ...], options: dict[str, Any], ask: Callable[..., Any]
) -> Callable[[], int]:
    """Run `ask(endpoint, keys)` at every broker, one line each; exit 1 when one failed (the
    others did it)."""
    from zeroserve.up import local_cluster

    endpoints = brokers or (local_cluster() or "tcp://127.0.0.1:5555",)

    def run() -> int:
        keys = take_link(options).client_keys()
        failed = 0
        for endpoint in endpoints:
            try:
                click.echo(f"{endpoint}: {ask(endpoint, keys)}")
            except ZeroserveError as exc:
                failed += 1
                click.echo(f"{endpoint}: error: {exc}", err=True)
        return 1 if failed else 0

    return run


@main.command()
@click.argument("service")
@brokers_option(
    None,
    "frontend",
    " (set it at every one) [default: the newest `cluster up` running on this machine, else "
    "tcp://127.0.0.1:5555]",
    required=False,
)
@click.option(
    "--weights",
    metavar="V=W,...",
    default=None,
    help="The split of new requests between versions, e.g. 1=90,2=10.",
)
@click.option(
    "--newest",
    is_flag=True,
    help="Drop the split: the newest version with ready workers takes all new requests.",
)
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.01), default=3.0)
@curve_client_options
@log_level_option
def route(
    service: str, brokers: tuple[str, ...], weights: str | None, newest: bool, **options: Any
) -> None:
    """Split SERVICE's new requests between its versions, at every broker."""
    from zeroserve.common.status_client import fetch_status, set_weights

    configure_logging(options["log_level"], "route")
    if (weights is None) == (not newest):
        raise click.UsageError("give --weights V=W,... or --newest")
    split = parse_weights_text(weights) if weights is not None else {}
    timeout_s = options.pop("timeout_s")

    def ask(endpoint: str, keys: Any) -> str:
        set_weights(endpoint, service, split, timeout_s, keys)
        shown = ", ".join(f"version {v} {w}" for v, w in split.items())
        said = f"{service}: {shown or 'the newest version takes all'}"
        try:
            known = fetch_status(endpoint, timeout_s, keys)["services"].get(service)
        except ZeroserveError:  # the split is set; only the word on the name is missing
            return said
        if known is None or not known["workers"]:
            # Kept for when it joins (a broker may be set up first), but it may be a typo.
            said += " (kept; no worker of it has joined this broker yet)"
        return said

    _run_guarded(_each_broker(brokers, options, ask))


@main.command()
@click.argument("service")
@brokers_option(
    None,
    "frontend",
    " (tell every one) [default: the newest `cluster up` running on this machine, else "
    "tcp://127.0.0.1:5555]",
    required=False,
)
@click.option("--version", "version", required=True, metavar="LABEL", help="The version to drain.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.01), default=3.0)
@curve_client_options
@log_level_option
def drain(service: str, brokers: tuple[str, ...], version: str, **options: Any) -> None:
    """Retire a version of SERVICE: its workers finish what they hold, take nothing new, and
    stop (their launchers exit 0 once all their processes have)."""
    from zeroserve.common.protocol import VERSION_LABEL
    from zeroserve.common.status_client import retire

    configure_logging(options["log_level"], "drain")
    if not VERSION_LABEL.match(version):
        raise click.BadParameter("1 to 64 letters, digits and . _ + -", param_hint="--version")
    timeout_s = options.pop("timeout_s")

    def ask(endpoint: str, keys: Any) -> str:
        told = retire(endpoint, service, version, timeout_s, keys)
        return f"{service} version {version}: {told} worker(s) draining"

    _run_guarded(_each_broker(brokers, options, ask))


@main.command()
@click.argument("url")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=10_000),
    default=32,
    show_default=True,
    help="Connections kept busy at once.",
)
@click.option(
    "--duration",
    "duration_s",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds to measure (after a 1 s warm-up).",
)
@click.option(
    "--payload",
    type=click.File("rb"),
    default=None,
    help='File whose bytes are POSTed [default: {"input": 2}].',
)
@click.option("--content-type", default="application/json", show_default=True)
@click.option(
    "--client-processes",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Client processes sharing the connections.",
)
@click.option("--stream", is_flag=True, help="Expect streamed answers; report time to first chunk.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@log_level_option
def bench(url: str, payload: Any, as_json: bool, log_level: str, **options: Any) -> None:
    """POST to URL from many connections for a while; print throughput and latency."""
    from zeroserve.bench import BenchConfig, run_bench

    configure_logging(log_level, "bench")
    try:
        config = BenchConfig(
            url=url,
            concurrency=options["concurrency"],
            duration_s=options["duration_s"],
            payload=payload.read() if payload else BenchConfig.payload,
            content_type=options["content_type"],
            processes=options["client_processes"],
            stream=options["stream"],
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    progress = sys.stderr if sys.stderr.isatty() and not as_json else None
    summary = run_bench(config, progress).summary()
    if as_json:
        click.echo(json.dumps(summary))
        sys.exit(0 if summary["ok"] else 1)

    def ms(key: str) -> str:
        return "-" if summary.get(key) is None else f"{summary[key]} ms"

    click.echo(
        f"{summary['ok']} ok of {summary['requests']} in {summary['seconds']} s: "
        f"{summary['rps']} req/s, p50 {ms('p50_ms')}, p90 {ms('p90_ms')}, p99 {ms('p99_ms')}"
    )
    if "first_chunk_p50_ms" in summary:
        click.echo(f"first chunk: p50 {ms('first_chunk_p50_ms')}, p99 {ms('first_chunk_p99_ms')}")
    click.echo(f"statuses: {summary['statuses']}  errors: {summary['errors'] or 'none'}")
    if not summary["ok"]:
        click.echo(f"error: no request to {url} succeeded", err=True)
        sys.exit(1)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--name", required=True, help="Base name of the key files.")
@log_level_option
def keygen(directory: str, name: str, log_level: str) -> None:
    """Write a CurveZMQ key pair: DIRECTORY/NAME.key (public) and NAME.key_secret (secret)."""
    from zeroserve.common.security import create_keypair

    configure_logging(log_level, "keygen")

    def run() -> int:
        from pathlib import Path

        files = [Path(directory) / f"{name}{suffix}" for suffix in (".key", ".key_secret")]
        existing = [f for f in files if f.exists()]
        if existing:
            raise ConfigError(
                f"{existing[0]} exists; keygen never overwrites a key "
                "(remove it, or give another --name)"
            )
        public, secret = create_keypair(directory, name)
        click.echo(f"public key: {public}\nsecret key: {secret} (keep it private)")
        return 0

    _run_guarded(run)


if __name__ == "__main__":
    main()
