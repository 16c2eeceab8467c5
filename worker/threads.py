"""How many threads a worker process's numeric libraries may start: its share of the cores.

OpenBLAS, MKL, OpenMP and friends start one thread per core in every process;
N worker processes doing so run N x cores threads on `cores` cores, and they
spin against each other (measured: 5-15x fewer requests per second for a
numpy model). The launcher works out each process's share and puts it in the
thread variables of the environment its processes start with, so that a
library reads it when it loads, whenever the user's module is imported; after
setup, threadpoolctl (when installed) and torch (when imported) are told too.
A thread variable the user set wins: then zeroserve sets none of them.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from zeroserve.common.errors import ConfigError
from zeroserve.common.supervisor import apply_environment

log = logging.getLogger(__name__)

#: The variables by which OpenMP, OpenBLAS, MKL, Accelerate and numexpr size their pools.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
#: Set by the launcher for its processes: the number `threads_per_process()` returns.
THREADS_ENV = "ZEROSERVE_THREADS_PER_PROCESS"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def user_settings(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The thread variables set in the environment, by the user."""
    return {name: environ[name] for name in THREAD_VARIABLES if environ.get(name, "").strip()}


def share(processes: int, given: int | None) -> int | None:
    """Threads for each of a launcher's `processes`: `given`, else max(1, cores // processes);
    None when the environment sets a thread variable, which then governs."""
    refuse_disagreement(given)
    if user_settings():
        return None
    return given or max(1, usable_cores() // processes)


def refuse_disagreement(given: int | None) -> None:
    """A --threads-per-process that a thread variable of the environment contradicts would
    do nothing: it is refused."""
    if given is None:
        return
    for name, value in user_settings().items():
        if value.strip() != str(given):
            raise ConfigError(
                f"--threads-per-process {given} and {name}={value} in the environment "
                "disagree; give one of them"
            )


def limit_environment(threads: int | None) -> None:
    """Before the user's module is imported: the thread variables say `threads` (None: the
    user's are kept as they are), and THREADS_ENV the number in effect."""
    apply_environment(thread_environment(threads))


def thread_environment(
    threads: int | None, environ: Mapping[str, str] = os.environ
) -> dict[str, str | None]:
    """What ``limit_environment`` changes in `environ` (None: a variable it removes), for a
    launcher that hands it to its processes without changing its own environment."""
    changes: dict[str, str | None] = {}
    if threads is not None:
        for name in THREAD_VARIABLES:
            if not environ.get(name, "").strip():
                changes[name] = str(threads)
    in_effect = threads if threads is not None else _user_number(environ)
    changes[THREADS_ENV] = None if in_effect is None else str(in_effect)
    return changes


def limit_pools(threads: int) -> None:
    """After setup: the thread pools already loaded get `threads` too, for a library that
    was loaded before the environment said so or does not read it."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        threadpool_limits(limits=threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def threads_per_process() -> int:
    """The threads this worker process should use: give it to a library that reads none of
    the thread variables, such as ONNX Runtime's ``SessionOptions.intra_op_num_threads``.
    Outside a worker process, what the environment's thread variables say, else every
    usable core."""
    value = os.environ.get(THREADS_ENV, "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return _user_number() or usable_cores()


def environment_shown(environ: Mapping[str, str] = os.environ) -> str:
    """The thread variables in effect, for ``cluster status``."""
    return " ".join(f"{name}={value}" for name, value in user_settings(environ).items())


def _user_number(environ: Mapping[str, str] = os.environ) -> int | None:
    """The first of the user's thread variables that is a count (OMP_NUM_THREADS first)."""
    for value in user_settings(environ).values():
        if value.strip().isdigit() and int(value) > 0:
            return int(value)
    return None
