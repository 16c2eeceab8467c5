"""``litserve.api`` under zeroserve's name: the class a model author subclasses."""

from zeroserve.worker.api import LitAPI, LitSpec

__all__ = ["LitAPI", "LitSpec"]
