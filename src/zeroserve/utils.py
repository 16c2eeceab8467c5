"""``litserve.utils`` under zeroserve's name: the helpers a model author calls."""

from __future__ import annotations

import importlib.util
import os
import pdb
import sys

from zeroserve.worker.api import LitAPIStatus

__all__ = ["LitAPIStatus", "is_package_installed", "set_trace", "set_trace_if_debug"]


def is_package_installed(package_name: str) -> bool:
    return importlib.util.find_spec(package_name) is not None


class _WorkerPdb(pdb.Pdb):
    """pdb in a worker process, whose standard input is not the terminal's."""

    def interaction(self, *args: object, **kwargs: object) -> None:
        stdin = sys.stdin
        try:
            with open("/dev/stdin") as sys.stdin:
                super().interaction(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            sys.stdin = stdin


def set_trace() -> None:
    """Stop in the debugger here, also inside a worker process."""
    _WorkerPdb().set_trace(sys._getframe().f_back)


def set_trace_if_debug(
    debug_env_var: str = "LITSERVE_DEBUG", debug_env_var_value: str = "1"
) -> None:
    """``set_trace()`` when the environment variable has that value."""
    if os.environ.get(debug_env_var) == debug_env_var_value:
        set_trace()
