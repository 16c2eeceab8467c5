"""``litserve.loops`` under zeroserve's name: what an API names to choose its loop.

zeroserve's loops run in its worker processes and are chosen from the API's
methods; ``ContinuousBatchingLoop`` is the one an API asks for by name.
"""

from zeroserve.worker.api import (
    ContinuousBatchingLoop,
    DefaultContinuousBatchingLoop,
    LitAPIStatus,
    Output,
)

__all__ = ["ContinuousBatchingLoop", "DefaultContinuousBatchingLoop", "LitAPIStatus", "Output"]
