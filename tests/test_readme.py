"""The README's model-author examples, served as written, answer what the README says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cluster import ROOT, Cluster

README = (ROOT / "README.md").read_text()


def example(file_name: str) -> tuple[str, dict, list[dict]]:
    """The python block that starts with `# file_name`, the JSON its curl line sends, and the
    answer lines the README shows after it."""
    blocks = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.DOTALL)
    for i, (language, text) in enumerate(blocks):
        if language == "python" and text.startswith(f"# {file_name}\n"):
            shell = blocks[i + 1][1]
            sent = json.loads(re.search(r"-d '(.*?)'", shell).group(1))
            shown = [json.loads(line[2:]) for line in shell.splitlines() if line.startswith("# ")]
            return text, sent, shown
    raise AssertionError(f"the README has no example {file_name}")


@pytest.mark.parametrize(
    ("file_name", "attr", "stream"),
    [("forecast_api.py", "ForecastAPI", False), ("countdown_model.py", "CountdownModel", True)],
)
def test_a_readme_example_answers_as_shown(
    cluster: Cluster, tmp_path: Path, file_name: str, attr: str, stream: bool
) -> None:
    source, sent, shown = example(file_name)
    path = tmp_path / file_name
    path.write_text(source)
    cluster.up(f"{path}:{attr}")
    with cluster.post(sent, stream=stream) as r:
        assert r.status_code == 200
        answers = [json.loads(line) for line in r.iter_lines() if line]
    assert answers == shown
