"""The CLI flags of the frontend's CORS and GZip (LitServer's CORSMiddleware and
GZipMiddleware), shared by ``cluster frontend`` and ``cluster up``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from zeroserve.frontend.cors import CorsPolicy
from zeroserve.frontend.gzip import GzipPolicy

#: Option name -> flag, in the order they are forwarded.
FLAGS = {
    "cors_origin": "--cors-origin",
    "cors_origin_regex": "--cors-origin-regex",
    "cors_method": "--cors-method",
    "cors_header": "--cors-header",
    "cors_credentials": "--cors-credentials",
    "cors_expose_header": "--cors-expose-header",
    "cors_max_age": "--cors-max-age",
    "gzip_min_size": "--gzip-min-size",
    "gzip_level": "--gzip-level",
}


def http_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the CORS and GZip flags to a command."""
    options = [
        click.option("--cors-origin", multiple=True, metavar="ORIGIN",
                     help="Answer CORS for this origin ('*' for any); repeatable. Any --cors-* "
                     "flag turns CORS on, with Starlette's CORSMiddleware's answers."),
        click.option("--cors-origin-regex", default=None, metavar="REGEX",
                     help="CORS origins matching this regular expression."),
        click.option("--cors-method", multiple=True, metavar="METHOD",
                     help="A method CORS allows ('*' for all); repeatable [default: GET]."),
        click.option("--cors-header", multiple=True, metavar="HEADER",
                     help="A request header CORS allows ('*' for any); repeatable."),
        click.option("--cors-credentials", is_flag=True, default=False,
                     help="CORS allows credentials."),
        click.option("--cors-expose-header", multiple=True, metavar="HEADER",
                     help="A response header CORS exposes; repeatable."),
        click.option("--cors-max-age", type=click.IntRange(min=0), default=None,
                     help="Seconds a browser may cache a preflight answer [default: 600]."),
        click.option("--gzip-min-size", type=click.IntRange(min=0), default=None, metavar="BYTES",
                     help="Compress whole answers of at least BYTES for clients that accept "
                     "gzip (Starlette's GZipMiddleware) [default: off]."),
        click.option("--gzip-level", type=click.IntRange(min=1, max=9), default=9,
                     show_default=True, help="The gzip compression level."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def take_http(options: dict[str, Any]) -> dict[str, Any]:
    """``FrontendConfig``'s cors and gzip from the flags (removed from ``options``)."""
    given = {name: options.pop(name) for name in FLAGS}
    cors = None
    if any(given[name] not in (None, (), False) for name in FLAGS if name.startswith("cors")):
        cors = CorsPolicy(
            allow_origins=given["cors_origin"],
            allow_methods=given["cors_method"] or ("GET",),
            allow_headers=given["cors_header"],
            allow_credentials=given["cors_credentials"],
            allow_origin_regex=given["cors_origin_regex"],
            expose_headers=given["cors_expose_header"],
            max_age=600 if given["cors_max_age"] is None else given["cors_max_age"],
        )
    gzip = None
    if given["gzip_min_size"] is not None:
        gzip = GzipPolicy(given["gzip_min_size"], given["gzip_level"])
    return {"cors": cors, "gzip": gzip}


def forwarded(options: dict[str, Any]) -> list[str]:
    """The same flags again, for the frontend that ``cluster up`` starts."""
    flags: list[str] = []
    for name, flag in FLAGS.items():
        value = options.pop(name)
        if value is True:
            flags.append(flag)
        elif isinstance(value, tuple):
            for item in value:
                flags += [flag, item]
        elif value is not None and value is not False and not (name == "gzip_level" and value == 9):
            flags += [flag, str(value)]
    return flags
