"""Who may join: peers with the join token, or whose public keys the broker lists."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from zeroserve.common.security import create_keypair, load_keys

from cluster import Cluster, run_cli, wait_until, worker_pids


def keygen(directory: Path, name: str) -> tuple[Path, Path]:
    """What `cluster keygen` writes (its command: test_cli.py), made in this process."""
    return create_keypair(directory, name)


def test_only_authorized_keys_are_admitted(cluster: Cluster, tmp_path: Path) -> None:
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    authorized.mkdir()
    broker_public, broker_secret = keygen(keys, "broker")
    secrets = {}
    for name in ("worker", "frontend", "status", "intruder"):
        public, secrets[name] = keygen(keys, name)
        if name != "intruder":
            shutil.copy(public, authorized)

    def client(name: str) -> tuple[str, ...]:
        return ("--curve-secret-key", str(secrets[name]), "--broker-public-key", str(broker_public))

    cluster.keys = load_keys(str(secrets["status"]), str(broker_public))
    cluster.broker("--curve-secret-key", str(broker_secret), "--authorized-keys", str(authorized))
    good = cluster.worker("EchoAPI", 1, *client("worker"))
    bad = cluster.worker("EchoAPI", 1, *client("intruder"))
    cluster.frontend(*client("frontend"))
    cluster.wait_healthy(1)
    wait_until(lambda: "refused a connection with an unknown public key" in cluster.logs())
    served_by = {cluster.post({"value": i}).json()["pid"] for i in range(10)}
    assert served_by <= worker_pids(good)
    assert not served_by & worker_pids(bad)
    snapshot = cluster.status() or {}
    assert {w["pid"] for w in snapshot["workers"]} == worker_pids(good)

    def status(*extra: str) -> subprocess.CompletedProcess:
        return run_cli(
            "status", "--broker", cluster.frontend_endpoint, "--json", "--timeout", "1", *extra
        )

    assert status().returncode == 1
    assert status(*client("intruder")).returncode == 1
    allowed = status(*client("status"))
    assert allowed.returncode == 0, allowed.stderr
    assert '"workers"' in allowed.stdout


def test_key_flags_are_checked(tmp_path: Path) -> None:
    public, _secret = keygen(tmp_path, "someone")
    out = run_cli("status", "--curve-secret-key", str(public), "--broker-public-key", str(public))
    assert out.returncode == 2
    assert "holds no secret key" in out.stderr


def test_a_join_token_admits_its_peers_only_and_a_new_file_rotates_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    token_file = tmp_path / "secrets" / "token"
    broker = cluster.broker(token_file=token_file)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    good = cluster.worker("EchoAPI", 1, "--token", token)
    without = cluster.worker("EchoAPI", 1)
    wrong = cluster.worker("EchoAPI", 1, "--token", "not-the-token-at-all")
    cluster.frontend("--token", token)
    cluster.wait_healthy(1)
    wait_until(lambda: "refused a worker connection" in cluster.logs(), what="the refusals")
    wait_until(lambda: "refused the handshake" in cluster.logs(), what="the peers' own word")
    served_by = {cluster.post({"value": i}).json()["pid"] for i in range(10)}
    assert served_by <= worker_pids(good)
    assert not served_by & (worker_pids(without) | worker_pids(wrong))
    assert {w["pid"] for w in (cluster.status() or {})["workers"]} == worker_pids(good)

    def status(**env: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "zeroserve", "status", "--json", "--timeout", "1"]
        return subprocess.run(
            [*command, "--broker", cluster.frontend_endpoint],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, **env},
            check=False,
        )

    assert status().returncode == 1
    allowed = status(ZEROSERVE_TOKEN=token)
    assert allowed.returncode == 0 and '"workers"' in allowed.stdout, allowed.stderr
    # A new token file rotates the token: peers with the old one no longer join.
    ports = tuple(
        int(e.rsplit(":", 1)[1]) for e in (cluster.frontend_endpoint, cluster.backend_endpoint)
    )
    cluster.stop(broker)
    token_file.unlink()
    cluster.broker(token_file=token_file, ports=ports)  # type: ignore[arg-type]
    assert token_file.read_text().strip() != token
    wait_until(
        lambda: (cluster.status() or {}).get("counters", {}).get("refused_handshakes", 0) >= 3,
        what="the old token refused by the new broker",
    )
    snapshot = cluster.status() or {}
    assert snapshot["workers"] == [] and snapshot["frontends"] == []


def test_a_broker_open_beyond_loopback_needs_a_token_keys_or_insecure(tmp_path: Path) -> None:
    out = run_cli("broker")  # its defaults listen on every address
    assert out.returncode == 2
    assert "refusing to listen on tcp://*:5555 and tcp://*:5556" in out.stderr
    assert "--token-file" in out.stderr and "--insecure" in out.stderr
    assert "Traceback" not in out.stderr
    # --insecure lets it try (an address of no interface here: it fails to bind, nothing listens).
    out = run_cli("broker", "--frontend-bind", "tcp://192.0.2.1:5555", "--insecure")
    assert out.returncode == 2 and "cannot bind" in out.stderr
    # A token file others may read is refused.
    token_file = tmp_path / "token"
    token_file.write_text("a-token-that-others-can-read\n")
    token_file.chmod(0o644)
    loopback = ("--frontend-bind", "tcp://127.0.0.1:0", "--backend-bind", "tcp://127.0.0.1:0")
    out = run_cli("broker", *loopback, "--token-file", str(token_file))
    assert out.returncode == 2 and f"chmod 600 {token_file}" in out.stderr
    out = run_cli("status", "--token", "short", "--timeout", "0.1")
    assert out.returncode == 2 and "at least 16 characters" in out.stderr


def test_the_frontend_serves_https_with_a_certificate(cluster: Cluster, tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    certificate.cert_chain_pems[0].write_to_path(str(cert_file))
    for pem in certificate.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_file), append=True)
    certificate.private_key_pem.write_to_path(str(key_file))
    authority.cert_pem.write_to_path(str(ca_file))
    cluster.broker()
    cluster.worker("EchoAPI", 1)
    cluster.frontend("--certfile", str(cert_file), "--keyfile", str(key_file))
    cluster.wait_workers(1)
    url = f"https://127.0.0.1:{cluster.http_port}"

    def healthy() -> bool:
        try:
            return requests.get(f"{url}/health", verify=str(ca_file), timeout=2).ok
        except (requests.ConnectionError, requests.Timeout):
            return False

    wait_until(healthy, what="/health over HTTPS")
    answer = requests.post(f"{url}/predict", json={"value": 7}, verify=str(ca_file), timeout=10)
    assert answer.json()["echo"] == 7
    with pytest.raises(requests.exceptions.SSLError):  # a certificate nobody vouches for
        requests.get(f"{url}/health", timeout=2)
    with pytest.raises(requests.ConnectionError):  # plain HTTP on the HTTPS port
        requests.get(f"http://127.0.0.1:{cluster.http_port}/health", timeout=2)
    assert f"frontend listening on https://127.0.0.1:{cluster.http_port}" in cluster.logs()
    # A certificate file that is not one is one line, before anything listens.
    out = run_cli("frontend", "--port", "0", "--certfile", str(ca_file), "--keyfile", str(ca_file))
    assert out.returncode == 2 and "cannot load the certificate" in out.stderr
    assert "Traceback" not in out.stderr
