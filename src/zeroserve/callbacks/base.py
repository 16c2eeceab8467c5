"""Callbacks, their runner and the names of their events, as LitServe spells them."""

from zeroserve.worker.hooks import Callback, CallbackRunner, EventTypes

__all__ = ["Callback", "CallbackRunner", "EventTypes", "NoopCallback"]


class NoopCallback(Callback):
    """A callback that does nothing."""
