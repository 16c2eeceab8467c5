"""``litserve.callbacks.defaults`` under zeroserve's name: the callbacks LitServe ships."""

from zeroserve.callbacks.defaults.metric_callback import PredictionTimeLogger, RequestTracker

__all__ = ["PredictionTimeLogger", "RequestTracker"]
