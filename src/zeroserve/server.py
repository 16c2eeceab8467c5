"""``litserve.server`` under zeroserve's name: the server and what a ``server.py`` imports
from it."""

from zeroserve.common.errors import HTTPException
from zeroserve.litserver import LitServer
from zeroserve.worker.api import LitAPI, LitAPIStatus, LitSpec, Request, Response
from zeroserve.worker.hooks import Callback, Logger

__all__ = [
    "Callback",
    "HTTPException",
    "LitAPI",
    "LitAPIStatus",
    "LitServer",
    "LitSpec",
    "Logger",
    "Request",
    "Response",
]
