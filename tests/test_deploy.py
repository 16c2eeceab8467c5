"""The deployment files: every YAML parses and validates, every command line fits the real CLI."""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import requests
import yaml

from zeroserve.cli import main as cli
from zeroserve.frontend.config import PROBE_PATHS
from zeroserve.frontend.server import STOP_GRACE_S
from zeroserve.worker.config import WorkerConfig

from cluster import ROOT, Cluster

DEPLOY = ROOT / "deploy"


def check_command_line(args: list[str]) -> None:
    """Parse `cluster ARGS` with the real command, converting every value; only the existence
    of files named on another host is not required here."""
    assert args, "an empty command line"
    command = cli.commands.get(args[0])
    assert command is not None, f"`cluster {args[0]}` does not exist"
    try:
        command.make_context(args[0], list(args[1:]))
    except click.BadParameter as exc:
        if "does not exist" not in str(exc):
            raise AssertionError(f"`cluster {shlex.join(args)}`: {exc}") from None
    except click.UsageError as exc:
        raise AssertionError(f"`cluster {shlex.join(args)}`: {exc}") from None


def yaml_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def systemd_command_lines() -> list[tuple[str, list[str]]]:
    lines = []
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        text = unit.read_text()
        env_name = re.search(r"EnvironmentFile=/etc/zeroserve/(\S+)", text).group(1)  # type: ignore[union-attr]
        env = env_file(DEPLOY / "systemd" / env_name.replace("%i", "example"))
        for exec_start in re.findall(r"^ExecStart=(.+)$", text, re.MULTILINE):
            line = exec_start.replace("%i", "example")
            for name, value in env.items():
                line = line.replace("${" + name + "}", value)
            argv = shlex.split(line)
            assert argv[0].endswith("/cluster"), argv
            lines.append((unit.name, argv[1:]))
    return lines


def compose_command_lines() -> list[tuple[str, list[str]]]:
    [compose] = yaml_documents(DEPLOY / "compose.yaml")
    return [(f"compose {name}", s["command"]) for name, s in compose["services"].items()]


def kubernetes_command_lines() -> list[tuple[str, list[str]]]:
    lines = []
    for path in sorted((DEPLOY / "kubernetes").rglob("*.yaml")):
        for doc in yaml_documents(path):
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("containers", []):
                lines.append((f"{path.name} {container['name']}", container["args"]))
    return lines


def dockerfile_command_lines() -> list[tuple[str, list[str]]]:
    text = (DEPLOY / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert entrypoint == ["cluster"]
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    return [("Dockerfile CMD", cmd)]


def readme_command_lines() -> list[tuple[str, list[str]]]:
    """`cluster …` lines of the README's shell examples, continuation lines joined."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                if part.strip().startswith("cluster "):
                    argv = shlex.split(part, comments=True)
                    lines.append((part.strip(), argv[1:]))
    return lines


ALL_LINES = (
    systemd_command_lines()
    + compose_command_lines()
    + kubernetes_command_lines()
    + dockerfile_command_lines()
    + readme_command_lines()
)


@pytest.mark.parametrize(("where", "args"), ALL_LINES, ids=[w for w, _ in ALL_LINES])
def test_command_lines_fit_the_cli(where: str, args: list[str]) -> None:
    check_command_line(args)


def test_the_checker_can_fail() -> None:
    with pytest.raises(AssertionError, match="No such option"):
        check_command_line(["worker", "--broker", "tcp://x:1", "--api", "m:A", "--no-such-flag"])
    with pytest.raises(AssertionError):
        check_command_line(["frontend", "--port", "eighty"])
    with pytest.raises(AssertionError, match="does not exist"):
        check_command_line(["teleport"])


def test_every_deployment_kind_is_there() -> None:
    for path in ("Dockerfile", "compose.yaml", "kubernetes", "systemd"):
        assert (DEPLOY / path).exists(), path
    kinds = {d["kind"] for p in (DEPLOY / "kubernetes").glob("*.yaml") for d in yaml_documents(p)}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap"} <= kinds
    frontend = yaml_documents(DEPLOY / "kubernetes" / "frontend.yaml")[0]
    probe = frontend["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/readyz"


def test_kubernetes_manifests_validate() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version()
    documents = [d for p in (DEPLOY / "kubernetes").glob("*.yaml") for d in yaml_documents(p)]
    for doc in documents:
        kubernetes_validate.validate(doc, version, strict=True)
    broken = copy.deepcopy(documents[0])
    broken["spec"]["no_such_field"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_compose_file_validates() -> None:
    tool = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    if not Path(tool).exists():
        pytest.skip("check-jsonschema is not installed")
    done = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    cluster = Path(sys.executable).parent / "cluster"
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text().replace("/opt/zeroserve/bin/cluster", str(cluster))
        text = text.replace("/etc/zeroserve/", f"{DEPLOY / 'systemd'}/").replace(
            "%i.env", "example.env"
        )
        name = unit.name.replace("@.service", "@example.service")
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        [analyze, "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


DEPLOYED = systemd_command_lines() + compose_command_lines() + kubernetes_command_lines()


@pytest.mark.parametrize(("where", "args"), DEPLOYED, ids=[w for w, _ in DEPLOYED])
def test_every_deployed_process_joins_with_the_token_and_both_brokers(
    where: str, args: list[str]
) -> None:
    """Secure by default: the broker keeps a token file; every peer joins with that token,
    and links to both brokers, so that either may die."""
    if args[0] in ("broker", "worker", "frontend"):
        assert "--token-file" in args, f"{where} runs without the join token"
    if args[0] in ("worker", "frontend"):
        assert args.count("--broker") == 2, f"{where} does not link to both brokers"


def test_kubernetes_runs_two_brokers_with_stable_names() -> None:
    documents = yaml_documents(DEPLOY / "kubernetes" / "broker.yaml")
    names = sorted(d["metadata"]["name"] for d in documents if d["kind"] == "Service")
    assert names == ["zeroserve-broker-a", "zeroserve-broker-b"]
    for doc in (d for d in documents if d["kind"] in ("Deployment", "Service")):
        selector = doc["spec"]["selector"]
        labels = selector.get("matchLabels", selector)
        assert labels["app.kubernetes.io/instance"] == doc["metadata"]["name"].split("-", 1)[1]


def scraped(cluster: Cluster) -> dict[str, set[str]]:
    """What a live frontend's /metrics exports: each series name with its label names."""
    text = requests.get(cluster.url("/metrics"), timeout=10).text
    series: dict[str, set[str]] = {}
    for line in text.splitlines():
        found = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s", line)
        if found and not line.startswith("#"):
            labels = {pair.split("=", 1)[0] for pair in (found.group(2) or "").split(",") if pair}
            series.setdefault(found.group(1), set()).update(labels)
    return series


def check_query(query: str, series: dict[str, set[str]]) -> None:
    """Every zeroserve metric a PromQL query names is exported, with the labels it groups by."""
    names = re.findall(r"\bzeroserve_\w+", query)
    assert names, query
    for name in names:
        assert name in series, f"{query}: {name} is not exported"
    for grouped in re.findall(r"by \(([^)]*)\)", query):
        for label in (g.strip() for g in grouped.split(",")):
            if label != "le":
                assert any(label in series[n] for n in names), f"{query}: no label {label!r}"


def test_autoscaling_and_the_dashboard_read_metrics_that_exist(cluster: Cluster) -> None:
    """The KEDA ScaledObject scales the worker Deployment on a query, and the Grafana
    dashboard's panels show queries, of metrics a running frontend exports."""
    cluster.up("EchoAPI")
    assert cluster.post({"value": 1}).status_code == 200
    series = scraped(cluster)
    [scaled] = yaml_documents(DEPLOY / "kubernetes" / "keda" / "worker-scaledobject.yaml")
    assert scaled["kind"] == "ScaledObject" and scaled["apiVersion"] == "keda.sh/v1alpha1"
    workers = [d for d in yaml_documents(DEPLOY / "kubernetes" / "worker.yaml")]
    assert scaled["spec"]["scaleTargetRef"]["name"] == workers[0]["metadata"]["name"]
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "prometheus" and float(trigger["metadata"]["threshold"]) > 0
        check_query(trigger["metadata"]["query"], series)
    dashboard = json.loads((DEPLOY / "grafana" / "zeroserve.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(queries) >= 8
    for query in queries:
        check_query(query, series)
    with pytest.raises(AssertionError):
        check_query("sum(zeroserve_no_such_metric)", series)
    with pytest.raises(AssertionError):
        check_query("sum by (colour) (zeroserve_queue_depth)", series)


def test_no_file_installs_zeroserve_from_a_package_index() -> None:
    """zeroserve is not published on an index: `pip install zeroserve` would fail or, worse,
    install someone else's package of that name."""
    by_name = re.compile(r"pip install (?:-\S+ )*zeroserve\b")
    for path in [ROOT / "README.md", *sorted(p for p in DEPLOY.rglob("*") if p.is_file())]:
        assert not by_name.search(path.read_text(errors="replace")), path
    assert by_name.search("python3 -m venv v && v/bin/pip install zeroserve")


def arg_value(args: list[str], flag: str, default: float) -> float:
    return float(args[args.index(flag) + 1]) if flag in args else default


def test_kubernetes_pods_stop_gracefully_and_survive_disruption() -> None:
    """What production users expect: probes on endpoints that exist, a grace period longer
    than preStop plus the drain, non-root on a read-only root, a PodDisruptionBudget per
    role, rolling updates that never go below the replicas asked for."""
    documents = [d for p in (DEPLOY / "kubernetes").glob("*.yaml") for d in yaml_documents(p)]
    budgets = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        for d in documents
        if d["kind"] == "PodDisruptionBudget"
    }
    assert budgets == {"broker", "frontend", "worker"}
    for deployment in (d for d in documents if d["kind"] == "Deployment"):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        if deployment["spec"].get("strategy", {}).get("type") != "Recreate":
            assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name
        [container] = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert "nodeSelector" not in pod and "affinity" not in pod, f"{name}: placement is values'"
        args = container["args"]
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        wait_s = float(pre_stop["command"][1]) if pre_stop else 0.0
        if args[0] == "worker":
            drain_s = arg_value(args, "--drain-timeout", WorkerConfig.drain_timeout_s)
        else:
            drain_s = STOP_GRACE_S
        assert pod["terminationGracePeriodSeconds"] > wait_s + drain_s, name
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if "httpGet" in container.get(kind, {}):
                assert container[kind]["httpGet"]["path"] in PROBE_PATHS, (name, kind)
    frontend = yaml_documents(DEPLOY / "kubernetes" / "frontend.yaml")[0]
    [container] = frontend["spec"]["template"]["spec"]["containers"]
    assert {
        container[k]["httpGet"]["path"] for k in ("startupProbe", "readinessProbe", "livenessProbe")
    } == set(PROBE_PATHS)
