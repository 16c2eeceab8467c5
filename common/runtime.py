"""Interpreter settings for the long-running processes (broker, frontend, worker)."""

from __future__ import annotations

import gc

#: Allocations (minus frees) between young-generation collections; Python's default is 700.
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Call once start-up is over (modules imported, the model set up).

    What start-up made lives as long as the process: frozen, the collector
    never walks it again. A request makes many short-lived objects and few
    cycles, so the young generation is collected less often. Measured on
    the benchmark chain: about 4% more requests per second, p99 a little lower.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
