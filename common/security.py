"""CurveZMQ: join tokens, key files, encrypted sockets, and who the broker admits.

Two ways to secure a cluster. A join token (one secret string, kept by the
broker in a file of mode 0600) stands for two CurveZMQ key pairs derived
from it: the broker's, and one that every peer shares; the broker admits
only that peer key, so a process without the token can neither complete a
handshake nor join, and a new token file rotates both. Or key files, in
pyzmq's certificate format (``NAME.key`` holds the public key,
``NAME.key_secret`` both), as ``zmq.auth.create_certificates`` writes them:
the broker admits a peer only when its public key is in the authorized-keys
folder, read again when it changes, so adding a key needs no restart.
Admission is ZAP, through pyzmq's authenticator.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

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


# -- join tokens ---------------------------------------------------------------------------

#: Where peers find the join token when no --token is given (``ps`` does not show it).
TOKEN_ENV = "ZEROSERVE_TOKEN"
#: A token is this many random bytes, URL-safe base64 (43 characters).
TOKEN_BYTES = 32
MIN_TOKEN_CHARS = 16


def check_token(token: str) -> str:
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ConfigError(
            f"a join token is one word of at least {MIN_TOKEN_CHARS} characters "
            "(the broker's --token-file holds it)"
        )
    return token


def token_from_file(path: str, *, create: bool = False) -> str:
    """The token in `path`; with `create` (the broker's), made (mode 0600) when the file does
    not exist yet."""
    file = Path(path)
    if not file.exists() and not create:
        raise ConfigError(f"no token file {path}: copy the broker's --token-file here (mode 0600)")
    if not file.exists():
        token = secrets.token_urlsafe(TOKEN_BYTES)
        file.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another broker sharing the file made it meanwhile
            return token_from_file(path)
        except OSError as exc:
            raise ConfigError(f"cannot create the token file {path}: {exc.strerror}") from None
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        log.info("made a new join token in %s; peers join with --token (or ZEROSERVE_TOKEN)", path)
        return token
    try:
        mode = file.stat().st_mode
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and not _is_mounted_secret(file):
        raise ConfigError(f"the token file {path} may be read by others: chmod 600 {path}")
    return check_token(text)


def _is_mounted_secret(file: Path) -> bool:
    """A Kubernetes Secret mounted as a file: a read-only link into ``..data``, whose mode the
    pod's securityContext sets; it is the platform's to guard."""
    return file.is_symlink() and "..data" in os.readlink(file)


def _derived_secret(token: str, role: bytes) -> bytes:
    """A CurveZMQ secret key (z85) derived from the token for one role; any 32 bytes are one."""
    return z85.encode(hashlib.blake2b(token.encode(), digest_size=32, person=role).digest())


def _pair(secret: bytes) -> tuple[bytes, bytes]:
    _require_curve()
    return zmq.curve_public(secret), secret


def broker_token_keys(token: str) -> CurveKeys:
    public, secret = _pair(_derived_secret(token, b"zeroserve-broker"))
    return CurveKeys(public, secret)


def peer_token_keys(token: str) -> CurveKeys:
    """The key pair every peer of a token's cluster shares, with the broker's public key."""
    public, secret = _pair(_derived_secret(token, b"zeroserve-peer"))
    return CurveKeys(public, secret, broker_token_keys(token).public)


# -- admission -------------------------------------------------------------------------------


class Authenticator:
    """Admits CurveZMQ clients whose public key is allowed; logs refusals (at most once a
    second)."""

    def __init__(self, context: zmq.Context) -> None:
        self.refused = 0
        self._last_log = 0.0
        from zmq.auth.thread import ThreadAuthenticator  # only a broker that admits keys

        self._auth = ThreadAuthenticator(context)

    def start(self) -> None:
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=self)

    def stop(self) -> None:
        self._auth.stop()

    def _keys(self) -> dict[bytes, bool]:
        raise NotImplementedError

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


class TokenAuthenticator(Authenticator):
    """Admits the one peer key of a join token."""

    def __init__(self, context: zmq.Context, token: str) -> None:
        super().__init__(context)
        self._allowed = {peer_token_keys(token).public: True}

    def _keys(self) -> dict[bytes, bool]:
        return self._allowed


class KeyDirectoryAuthenticator(Authenticator):
    """Admits the public keys in a folder."""

    def __init__(self, context: zmq.Context, directory: str) -> None:
        if not Path(directory).is_dir():
            raise ConfigError(f"--authorized-keys {directory} is not a folder")
        super().__init__(context)
        self.directory = directory
        self._allowed: dict[bytes, bool] = {}
        self._stamp: float | None = None

    def _keys(self) -> dict[bytes, bool]:
        stamp = Path(self.directory).stat().st_mtime
        if stamp != self._stamp:
            self._stamp = stamp
            self._allowed = zmq.auth.load_certificates(self.directory)
            log.info("%d authorized public key(s) in %s", len(self._allowed), self.directory)
        return self._allowed
