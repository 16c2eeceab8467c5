"""``litserve.callbacks`` under zeroserve's name."""

from zeroserve.callbacks.base import Callback, CallbackRunner, EventTypes, NoopCallback

__all__ = ["Callback", "CallbackRunner", "EventTypes", "NoopCallback"]
