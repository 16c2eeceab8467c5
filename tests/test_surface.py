"""What ``import litserve`` offers, ``import zeroserve`` offers: name by name, module by
module, and the signatures a LitServe user calls, compared with litserve 0.2.19 itself."""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType

import pytest

#: LitServe's modules a user imports, by their path under the package.
MODULES = (
    "",
    ".api",
    ".server",
    ".specs",
    ".specs.base",
    ".specs.openai",
    ".specs.openai_embedding",
    ".callbacks",
    ".callbacks.base",
    ".loops",
    ".utils",
    ".mcp",
    ".test_examples",
    ".connector",
    ".loggers",
    ".middlewares",
)

#: LitServe's machinery: its FastAPI request handlers, its in-process loops and queues.
#: zeroserve's HTTP server is not FastAPI and its loops run in worker processes behind
#: ZeroMQ, so these have no counterpart (the README's migration table says so).
INTERNAL = {
    ".server": {
        "BaseRequestHandler",
        "RegularRequestHandler",
        "StreamingRequestHandler",
        "api_key_auth",
        "no_auth",
        "response_queue_to_buffer",
    },
    ".loops": {
        "BatchedLoop",
        "BatchedStreamingLoop",
        "LitLoop",
        "SingleLoop",
        "StreamingLoop",
        "_BaseLoop",
        "get_default_loop",
        "inference_worker",
    },
    ".utils": {
        "LoopResponseType",
        "ResponseBufferItem",
        "WorkerSetupStatus",
        "PickleableHTTPException",
        "azip",
        "call_after_stream",
        "dump_exception",
        "generate_random_zmq_address",
        "add_ssl_context_from_env",
    },
    ".specs.openai": {"shortuuid"},
}

#: Not there yet (issue 23): each name here fails this test once it exists, so that the
#: list only shrinks.
NOT_YET: dict[str, set[str]] = {}


def _public(module: ModuleType) -> set[str]:
    """A module's ``__all__``, else the public names it defines itself."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return set(names)
    return {
        name
        for name in dir(module)
        if not name.startswith("_")
        and getattr(getattr(module, name), "__module__", None) == module.__name__
    }


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@pytest.mark.parametrize("path", MODULES)
def test_every_name_a_litserve_user_imports_is_there(path: str) -> None:
    litserve = importlib.import_module("litserve" + path)
    zeroserve = _module("zeroserve" + path)
    wanted = _public(litserve) - INTERNAL.get(path, set())
    missing = {n for n in wanted if zeroserve is None or not hasattr(zeroserve, n)}
    assert missing == NOT_YET.get(path, set())


def _parameters(func: object) -> list[str]:
    """Names of the parameters a caller may pass by position, then the keyword ones."""
    return [n for n in inspect.signature(func).parameters if n not in ("self",)]


@pytest.mark.parametrize(
    "where",
    ["LitAPI.__init__", "LitServer.__init__", "LitServer.run", "Response.__init__"],
)
def test_the_signatures_a_user_calls_match(where: str) -> None:
    import litserve

    import zeroserve

    def find(package: ModuleType) -> object:
        owner, method = where.split(".")
        return getattr(getattr(package, owner), method)

    lit, zero = find(litserve), find(zeroserve)
    ours = [n for n in _parameters(zero) if n not in ("others", "kwargs")]
    theirs = [n for n in _parameters(lit) if n not in ("others", "kwargs")]
    assert ours[: len(theirs)] == theirs
    kinds = {n: p.kind for n, p in inspect.signature(zero).parameters.items()}
    assert all(kinds[n] == inspect.Parameter.POSITIONAL_OR_KEYWORD for n in theirs)


def test_callbacks_have_litserves_events() -> None:
    from litserve.callbacks import Callback as LitCallback
    from litserve.callbacks import EventTypes as LitEvents

    from zeroserve.callbacks import Callback, EventTypes

    assert {e.name: e.value for e in EventTypes} == {e.name: e.value for e in LitEvents}
    events = {n for n in dir(LitCallback) if n.startswith("on_")}
    assert events <= set(dir(Callback))


@pytest.mark.parametrize("path", [".specs.openai", ".specs.openai_embedding"])
def test_the_spec_models_have_litserves_fields(path: str) -> None:
    litserve = importlib.import_module("litserve" + path)
    zeroserve = importlib.import_module("zeroserve" + path)
    for name in _public(litserve) - INTERNAL.get(path, set()):
        theirs = getattr(litserve, name)
        fields = getattr(theirs, "model_fields", None)
        if not isinstance(fields, dict):
            continue
        ours = getattr(zeroserve, name).model_fields
        assert {k: (f.alias, f.is_required()) for k, f in ours.items()} == {
            k: (f.alias, f.is_required()) for k, f in fields.items()
        }, name


def test_configure_logging_sends_the_librarys_records_to_its_stream() -> None:
    import io
    import logging

    from zeroserve.utils import add_log_handler, configure_logging, set_log_level

    library = logging.getLogger("zeroserve")
    saved = (library.handlers[:], library.level, library.propagate)
    stream, extra = io.StringIO(), io.StringIO()
    try:
        configure_logging("INFO", format="%(name)s %(message)s", stream=stream)
        add_log_handler(logging.StreamHandler(extra))
        logging.getLogger("zeroserve.worker.loops.serving").info("hello")
        set_log_level("WARNING")
        logging.getLogger("zeroserve.worker.loops.serving").info("hidden")
    finally:
        library.handlers[:], library.level, library.propagate = saved
    assert stream.getvalue() == "zeroserve.worker.loops.serving hello\n"
    assert extra.getvalue() == "hello\n"


def test_every_package_is_installed() -> None:
    """A subpackage missing from pyproject's list works in an editable install and is
    absent from a real one (CI's)."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).resolve().parent.parent
    settings = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(settings["packages"])
    folders = {"zeroserve": root / "src" / "zeroserve"}
    folders.update({name: root / path for name, path in settings["package-dir"].items()})
    found = set()
    for name, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            found.add(".".join((name, *parts)))
    assert found <= listed, sorted(found - listed)
