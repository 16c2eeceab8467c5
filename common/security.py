"""CurveZMQ: key files, encrypted sockets, and the broker's list of admitted public keys.

Keys are in pyzmq's certificate format (``NAME.key`` holds the public key,
``NAME.key_secret`` both), as ``zmq.auth.create_certificates`` writes them.
The broker admits a peer only when its public key is in the authorized-keys
folder (ZAP, through pyzmq's authenticator); the folder is read again when it
changes, so adding a key needs no restart.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from zeroserve.common.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class CurveKeys:
    """One side's key pair, and for a client the broker's public key."""

    public: bytes
    secret: bytes
    server_public: bytes | None = None

    def apply_client(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server_public

    def apply_server(self, sock: zmq.Socket) -> None:
        sock.curve_server = True
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise ConfigError("this libzmq was built without CurveZMQ support")


def create_keypair(directory: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write NAME.key (public) and NAME.key_secret (secret) into `directory`."""
    _require_curve()
    Path(directory).mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(directory, name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def _load(path: str | os.PathLike) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the key file {path}: {exc}") from None


def load_keys(secret_file: str | None, server_public_file: str | None = None) -> CurveKeys | None:
    """The keys a process's flags name, or None when CurveZMQ is off."""
    if secret_file is None and server_public_file is None:
        return None
    if secret_file is None:
        raise ConfigError("--broker-public-key needs --curve-secret-key too")
    _require_curve()
    public, secret = _load(secret_file)
    if secret is None:
        raise ConfigError(f"{secret_file} holds no secret key (use the .key_secret file)")
    server_public = None
    if server_public_file is not None:
        server_public, _ = _load(server_public_file)
    return CurveKeys(public, secret, server_public)


class KeyDirectoryAuthenticator:
    """Admits CurveZMQ clients whose public key is in a folder; logs every refusal."""

    def __init__(self, context: zmq.Context, directory: str) -> None:
        if not Path(directory).is_dir():
            raise ConfigError(f"--authorized-keys {directory} is not a folder")
        self.directory = directory
        self._allowed: dict[bytes, bool] = {}
        self._stamp: float | None = None
        self.refused = 0
        self._last_log = 0.0
        self._auth = ThreadAuthenticator(context)

    def start(self) -> None:
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=self)

    def stop(self) -> None:
        self._auth.stop()

    def _keys(self) -> dict[bytes, bool]:
        stamp = Path(self.directory).stat().st_mtime
        if stamp != self._stamp:
            self._stamp = stamp
            self._allowed = zmq.auth.load_certificates(self.directory)
            log.info("%d authorized public key(s) in %s", len(self._allowed), self.directory)
        return self._allowed

    def callback(self, domain: str, key: bytes) -> bool:
        """Called by pyzmq's ZAP handler with the client's z85 public key."""
        if self._keys().get(key):
            return True
        self.refused += 1
        now = time.monotonic()
        if now - self._last_log >= 1.0:
            self._last_log = now
            log.warning(
                "refused a connection with an unknown public key %s (%d refused so far)",
                key.decode(errors="replace"),
                self.refused,
            )
        return False
