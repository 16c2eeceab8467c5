"""Interpreter settings of the long-running processes."""

from __future__ import annotations

import subprocess
import sys

from zeroserve.common.runtime import GC_YOUNG_THRESHOLD


def test_tune_gc_freezes_start_up_and_collects_the_young_less_often() -> None:
    code = (
        "import gc; from zeroserve.common.runtime import tune_gc; "
        "before = gc.get_threshold(); tune_gc(); after = gc.get_threshold(); "
        "print(gc.get_freeze_count() > 0, after[0], after[1:] == before[1:])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", str(GC_YOUNG_THRESHOLD), "True"]
