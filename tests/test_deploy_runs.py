"""The deployment files started the way their platform starts them, without the platform.

No container runtime runs here, so each Kubernetes container and compose service is started
as the real ``cluster`` command its file gives, as the image's user (the uid and gid of the
Dockerfile's USER), with each volume laid out as the platform lays it out:

* Kubernetes: Secrets and ConfigMaps as the kubelet writes them (root-owned files with
  ``defaultMode`` behind a ``..data`` link; with ``fsGroup``, group fsGroup and group-read added,
  and fsGroup among the process's groups), emptyDirs world-writable; a read-only root filesystem
  leaves the image's folders unwritable.
* compose: a named volume starts as the image's folder at its path (owner and mode from the
  Dockerfile's mkdir/chown), else as a root-owned folder; bind mounts are the host's folder.

Only what cannot be the same here is rewritten: ports become free loopback ports, service names
127.0.0.1, and the image's paths temporary folders. Flags, environment and user are the
file's. A file that would crash-loop, or never get healthy, fails here with its process's log.
The same volume is shared by every process that mounts it, so a ``:ro`` flag is kept by the
files' owners and modes, not by a read-only mount.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from ports import free_port

from cluster import ROOT, wait_until

DEPLOY = ROOT / "deploy"
LOCAL_HOSTS = {"*", "0.0.0.0", "127.0.0.1", "localhost"}
ENDPOINT = re.compile(r"\b(tcp|http)://([\w.*-]+):(\d+)")
START_TIMEOUT_S = 40.0


# -- the image ---------------------------------------------------------------------------


@dataclass
class Folder:
    uid: int = 0
    gid: int = 0
    mode: int = 0o755


@dataclass
class Image:
    """What a process in the image runs as, and the folders the Dockerfile makes."""

    uid: int
    gid: int
    workdir: str
    home: str
    folders: dict[str, Folder]


def read_dockerfile(path: Path) -> Image:
    """The USER, WORKDIR, and the folders useradd/mkdir/chown/chmod make in RUN lines."""
    users: dict[str, tuple[int, int, str]] = {"root": (0, 0, "/root")}
    folders: dict[str, Folder] = {}
    user, workdir = "root", "/"
    for line in path.read_text().replace("\\\n", " ").splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "USER":
            user = rest.strip()
        elif word == "WORKDIR":
            workdir = rest.strip()
            folders.setdefault(workdir, Folder())
        elif word == "RUN":
            for command in re.split(r"&&|;", rest):
                run_command(shlex.split(command), users, folders)
    name, _, group = user.partition(":")
    if name not in users:  # a numeric USER: the passwd entry of that uid, if the image has one
        known = [v for v in users.values() if v[0] == int(name)]
        users[name] = known[0] if known else (int(name), int(name), "/")
    uid, gid, home = users[name]
    return Image(uid, int(group) if group else gid, workdir, home, folders)


def run_command(
    argv: list[str], users: dict[str, tuple[int, int, str]], folders: dict[str, Folder]
) -> None:
    """What one shell command of a RUN line does to users and folders (as root)."""
    if not argv:
        return
    options = {a for a in argv[1:] if a.startswith("-")}
    operands = [a for a in argv[1:] if not a.startswith("-")]
    if argv[0] == "useradd":
        uid = 1000  # Debian's first user
        for flag in ("--uid", "-u"):
            if flag in argv:
                uid = int(argv[argv.index(flag) + 1])
                operands.remove(str(uid))
        name = operands[-1]
        home = f"/home/{name}"
        users[name] = (uid, uid, home)  # USERGROUPS_ENAB: a group of its own
        if options & {"--create-home", "-m"}:
            folders[home] = Folder(uid, uid, 0o700)
    elif argv[0] == "mkdir":
        mode = int(argv[argv.index("-m") + 1], 8) if "-m" in argv else 0o755
        for path in operands:
            if not re.fullmatch(r"[0-7]{3,4}", path):
                folders[path] = Folder(mode=mode)
    elif argv[0] == "chown":
        owner, *paths = operands
        name, _, group = owner.partition(":")
        uid = users[name][0] if name in users else int(name)
        gid = (users[group][1] if group in users else int(group)) if group else users[name][1]
        for path in paths:
            folders.setdefault(path, Folder()).uid = uid
            folders[path].gid = gid
    elif argv[0] == "chmod":
        mode, *paths = operands
        for path in paths:
            folders.setdefault(path, Folder()).mode = int(mode, 8)


# -- processes ---------------------------------------------------------------------------


@dataclass
class Container:
    """One process as its platform would start it."""

    name: str
    args: list[str]
    uid: int
    gid: int
    groups: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: Where each of the image's paths is here (mounts and the image's folders).
    paths: dict[str, Path] = field(default_factory=dict)
    #: The name its ports are reached by, as (host, port).
    host: str = ""
    workdir: str = "/"
    home: str = "/"


class Platform:
    """Free loopback ports for the (host, port) pairs the files name, and the processes."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.bin = image_python(base / "image-python")
        self.ports: dict[tuple[str, int], int] = {}
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def port(self, host: str, port: int) -> int:
        return self.ports.setdefault((host, int(port)), free_port())

    def rewrite(self, container: Container, args: list[str]) -> list[str]:
        """Ports to free loopback ports, service names to 127.0.0.1, image paths to here."""
        own = container.host

        def endpoint(found: re.Match) -> str:
            scheme, host, port = found.groups()
            host = own if host in LOCAL_HOSTS else host
            return f"{scheme}://127.0.0.1:{self.port(host, int(port))}"

        longest_first = sorted(container.paths, key=len, reverse=True)
        alternatives = "|".join(re.escape(path) for path in longest_first)
        inside = re.compile(rf"(?<![\w./-])(?:{alternatives})(?![\w.-])")
        out = []
        for i, given in enumerate(args):
            before = args[i - 1] if i else ""
            if before == "--host":
                arg = "127.0.0.1"
            elif before == "--port":
                arg = str(self.port(own, int(given)))
            else:
                arg = ENDPOINT.sub(endpoint, given)
            out.append(inside.sub(lambda m: str(container.paths[m.group(0)]), arg))
        return out

    def _options(self, container: Container) -> dict[str, Any]:
        env = {
            "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(container.paths.get(container.home, "/nonexistent")),
            "LANG": "C.UTF-8",
            "TMPDIR": str(container.paths["/tmp"]),
            **{k: self.rewrite(container, [v])[0] for k, v in container.env.items()},
        }
        return {
            "user": container.uid,
            "group": container.gid,
            "extra_groups": container.groups,
            "env": env,
            "cwd": container.paths[container.workdir],
            "start_new_session": True,
        }

    def start(self, container: Container) -> subprocess.Popen:
        """The image's ENTRYPOINT (`cluster`) with the container's arguments."""
        argv = [str(self.bin / "cluster"), *self.rewrite(container, container.args)]
        log_path = self.base / f"{container.name}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                argv, stdout=log_file, stderr=subprocess.STDOUT, **self._options(container)
            )
        self.procs.append((container.name, proc, log_path))
        return proc

    def run(self, container: Container, argv: list[str]) -> bool:
        """A probe's or healthcheck's command, in the container: whether it succeeded."""
        argv = self.rewrite(container, argv)
        argv[0] = shutil.which(argv[0], path=f"{self.bin}:/usr/bin:/bin") or argv[0]
        try:
            done = subprocess.run(
                argv, capture_output=True, timeout=10, check=False, **self._options(container)
            )
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def check_alive(self) -> None:
        """Fail with the log of a process that exited: its platform would restart it forever."""
        for name, proc, log_path in self.procs:
            if proc.poll() is not None:
                raise AssertionError(
                    f"{name} exited ({proc.returncode}); it would crash-loop:\n"
                    + log_path.read_text(errors="replace")[-3000:]
                )

    def wait(self, ok: Any, what: str) -> None:
        def check() -> bool:
            self.check_alive()
            return bool(ok())

        try:
            wait_until(check, START_TIMEOUT_S, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def stop_all(self) -> None:
        for _, proc, _ in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc, _ in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)

    def logs(self) -> str:
        return "\n".join(
            f"----- {name} -----\n{path.read_text(errors='replace')[-3000:]}"
            for name, _, path in self.procs
        )


def image_python(folder: Path) -> Path:
    """A Python the image's user may run, with this one's packages: the image has Python
    and zeroserve installed; this interpreter may live where only root may go (/root).
    Its bin folder, with `cluster` (the image's ENTRYPOINT) in it."""
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = [Path(sys.base_prefix) / "bin" / version, Path("/usr/bin") / version]
    usable = [c for c in candidates if c.exists() and open_to_all(c)]
    if not usable:
        pytest.skip(f"no {version} here that another user may run")
    subprocess.run([usable[0], "-m", "venv", "--without-pip", folder], check=True, timeout=60)
    [site_packages] = (folder / "lib").glob("python*/site-packages")
    outer = [p for p in sys.path if p.endswith("site-packages")]
    hidden = [p for p in [*outer, str(ROOT), str(DEPLOY / "api")] if not open_to_all(Path(p))]
    if hidden:
        pytest.skip(f"another user may not reach {hidden[0]}")
    (site_packages / "outer.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in outer)
    )
    entry = folder / "bin" / "cluster"
    entry.write_text(
        f"#!{folder / 'bin' / 'python'}\nimport sys\nfrom zeroserve.cli import main\n"
        "if __name__ == '__main__':\n    sys.exit(main())\n"
    )
    entry.chmod(0o755)
    return folder / "bin"


def open_to_all(path: Path) -> bool:
    """Anyone may pass every folder on the way to `path`, and read it."""
    path = path.resolve()
    return all(os.stat(folder).st_mode & 0o001 for folder in [*path.parents, path][:-1]) and bool(
        os.stat(path).st_mode & 0o004
    )


@pytest.fixture
def platform() -> Iterator[Platform]:
    if os.geteuid() != 0:
        pytest.skip("starts processes as another user: run as root")
    base = Path(tempfile.mkdtemp(prefix="zeroserve-deploy-"))
    base.chmod(0o755)  # the image's user must reach the folders laid out in it
    running = None
    try:
        running = Platform(base)
        yield running
    finally:
        if running is not None:
            running.stop_all()
        shutil.rmtree(base, ignore_errors=True)


def make_folder(path: Path, folder: Folder) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, folder.uid, folder.gid)
    path.chmod(folder.mode)
    return path


def image_root(base: Path, image: Image, read_only: bool) -> dict[str, Path]:
    """The image's folders, here; a read-only root filesystem lets nobody write them."""
    paths = {}
    for inside, made in {**image.folders, "/tmp": Folder(mode=0o1777)}.items():
        folder = Folder(made.uid, made.gid, made.mode & 0o555) if read_only else made
        paths[inside] = make_folder(base / inside.strip("/"), folder)
    return paths


def post_example(port: int) -> None:
    """The example API answers through the frontend: {"input": 2} -> {"output": 4}."""
    answer = requests.post(f"http://127.0.0.1:{port}/predict", json={"input": 2}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"output": 4}


# -- Kubernetes --------------------------------------------------------------------------


def kubernetes_objects() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def lay_out_projection(folder: Path, files: dict[str, str], mode: int, fs_group: int | None):
    """A Secret or ConfigMap volume as the kubelet's atomic writer makes it: the files in a
    timestamped folder, ``..data`` linked to it, each name linked into ``..data``; root-owned,
    `mode`; with fsGroup, its group, and group-read (the kubelet's SetVolumeOwnership)."""
    gid = 0 if fs_group is None else fs_group
    extra = 0 if fs_group is None else 0o440
    make_folder(folder, Folder(0, gid, 0o755 | (0o2000 if fs_group is not None else 0)))
    stamped = make_folder(folder / "..2026_01_01_00_00_00.1", Folder(0, gid, 0o755))
    for name, text in files.items():
        (stamped / name).write_text(text)
        os.chown(stamped / name, 0, gid)
        (stamped / name).chmod(mode | extra)
    (folder / "..data").symlink_to(stamped.name)
    for name in files:
        (folder / name).symlink_to(f"..data/{name}")


def kubernetes_containers(
    base: Path, image: Image, objects: list[dict[str, Any]], secrets_data: dict[str, dict]
) -> tuple[list[tuple[Container, dict[str, Any]]], dict[tuple[str, int], tuple[str, int]]]:
    """Each Deployment's first replica's containers (with their specs), and where each
    Service port leads: (service, port) -> (deployment, container port)."""
    config_maps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    out = []
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        pod_security = pod.get("securityContext", {})
        fs_group = pod_security.get("fsGroup")
        volumes: dict[str, Path] = {}
        for volume in pod.get("volumes", []):
            folder = base / name / "volumes" / volume["name"]
            if "secret" in volume:
                source = volume["secret"]
                data = secrets_data[source["secretName"]]
                mode = source.get("defaultMode", 0o644)
                lay_out_projection(folder, data, mode, fs_group)
            elif "configMap" in volume:
                source = volume["configMap"]
                data = config_maps[source["name"]]
                mode = source.get("defaultMode", 0o644)
                lay_out_projection(folder, data, mode, fs_group)
            elif "emptyDir" in volume:
                make_folder(folder, Folder(0, fs_group or 0, 0o777 | (0o2000 if fs_group else 0)))
            else:
                raise AssertionError(f"{name}: volume kind not laid out here: {volume}")
            volumes[volume["name"]] = folder
        for spec in pod["containers"]:
            security = {**pod_security, **spec.get("securityContext", {})}
            read_only = security.get("readOnlyRootFilesystem", False)
            paths = image_root(base / name / "root", image, read_only)
            for mount in spec.get("volumeMounts", []):
                assert "subPath" not in mount, f"{name}: subPath is not laid out here"
                paths[mount["mountPath"]] = volumes[mount["name"]]
            uid = security.get("runAsUser", image.uid)
            if security.get("runAsNonRoot"):
                assert uid != 0, f"{name}: runAsNonRoot, yet it runs as root"
            env = {e["name"]: e["value"] for e in spec.get("env", []) if "value" in e}
            container = Container(
                name=f"{name}-{spec['name']}",
                args=[*spec.get("command", []), *spec.get("args", [])],
                uid=uid,
                gid=security.get("runAsGroup", image.gid),
                groups=[fs_group] if fs_group is not None else [],
                env=env,
                paths=paths,
                host=name,
                workdir=spec.get("workingDir", image.workdir),
                home=image.home,
            )
            out.append((container, spec))
    services = {}
    for service in (o for o in objects if o["kind"] == "Service"):
        selector = service["spec"]["selector"]
        [target] = [
            d
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        specs = target["spec"]["template"]["spec"]["containers"]
        named = {p["name"]: p["containerPort"] for s in specs for p in s.get("ports", [])}
        for port in service["spec"]["ports"]:
            target_port = port.get("targetPort", port["port"])
            target_port = named.get(target_port, target_port)
            services[(service["metadata"]["name"], port["port"])] = (
                target["metadata"]["name"],
                int(target_port),
            )
    return out, services


def probe_passes(platform: Platform, container: Container, spec: dict, probe: dict) -> bool:
    """One kubelet probe, against the process started for `container`."""
    named = {p["name"]: p["containerPort"] for p in spec.get("ports", [])}
    if "httpGet" in probe:
        port = probe["httpGet"]["port"]
        port = platform.port(container.host, named.get(port, port))
        try:
            answer = requests.get(f"http://127.0.0.1:{port}{probe['httpGet']['path']}", timeout=2)
        except (requests.ConnectionError, requests.Timeout):  # a probe's timeout fails it
            return False
        return 200 <= answer.status_code < 400
    if "tcpSocket" in probe:
        port = probe["tcpSocket"]["port"]
        port = platform.port(container.host, named.get(port, port))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            return False
        return True
    if "exec" in probe:
        return platform.run(container, probe["exec"]["command"])
    raise AssertionError(f"{container.name}: a probe of a kind not run here: {probe}")


def test_kubernetes_manifests_serve_as_the_kubelet_starts_them(platform: Platform) -> None:
    """Every Deployment (one replica each) as its pod would run, with the token Secret made as
    the header of broker.yaml says; the frontend Service answers a request, every probe of
    every container passes once it does."""
    image = read_dockerfile(DEPLOY / "Dockerfile")
    objects = kubernetes_objects()
    token = {"zeroserve-token": {"token": secrets.token_urlsafe(32)}}
    containers, services = kubernetes_containers(platform.base, image, objects, token)
    for (service, port), target in services.items():
        platform.ports[(service, port)] = platform.port(*target)
    for container, _ in containers:
        platform.start(container)
    frontend_port = platform.port(*services[("zeroserve-frontend", 80)])
    for container, spec in containers:
        for kind in ("startupProbe", "readinessProbe"):
            if kind in spec:
                platform.wait(
                    lambda c=container, s=spec, k=kind: probe_passes(platform, c, s, s[k]),
                    f"the {kind} of {container.name}",
                )
    post_example(frontend_port)
    for container, spec in containers:
        if "livenessProbe" in spec:
            assert probe_passes(platform, container, spec, spec["livenessProbe"]), container.name
    platform.check_alive()


# -- compose -----------------------------------------------------------------------------


def compose_services() -> tuple[dict[str, Any], Path]:
    path = DEPLOY / "compose.yaml"
    return yaml.safe_load(path.read_text()), path.parent


def compose_order(services: dict[str, Any]) -> list[str]:
    """Services in an order that starts each after those it depends on."""
    done: list[str] = []

    def visit(name: str) -> None:
        if name not in done:
            for other in services[name].get("depends_on", {}):
                visit(other)
            done.append(name)

    for name in services:
        visit(name)
    return done


def compose_container(
    base: Path,
    image: Image,
    *,
    name: str,
    service: dict[str, Any],
    volumes: dict[str, Path],
    here: Path,
) -> Container:
    paths = image_root(base / name / "root", image, service.get("read_only", False))
    for volume in service.get("volumes", []):
        source, inside, *_ = volume.split(":")
        if source.startswith((".", "/")):
            paths[inside] = (here / source).resolve()  # a bind mount: the host's folder
        else:
            paths[inside] = volumes[source]
    for inside in service.get("tmpfs", []):
        paths[inside] = make_folder(base / name / "tmpfs" / inside.strip("/"), Folder(mode=0o1777))
    uid, gid = image.uid, image.gid
    if "user" in service:
        uid_text, _, gid_text = str(service["user"]).partition(":")
        uid, gid = int(uid_text), int(gid_text or uid_text)
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return Container(
        name=name,
        args=list(service["command"]),
        uid=uid,
        gid=gid,
        env={k: str(v) for k, v in env.items()},
        paths=paths,
        host=name,
        workdir=service.get("working_dir", image.workdir),
        home=image.home,
    )


def healthy(platform: Platform, container: Container, service: dict[str, Any]) -> bool:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if test[0] == "CMD-SHELL":
        return platform.run(container, ["sh", "-c", test[1]])
    assert test[0] == "CMD", test
    return platform.run(container, test[1:])


def test_compose_services_serve_as_compose_starts_them(platform: Platform) -> None:
    """Each service (one replica) in depends_on order, each condition waited on (a
    healthcheck run in the container); then the frontend answers a request."""
    image = read_dockerfile(DEPLOY / "Dockerfile")
    compose, here = compose_services()
    services = compose["services"]
    volumes = {}
    for name in compose.get("volumes", {}):
        users = [
            v.split(":")[1]
            for s in services.values()
            for v in s.get("volumes", [])
            if v.split(":")[0] == name
        ]
        # A new named volume takes the image's folder at its first mount point, else root's.
        folder = image.folders.get(users[0], Folder()) if users else Folder()
        volumes[name] = make_folder(platform.base / "volumes" / name, folder)
    containers = {
        name: compose_container(
            platform.base, image, name=name, service=service, volumes=volumes, here=here
        )
        for name, service in services.items()
    }
    for name in compose_order(services):
        for other, condition in services[name].get("depends_on", {}).items():
            if condition.get("condition") == "service_healthy":
                platform.wait(
                    lambda o=other: healthy(platform, containers[o], services[o]),
                    f"{other} to be healthy",
                )
        platform.start(containers[name])
    for name, service in services.items():
        if "healthcheck" in service:
            platform.wait(
                lambda n=name, s=service: healthy(platform, containers[n], s), f"{name} healthy"
            )
    [published] = services["frontend"]["ports"]
    post_example(platform.port("frontend", int(str(published).split(":")[-1])))
    platform.check_alive()


def test_the_dockerfile_reader_follows_user_useradd_mkdir_chown(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM python:3.11-slim\n"
        "RUN useradd --create-home app \\\n"
        "    && useradd -u 2001 other && mkdir -p /data /logs && chown app:app /data\n"
        "USER app\nWORKDIR /home/app\n"
    )
    image = read_dockerfile(dockerfile)
    assert (image.uid, image.gid, image.home, image.workdir) == (
        1000,
        1000,
        "/home/app",
        "/home/app",
    )
    assert image.folders["/data"] == Folder(1000, 1000, 0o755)
    assert image.folders["/logs"] == Folder(0, 0, 0o755)
    dockerfile.write_text("FROM x\nRUN useradd -u 2001 other\nUSER 2001:3000\n")
    image = read_dockerfile(dockerfile)
    assert (image.uid, image.gid, image.home) == (2001, 3000, "/home/other")
    assert read_dockerfile(DEPLOY / "Dockerfile").folders["/run/zeroserve"].uid != 0
