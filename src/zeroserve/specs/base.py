"""``litserve.specs.base`` under zeroserve's name."""

from zeroserve.worker.api import LitSpec

__all__ = ["LitSpec"]
