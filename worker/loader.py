"""Finding the user's API object from ``MODULE:ATTR``, and the settings it is served with."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zeroserve.common.errors import ConfigError
from zeroserve.worker.api import LitAPI
from zeroserve.worker.config import WorkerConfig

DEMO_API = "zeroserve.worker.demo:SquareAPI"


def load_api(spec: str) -> Any:
    """Import ``module:attr`` (or ``path/to/file.py:attr``) and return the API object.

    A class is instantiated with no arguments; an instance is used as it is.
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--api must look like MODULE:ATTR or path/to/file.py:ATTR, not {spec!r}")
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
    predict = getattr(obj, "predict", None)
    if not callable(predict) or getattr(predict, "__func__", None) is LitAPI.predict:
        raise ConfigError(f"{spec} does not implement predict")
    return obj


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
    route: str
    max_batch_size: int
    batch_timeout_s: float
    stream: bool
    capacity: int


def resolve_settings(api: Any, config: WorkerConfig) -> ApiSettings:
    def pick(flag: Any, attr: str, default: Any) -> Any:
        return flag if flag is not None else getattr(api, attr, default)

    max_batch_size = pick(config.max_batch_size, "max_batch_size", 1)
    batch_timeout_s = pick(config.batch_timeout_s, "batch_timeout", 0.0)
    route = pick(config.route, "api_path", "/predict")
    stream = bool(getattr(api, "stream", False))
    name = type(api).__name__
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
    if not isinstance(route, str) or not route.startswith("/"):
        raise ConfigError(f"{name}.api_path must start with '/', not {route!r}")
    if stream:
        raise ConfigError(f"{name}.stream=True: streaming is not supported by this version yet")
    if inspect.isgeneratorfunction(api.predict) or inspect.isasyncgenfunction(api.predict):
        raise ConfigError(f"{name}.predict is a generator, which needs stream=True")
    capacity = config.capacity or max(4, 2 * max_batch_size)
    service = config.service or name
    return ApiSettings(service, route, max_batch_size, float(batch_timeout_s), stream, capacity)
