"""CurveZMQ: only peers whose public keys the broker lists take part."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from zeroserve.common.security import load_keys

from cluster import Cluster, run_cli, wait_until, worker_pids


def keygen(directory: Path, name: str) -> tuple[Path, Path]:
    assert run_cli("keygen", str(directory), "--name", name).returncode == 0
    return directory / f"{name}.key", directory / f"{name}.key_secret"


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
