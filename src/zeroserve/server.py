"""``litserve.server`` under zeroserve's name: the server and what a ``server.py`` imports
from it."""

import os

from zeroserve.common.errors import HTTPException
from zeroserve.litserver import LitServer
from zeroserve.worker.api import LitAPI, LitAPIStatus, LitSpec, Request, Response
from zeroserve.worker.hooks import Callback, Logger

#: LitServe's key, as LitServe reads it at import (tests set it here); the servers that
#: ``utils.wrap_litserve_start`` starts take it, and every server reads the environment.
LIT_SERVER_API_KEY = os.environ.get("LIT_SERVER_API_KEY")
#: LitServe's shutdown key, read as LitServe reads it; LitServer.run() makes one if unset.
SHUTDOWN_API_KEY = os.environ.get("LIT_SHUTDOWN_API_KEY")

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
