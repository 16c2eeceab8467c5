"""The installed version of zeroserve, announced by every process."""

from __future__ import annotations

import functools


@functools.cache
def version() -> str:
    """Read from the installed package's metadata when first asked: importlib.metadata costs
    every process that imports it tens of milliseconds of its start."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("zeroserve")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0.0.0+unknown"
