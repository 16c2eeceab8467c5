"""The Helm chart (deploy/helm/zeroserve) renders the objects of deploy/kubernetes.

Neither Debian nor PyPI has Helm (PyPI's `helm` is a system monitor), so the chart keeps to a
subset of Go's template syntax that the small renderer below implements, and fails on the
rest: ``{{ .Values.a.b }}``, ``{{ $.Values… }}`` and ``{{ $var }}``, ``{{- if X }}…{{- else
}}…{{- end }}``, ``{{- range $var := X }}…{{- end }}``, ``toYaml X | nindent N``, ``quote``,
and ``{{-``/``-}}`` trimming, each with Helm's meaning.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from cluster import ROOT

CHART = ROOT / "deploy" / "helm" / "zeroserve"
ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)


class TemplateError(Exception):
    pass


def tokens(text: str) -> list[tuple[str, str]]:
    """("text", …) and ("action", …) in order, with ``{{-`` and ``-}}`` trimming applied."""
    out: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for found in ACTION.finditer(text):
        before = text[pos : found.start()]
        if trim_next:
            before = before.lstrip()
        if found.group(1):
            before = before.rstrip()
        out.append(("text", before))
        out.append(("action", found.group(2)))
        pos, trim_next = found.end(), bool(found.group(3))
    rest = text[pos:]
    out.append(("text", rest.lstrip() if trim_next else rest))
    return out


def parse(items: list[tuple[str, str]], start: int = 0) -> tuple[list[Any], int, str]:
    """Nodes up to an ``else`` or ``end`` (returned with where it stopped and which)."""
    nodes: list[Any] = []
    i = start
    while i < len(items):
        kind, value = items[i]
        i += 1
        if kind == "text":
            nodes.append(value)
        elif value.startswith("/*"):
            continue
        elif value in ("end", "else"):
            return nodes, i, value
        elif value.startswith("if "):
            body, i, stop = parse(items, i)
            orelse: list[Any] = []
            if stop == "else":
                orelse, i, stop = parse(items, i)
            if stop != "end":
                raise TemplateError(f"{{{{ {value} }}}} has no end")
            nodes.append(("if", value[3:], body, orelse))
        elif value.startswith("range "):
            found = re.fullmatch(r"range (\$\w+) := (.+)", value)
            if not found:
                raise TemplateError(f"only `range $var := X` is rendered here: {value}")
            body, i, stop = parse(items, i)
            if stop != "end":
                raise TemplateError(f"{{{{ {value} }}}} has no end")
            nodes.append(("range", found.group(1), found.group(2), body))
        else:
            nodes.append(("expr", value))
    return nodes, i, "eof"


def lookup(term: str, scope: dict[str, Any]) -> Any:
    """A value: .Values.a.b, $.Values.a.b, $var(.field), a "string" or a number."""
    if term.startswith('"') and term.endswith('"'):
        return term[1:-1]
    if re.fullmatch(r"-?\d+", term):
        return int(term)
    found = re.fullmatch(r"(\$\w*|)((?:\.\w+)*)", term)
    if not found:
        raise TemplateError(f"not rendered here: {term}")
    head, path = found.groups()
    value = scope["$"] if head in ("", "$") else scope[head]
    for key in path.split(".")[1:]:
        if not isinstance(value, dict) or key not in value:
            raise TemplateError(f"{term}: no value")  # Helm would print <no value>
        value = value[key]
    return value


def to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")


def evaluate(pipeline: str, scope: dict[str, Any]) -> Any:
    first, *rest = (part.split() for part in pipeline.split("|"))
    if first[0] == "toYaml":
        value: Any = to_yaml(lookup(first[1], scope))
    elif first[0] == "not":
        value = not lookup(first[1], scope)
    elif first[0] == "quote":
        value = f'"{lookup(first[1], scope)}"'
    elif len(first) == 1:
        value = lookup(first[0], scope)
    else:
        raise TemplateError(f"not rendered here: {pipeline}")
    for command in rest:
        if command[0] == "nindent":
            pad = " " * int(command[1])
            value = "\n" + "\n".join(pad + line for line in str(value).splitlines())
        elif command == ["quote"]:
            value = f'"{value}"'
        else:
            raise TemplateError(f"not rendered here: {' '.join(command)}")
    return value


def show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise TemplateError(f"a {type(value).__name__} printed as it is: use toYaml")
    return str(value)


def execute(nodes: list[Any], scope: dict[str, Any]) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif node[0] == "expr":
            out.append(show(evaluate(node[1], scope)))
        elif node[0] == "if":
            _, condition, body, orelse = node
            out.append(execute(body if evaluate(condition, scope) else orelse, scope))
        else:
            _, name, items, body = node
            for item in evaluate(items, scope) or []:
                out.append(execute(body, {**scope, name: item}))
    return "".join(out)


def render(template: str, values: dict[str, Any]) -> str:
    nodes, _, stop = parse(tokens(template))
    if stop != "eof":
        raise TemplateError(f"an unmatched {{{{ {stop} }}}}")
    return execute(nodes, {"$": {"Values": values, "Chart": chart()}})


def chart() -> dict[str, Any]:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return {key[0].upper() + key[1:]: value for key, value in meta.items()}


def default_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def rendered(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders with `values`, as `helm template` would give them."""
    documents = []
    for template in sorted((CHART / "templates").glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(render(template.read_text(), values)) if d]
    return documents


def by_name(documents: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    named = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    assert len(named) == len(documents), "two objects of one kind and name"
    return named


def plain_manifests() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_the_chart_renders_the_plain_manifests() -> None:
    chart_objects = by_name(rendered(default_values()))
    plain = by_name(plain_manifests())
    assert sorted(chart_objects) == sorted(plain)
    for key, obj in plain.items():
        assert chart_objects[key] == obj, key


def test_values_place_pods_and_size_them() -> None:
    values = default_values()
    values["worker"]["nodeSelector"] = {"accelerator": "nvidia-l4"}
    values["worker"]["tolerations"] = [{"key": "gpu", "operator": "Exists"}]
    values["worker"]["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    values["broker"]["names"] = ["a", "b", "c"]
    values["worker"]["autoscaling"]["enabled"] = False
    values["exampleApi"] = False
    values["worker"]["api"] = "my_model:MyAPI"
    objects = by_name(rendered(values))
    worker = objects[("Deployment", "zeroserve-worker-1")]["spec"]["template"]["spec"]
    assert worker["nodeSelector"] == {"accelerator": "nvidia-l4"}
    assert worker["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    [container] = worker["containers"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert container["args"].count("--broker") == 3
    assert "my_model:MyAPI" in container["args"]
    assert all(v["name"] != "api" for v in worker["volumes"])
    assert ("Service", "zeroserve-broker-c") in objects
    assert ("HorizontalPodAutoscaler", "zeroserve-worker-1") not in objects
    assert ("ConfigMap", "zeroserve-api") not in objects
    frontend = objects[("Deployment", "zeroserve-frontend")]["spec"]["template"]["spec"]
    assert "nodeSelector" not in frontend
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version()
    for obj in objects.values():
        kubernetes_validate.validate(obj, version, strict=True)


def test_versions_are_values_each_a_deployment_with_its_replicas_image_and_weight() -> None:
    values = default_values()
    values["worker"]["service"] = "Predictor"
    values["worker"]["versions"] = [
        {"name": "2026-01", "replicas": 3, "image": "", "weight": 90, "autoscale": True},
        {"name": "2026-02", "replicas": 1, "image": "reg/zs:2", "weight": 10, "autoscale": False},
    ]
    objects = by_name(rendered(values))
    workers = {
        name: obj
        for (kind, name), obj in objects.items()
        if kind == "Deployment" and "worker" in name
    }
    assert sorted(workers) == ["zeroserve-worker-2026-01", "zeroserve-worker-2026-02"]
    selectors = []
    for label, image, replicas in (("2026-01", "zeroserve:latest", 3), ("2026-02", "reg/zs:2", 1)):
        deployment = workers[f"zeroserve-worker-{label}"]
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        assert (container["image"], deployment["spec"]["replicas"]) == (image, replicas)
        assert args[args.index("--version") + 1] == label
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        selectors.append(selector)
    # Neither Deployment's selector takes the other's pods.
    assert selectors[0]["zeroserve/version"] != selectors[1]["zeroserve/version"]
    hpas = [name for kind, name in objects if kind == "HorizontalPodAutoscaler"]
    assert hpas == ["zeroserve-worker-2026-01"]
    for name in ("zeroserve-broker-a", "zeroserve-broker-b"):
        args = objects[("Deployment", name)]["spec"]["template"]["spec"]["containers"][0]["args"]
        given = [args[i + 1] for i, a in enumerate(args) if a == "--weights"]
        assert given == ["Predictor:2026-01=90", "Predictor:2026-02=10"]


def test_the_renderer_keeps_helms_meaning_and_refuses_the_rest() -> None:
    values = {"a": {"b": 2, "m": {"k": "v"}}, "on": True, "off": False, "xs": ["p", "q"]}
    assert render("x: {{ .Values.a.b }}", values) == "x: 2"
    assert render("m:\n  {{- toYaml .Values.a.m | nindent 2 }}\n", values) == "m:\n  k: v\n"
    assert render("{{- if .Values.off }}yes{{- else }}no{{- end }}", values) == "no"
    assert render(
        "{{- range $x := .Values.xs }}\n- {{ $x }}{{ $.Values.a.b }}{{- end }}", values
    ) == ("\n- p2\n- q2")
    for broken in (
        "{{ .Values.nope }}",
        '{{ include "x" . }}',
        "{{ .Values.a.m }}",
        "{{- if .Values.on }}unclosed",
        "{{ .Values.a.b | upper }}",
    ):
        with pytest.raises(TemplateError):
            render(broken, values)


def test_a_changed_chart_differs_from_the_manifests() -> None:
    values = copy.deepcopy(default_values())
    values["frontend"]["preStopSeconds"] = 7
    chart_objects = by_name(rendered(values))
    plain = by_name(plain_manifests())
    assert (
        chart_objects[("Deployment", "zeroserve-frontend")]
        != plain[("Deployment", "zeroserve-frontend")]
    )
