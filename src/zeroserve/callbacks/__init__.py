"""``litserve.callbacks`` under zeroserve's name."""

from zeroserve.callbacks.base import Callback, EventTypes, NoopCallback

__all__ = ["Callback", "EventTypes", "NoopCallback"]
