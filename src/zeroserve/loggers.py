"""``litserve.loggers`` under zeroserve's name."""

from zeroserve.worker.hooks import Logger

__all__ = ["Logger"]
