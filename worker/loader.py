"""Finding the user's API object from ``MODULE:ATTR``, and the settings it is served with."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zeroserve.common import protocol as p
from zeroserve.common.errors import ConfigError
from zeroserve.worker.api import inherits_default, is_async, yields
from zeroserve.worker.config import WorkerConfig
from zeroserve.worker.hooks import Hooks
from zeroserve.worker.loops import LoopKind
from zeroserve.worker.models import DEFAULT_MAX_MODELS
from zeroserve.worker.openai_spec import openai_spec_for, spec_object_of

#: Fewest requests one worker process holds by default, by loop kind: a sync API runs one
#: batch at a time (the next waits in the socket), an async one runs every request it holds
#: at once, a continuous one keeps sequences waiting to join its batch.
#: What a process holds at least. A sync process holds two batches (one running, the next
#: forming), and at least 4 so that a fast predict does not wait on the broker's hop
#: (measured: 2 cost a one-worker trivial API a third of its throughput), and no more, so
#: waiting work stays at the broker, where any free process may take it and the scaler
#: sees it.
MIN_CAPACITY = {LoopKind.BATCHING: 4, LoopKind.ASYNC: 256, LoopKind.CONTINUOUS: 64}
#: A sync worker whose requests take less than this each holds twice its capacity: what it
#: holds still starts within milliseconds, and the broker's hop no longer idles it.
FAST_REQUEST_S = 0.001


def capacity_now(settings: ApiSettings, fixed: bool, seconds_per_request: float | None) -> int:
    """What a worker process may hold now: its capacity, doubled for a sync API whose
    requests are measured fast (`fixed`: --capacity was given, and holds)."""
    if fixed or settings.kind is not LoopKind.BATCHING or seconds_per_request is None:
        return settings.capacity
    return settings.capacity * 2 if seconds_per_request < FAST_REQUEST_S else settings.capacity


#: What a step-style API implements, besides step itself.
STEP_METHODS = ("add_request", "has_capacity", "has_active_requests")

DEMO_API = "zeroserve.worker.demo:SquareAPI"


def load_object(spec: str, what: str = "--api") -> Any:
    """Import ``module:attr`` or ``path/to/file.py:attr``; a class is created with no arguments."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{what} must look like MODULE:ATTR or path/to/file.py:ATTR, not {spec!r}"
        )
    module = _import(module_name)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{module_name} has no attribute {attr!r}") from None
    if inspect.isclass(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise ConfigError(f"could not create {attr}(): {type(exc).__name__}: {exc}") from exc
    return obj


def load_api(spec: str) -> Any:
    """The user's API object, checked to have a ``predict`` (or a ``step``) of its own."""
    obj = load_object(spec)
    if not (_implements(obj, "predict") or _implements(obj, "step")):
        raise ConfigError(f"{spec} does not implement predict")
    return obj


def _implements(api: Any, method: str) -> bool:
    func = getattr(api, method, None)
    return callable(func) and not inherits_default(func)


def continuous_loop_of(api: Any) -> Any:
    """The API's ``ContinuousBatchingLoop`` (zeroserve's or LitServe's, told by class name so
    that litserve need not be imported), or None."""
    # LitServe keeps it in ``_loop``; its ``loop`` property would build a default loop.
    loop = vars(api).get("_loop") if hasattr(api, "__dict__") else None
    if loop is None or isinstance(loop, str):
        loop = getattr(api, "loop", None)
    names = {cls.__name__ for cls in type(loop).__mro__}
    return loop if "ContinuousBatchingLoop" in names else None


def uses_default_steps(api: Any) -> bool:
    """A continuous API in LitServe's default variant (predict + has_finished), not ``step``."""
    loop = continuous_loop_of(api)
    default = "DefaultContinuousBatchingLoop" in {c.__name__ for c in type(loop).__mro__}
    return default or not _implements(api, "step")


def loop_kind(api: Any, name: str, stream: bool) -> LoopKind:
    """Which loop serves the API, or a ConfigError naming what is wrong with it."""
    loop = continuous_loop_of(api)
    if loop is not None:
        if not stream:
            raise ConfigError(f"{name} uses ContinuousBatchingLoop, which needs stream=True")
        if not uses_default_steps(api):
            missing = [m for m in STEP_METHODS if not _implements(api, m)]
            if missing:
                raise ConfigError(
                    f"{name} implements step but not {', '.join(missing)} "
                    f"(ContinuousBatchingLoop needs {', '.join(STEP_METHODS)} and step)"
                )
        elif not (_implements(api, "predict") and callable(getattr(api, "has_finished", None))):
            raise ConfigError(
                f"{name} uses ContinuousBatchingLoop without step, so it needs "
                "predict(inputs, generated_sequences) and "
                "has_finished(uid, token, max_sequence_length)"
            )
        return LoopKind.CONTINUOUS
    if _implements(api, "step") and not _implements(api, "predict"):
        raise ConfigError(
            f"{name} implements step: set loop = ContinuousBatchingLoop() to serve it "
            "with continuous batching"
        )
    if is_async(api.predict):
        return LoopKind.ASYNC
    if getattr(api, "enable_async", False) is True:
        raise ConfigError(f"{name}.enable_async is True, so predict must be async (async def)")
    return LoopKind.BATCHING


@dataclass
class GivenAPI:
    """An API object handed over whole (``zeroserve.LitServer``) instead of named by
    ``MODULE:ATTR``, with the callbacks and loggers its server was given."""

    api: Any
    callbacks: list[Any] = field(default_factory=list)
    loggers: list[Any] = field(default_factory=list)
    #: The LitServer, which the server's callback events receive.
    server: Any = None


def load_hooks(api: Any, config: WorkerConfig, given: GivenAPI | None = None) -> Hooks:
    """The API's own ``callbacks``/``loggers`` attributes, its server's, then the flags'."""
    callbacks = list(getattr(api, "callbacks", None) or [])
    callbacks += given.callbacks if given is not None else []
    callbacks += [load_object(s, "--callback") for s in config.callbacks]
    loggers = list(getattr(api, "loggers", None) or [])
    loggers += given.loggers if given is not None else []
    loggers += [load_object(s, "--logger") for s in config.loggers]
    for logger in loggers:
        if not callable(getattr(logger, "process", None)):
            raise ConfigError(f"logger {type(logger).__name__} has no process(key, value) method")
    return Hooks(api, callbacks, loggers, given.server if given is not None else None)


def _import(module_name: str) -> Any:
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        path = Path(module_name).resolve()
        if not path.is_file():
            raise ConfigError(f"no such file: {module_name}")
        name = "zeroserve_user_" + path.stem
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import {module_name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        if str(path.parent) not in sys.path:
            sys.path.append(str(path.parent))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise ConfigError(
                f"importing {module_name} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return module
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"no module named {module_name!r} (searched {cwd} too)") from None
        raise ConfigError(f"importing {module_name} failed: {exc}") from exc
    except Exception as exc:
        raise ConfigError(f"importing {module_name} failed: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class ApiSettings:
    """How one API object is served: its flags applied over its own attributes, checked."""

    service: str
    routes: list[dict[str, Any]]
    max_batch_size: int
    batch_timeout_s: float
    stream: bool
    capacity: int
    #: Which loop serves it: a key of MIN_CAPACITY (one class each, see worker/process.py).
    kind: LoopKind = LoopKind.BATCHING
    #: The spec object wrapping the API, or None.
    spec: Any = None
    models: list[str] = field(default_factory=list)
    #: Models a process holds at once when the API defines ``load_model`` (0: it does not).
    max_models: int = 0
    #: The version of the service it serves.
    version: str = "1"

    @property
    def route(self) -> str:
        return self.routes[0]["path"]


def resolve_settings(api: Any, config: WorkerConfig) -> ApiSettings:
    """Apply the flags over the API's attributes and check the result; every refusal is clear."""

    def pick(flag: Any, attr: str, default: Any) -> Any:
        return flag if flag is not None else getattr(api, attr, default)

    name = type(api).__name__
    max_batch_size = pick(config.max_batch_size, "max_batch_size", 1)
    batch_timeout_s = pick(config.batch_timeout_s, "batch_timeout", 0.0)
    stream = config.stream or bool(getattr(api, "stream", False))
    if (
        not isinstance(max_batch_size, int)
        or isinstance(max_batch_size, bool)
        or max_batch_size < 1
    ):
        raise ConfigError(
            f"{name}.max_batch_size must be an integer of at least 1, not {max_batch_size!r}"
        )
    if not isinstance(batch_timeout_s, (int, float)) or batch_timeout_s < 0:
        raise ConfigError(
            f"{name}.batch_timeout must be a number of seconds >= 0, not {batch_timeout_s!r}"
        )
    service = config.service or name
    spec = None
    models: list[str] = []
    if config.spec == "openai" or spec_object_of(api) is not None:
        spec = openai_spec_for(api, service, config.route)
        spec.max_batch_size = max_batch_size
        spec.check(api)
        stream = spec.stream
        kind = loop_kind(api, name, stream)
        routes = spec.routes()
        models = [service]
    else:
        route = pick(config.route, "api_path", "/predict")
        if not isinstance(route, str) or not route.startswith("/"):
            raise ConfigError(f"{name}.api_path must start with '/', not {route!r}")
        routes = [{"path": route, "methods": ["POST"]}]
        kind = loop_kind(api, name, stream)
        predict_yields = kind is LoopKind.CONTINUOUS or yields(api.predict)
        if stream and not predict_yields:
            raise ConfigError(f"{name}.stream is True, so predict must yield its output")
        if predict_yields and not stream:
            raise ConfigError(
                f"{name}.predict is a generator, which needs stream=True (or the --stream flag)"
            )
        encode = getattr(api, "encode_response", None)
        if (
            stream
            and kind is not LoopKind.CONTINUOUS
            and encode is not None
            and not inherits_default(encode)
            and not yields(encode)
        ):
            raise ConfigError(f"{name}.stream is True, so encode_response must be a generator too")
    max_models = models_limit(api, name, kind)
    # Enough that the next requests already wait in the worker's socket while a batch runs:
    # the batching loop then takes several per wake-up.
    capacity = config.capacity or max(MIN_CAPACITY[kind], 2 * max_batch_size)
    return ApiSettings(
        service,
        routes,
        max_batch_size,
        float(batch_timeout_s),
        stream,
        capacity,
        kind,
        spec,
        models,
        max_models,
        version_of(api, name, config.version),
    )


def version_of(api: Any, name: str, flag: str | None) -> str:
    """--version, else the API's ``version`` attribute (when not None), else "1"; a label safe
    in a header."""
    given = flag if flag is not None else getattr(api, "version", None)
    if given is None:
        return "1"
    label = str(given) if isinstance(given, (str, int, float)) else ""
    if not p.VERSION_LABEL.match(label):
        where = "--version" if flag is not None else f"{name}.version"
        raise ConfigError(f"{where} must be 1 to 64 letters, digits and . _ + -, not {given!r}")
    return label


def models_limit(api: Any, name: str, kind: LoopKind) -> int:
    """``max_models_per_worker`` of an API that serves many models (``load_model``), checked;
    0 for one that does not."""
    load = getattr(api, "load_model", None)
    limit = getattr(api, "max_models_per_worker", None)
    if load is None:
        if limit is not None:
            raise ConfigError(f"{name}.max_models_per_worker is set, but it has no load_model")
        if getattr(api, "unload_model", None) is not None:
            raise ConfigError(f"{name}.unload_model is defined, but it has no load_model")
        return 0
    if not callable(load):
        raise ConfigError(f"{name}.load_model must be a method taking a model id")
    unload = getattr(api, "unload_model", None)
    if unload is not None and not callable(unload):
        raise ConfigError(f"{name}.unload_model must be a method taking a model id and model")
    if kind is LoopKind.CONTINUOUS:
        raise ConfigError(f"{name}: load_model is not supported with continuous batching")
    limit = DEFAULT_MAX_MODELS if limit is None else limit
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ConfigError(
            f"{name}.max_models_per_worker must be an integer of at least 1, not {limit!r}"
        )
    return limit


def prepare_api(api: Any, settings: ApiSettings) -> None:
    """Tell the API object what it is served with, as LitServe does before ``setup``."""
    for attr, value in (
        ("max_batch_size", settings.max_batch_size),
        ("batch_timeout", settings.batch_timeout_s),
        ("stream", settings.stream),
    ):
        with contextlib.suppress(AttributeError):
            setattr(api, attr, value)
    pre_setup = getattr(api, "pre_setup", None)
    if callable(pre_setup):
        pre_setup(spec=None)


def check_apis(
    configs: list[WorkerConfig], given: list[GivenAPI] | None = None
) -> list[ApiSettings]:
    """Load and check the APIs served side by side (`given`: objects already in hand), and
    refuse two that claim one route, before any process starts."""
    claimed: dict[str, str] = {}
    settings: list[ApiSettings] = []
    for i, config in enumerate(configs):
        handed = given[i] if given is not None else None
        api = handed.api if handed is not None else load_api(config.api)
        resolved = resolve_settings(api, config)
        load_hooks(api, config, handed)
        for route in resolved.routes:
            other = claimed.setdefault(route["path"], resolved.service)
            if other != resolved.service:
                raise ConfigError(
                    f"{other} and {resolved.service} both serve {route['path']}: "
                    "give one of them another api_path (or --route)"
                )
        if resolved.service in {s.service for s in settings}:
            raise ConfigError(f"two APIs are named {resolved.service}: give one another --service")
        settings.append(resolved)
    return settings
