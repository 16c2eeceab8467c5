"""Callbacks and the names of their events, as LitServe spells them."""

from zeroserve.worker.hooks import Callback, EventTypes

__all__ = ["Callback", "EventTypes", "NoopCallback"]


class NoopCallback(Callback):
    """A callback that does nothing."""
