"""LitServe's shutdown endpoint (``enable_shutdown_api``): a POST with the shutdown key
stops the whole cluster, as LitServe's stops its server and workers."""

from __future__ import annotations

import logging
import os
import re
import secrets
import signal

import tornado.ioloop

from zeroserve.common.errors import ConfigError
from zeroserve.frontend.errors import JSONErrorMixin

log = logging.getLogger(__name__)

#: The key and the process to stop (``cluster up``'s), handed over in the environment,
#: where ``ps`` does not show the key.
KEY_ENV = "ZEROSERVE_SHUTDOWN_KEY"
PID_ENV = "ZEROSERVE_SHUTDOWN_PID"
#: LitServe's answers, word for word.
NOT_AUTHENTICATED = "Not authenticated"
WRONG_KEY = (
    "Invalid Bearer token for Shutdown API. Check that you are passing a correct "
    "'Authorization: Bearer <SHUTDOWN_API_KEY>' in your header."
)
ACCEPTED = "Server is initiating graceful shutdown."
#: Time for the answer to leave before the cluster stops.
ANSWER_GRACE_S = 0.2


class ShutdownHandler(JSONErrorMixin):
    """``POST <shutdown_path>`` with ``Authorization: Bearer <key>``: 200, then the cluster
    stops; without the header 401 as FastAPI's OAuth2 bearer says it, a wrong key 401 too."""

    def initialize(self, key: str, pid: int) -> None:
        self.key = key
        self.pid = pid

    def post(self) -> None:
        scheme, _, given = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            self.write_json_error(401, NOT_AUTHENTICATED, {"WWW-Authenticate": "Bearer"})
            return
        if not secrets.compare_digest(given.encode(), self.key.encode()):
            self.write_json_error(401, WRONG_KEY)
            return
        log.warning("shutdown requested through %s; stopping the cluster", self.request.path)
        self.set_status(200)
        self.clear_header("Content-Type")
        self.finish(ACCEPTED)
        tornado.ioloop.IOLoop.current().call_later(ANSWER_GRACE_S, self._stop)

    def _stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            log.warning("the process to stop (pid %d) is gone", self.pid)


def shutdown_route(path: str | None) -> list[tuple[str, type, dict[str, object]]]:
    """The endpoint's route, when a path is given; its key and the process to stop must be."""
    if path is None:
        return []
    key, pid = os.environ.get(KEY_ENV), os.environ.get(PID_ENV, "")
    if not key or not pid.isdigit():
        raise ConfigError(f"--shutdown-path needs {KEY_ENV} and {PID_ENV} (a pid) set")
    return [(re.escape(path), ShutdownHandler, {"key": key, "pid": int(pid)})]
