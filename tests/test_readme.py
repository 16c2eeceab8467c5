"""The README's model-author examples, served as written, answer what the README says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
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


def python_blocks() -> list[str]:
    return [text for language, text in re.findall(r"```(\w+)\n(.*?)```", README, re.DOTALL)
            if language == "python"]  # fmt: skip


def test_every_python_block_runs_as_written(cluster: Cluster, tmp_path: Path) -> None:
    """Each block, imports included, runs in a fresh interpreter as a module would be
    imported (a `__main__` guard stays shut); a client block runs against the built-in demo
    the README starts for it, on a free port instead of 8000."""
    blocks = python_blocks()
    assert len(blocks) >= 8
    failures = []
    for number, text in enumerate(blocks):
        block = text
        if ":8000" in block:
            if not cluster.procs:
                cluster.up("zeroserve.worker.demo:ChatAPI", worker_args=("--spec", "openai"))
            block = block.replace(":8000", f":{cluster.http_port}")
        path = tmp_path / f"block_{number}.py"
        path.write_text(block)
        run_it = f"import runpy; runpy.run_path({str(path)!r}, run_name='block')"
        run = subprocess.run(
            [sys.executable, "-c", run_it],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
        )  # fmt: skip
        if run.returncode != 0:
            failures.append(f"block {number}:\n{block}\n{run.stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)
