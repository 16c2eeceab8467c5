"""The exit codes that say more than "failed", decided once.

A supervisor does not restart a process that ended with a final one (a broker's refusal, a
setup that fails when asked to stop on it), restarts a hung one at once, and ``cluster up``
says what each meant.
"""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    #: A worker process whose batch ran past all its deadlines (its launcher starts another).
    HUNG = 75
    #: A worker process drained for good (``cluster drain``): done, not restarted; its
    #: launcher exits 0 once every process has.
    DRAINED = 76
    #: A broker refused the process (a route taken, another protocol version): final.
    REFUSED = 77
    #: The API's setup failed in a worker process (final under --exit-on-setup-failure).
    SETUP_FAILED = 78


#: Each code's meaning, as the end of "<process> ...".
MEANINGS: dict[int, str] = {
    Exit.HUNG: "hung past all its requests' deadlines",
    Exit.DRAINED: "drained for good (cluster drain)",
    Exit.REFUSED: "was refused by the broker",
    Exit.SETUP_FAILED: "could not set up the API",
}


def final(*codes: Exit) -> dict[int, str]:
    """The supervisor's ``final_exits`` for these codes: code -> meaning."""
    return {code: MEANINGS[code] for code in codes}
